"""`autohdr enhance` on real files: bad inputs, resume, overwrite, shards, dry runs, reports, exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from autohdr_cli.checkpoint import save_checkpoint
from autohdr_cli.cube import read_cube
from autohdr_cli.fastlut import apply_table, expand_lut
from autohdr_cli.imageio import TEMP_MARKER, read_photo
from autohdr_cli.models.lut import StaticLUT
from autohdr_cli.outputs import MANIFEST_FOLDER

from conftest import file_hashes, gradient, save_rgb


def _mixed_folder(root: Path) -> Path:
    """Good photos in nested folders, and every kind of bad file."""
    folder = root / "in"
    save_rgb(folder / "a.jpg", gradient(seed=1), quality=90)
    save_rgb(folder / "b.png", gradient(seed=2))
    save_rgb(folder / "sub" / "deeper" / "c.webp", gradient(seed=3))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not a png")
    buffer = io.BytesIO()
    Image.fromarray(gradient(64, 64)).save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[:300])
    (folder / "notes.txt").write_text("ignored silently")
    os.symlink(folder / "missing-target.jpg", folder / "dangling.jpg")  # unreadable: the file is gone
    return folder


def _outputs(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and MANIFEST_FOLDER not in p.parts
    )


def test_bad_files_fail_alone_and_the_batch_goes_on(tmp_path, run, look):
    source = _mixed_folder(tmp_path)
    before = file_hashes(source)
    result = run("enhance", source, tmp_path / "out", "--lut", look, "--report", tmp_path / "r.jsonl")
    assert result.exit_code == 1
    assert _outputs(tmp_path / "out") == ["a.jpg", "b.png", "sub/deeper/c.webp"]
    lines = [line for line in result.stderr.splitlines() if ": " in line and not line.startswith("done")]
    reasons = {Path(line.split(": ", 1)[0]).name: line.split(": ", 1)[1] for line in lines}
    assert reasons["empty.jpg"].startswith("empty file")
    assert reasons["text.png"].startswith("not a JPEG, PNG, TIFF or WebP image")
    assert "truncated" in reasons["truncated.jpg"]
    assert reasons["dangling.jpg"] == "no such file"
    assert "notes.txt" not in result.stderr
    assert "done 3, skipped 0, failed 4" in result.stderr
    assert file_hashes(source) == before  # inputs untouched
    assert not [p for p in tmp_path.rglob(f"*{TEMP_MARKER}*")]  # no temporary files left


def test_report_has_one_record_per_photo(tmp_path, run, look):
    source = _mixed_folder(tmp_path)
    run("enhance", source, tmp_path / "out", "--lut", look, "-q", "--report", tmp_path / "r.jsonl")
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(records) == 7
    assert set(records[0]) == {"input", "output", "status", "seconds", "megapixels", "error", "warning"}
    done = [r for r in records if r["status"] == "done"]
    assert len(done) == 3 and all(r["megapixels"] == 16 * 24 / 1e6 and r["seconds"] > 0 for r in done)
    assert {Path(r["input"]).name for r in records if r["status"] == "failed"} == {
        "empty.jpg", "text.png", "truncated.jpg", "dangling.jpg"
    }
    run("enhance", source, tmp_path / "out", "--lut", look, "-q", "--report", tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 7 and sum(r["status"] == "skipped" for r in rows) == 3


def test_all_good_exits_0_and_output_is_the_look(tmp_path, run, look):
    pixels = gradient()
    save_rgb(tmp_path / "in" / "p.png", pixels)
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look)
    assert result.exit_code == 0
    assert "done 1, skipped 0, failed 0" in result.stderr
    out = np.asarray(Image.open(tmp_path / "out" / "p.png")).astype(int)
    model = StaticLUT.from_cube(read_cube(look))
    import torch

    expected = model(torch.from_numpy(pixels / 255.0).float().permute(2, 0, 1)[None])[0]
    expected = np.round(expected.detach().permute(1, 2, 0).numpy() * 255)
    assert np.abs(out - expected).max() <= 1


def test_resume_skips_existing_and_overwrite_replaces(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "a.png")
    save_rgb(tmp_path / "in" / "b.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"previous result")
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look)
    assert result.exit_code == 0 and "done 1, skipped 1, failed 0" in result.stderr
    assert (tmp_path / "out" / "a.png").read_bytes() == b"previous result"
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--overwrite")
    assert result.exit_code == 0 and "done 2, skipped 0" in result.stderr
    assert Image.open(tmp_path / "out" / "a.png").size == (24, 16)


def test_shards_split_the_folder_without_overlap(tmp_path, run, look):
    for i in range(12):
        save_rgb(tmp_path / "in" / f"p{i:02d}.png", gradient(seed=i))
    seen = []
    for k in (1, 2, 3):
        out = tmp_path / f"out{k}"
        assert run("enhance", tmp_path / "in", out, "--lut", look, "-q", "--shard", f"{k}/3").exit_code == 0
        seen.append(set(_outputs(out)) if out.exists() else set())
    assert set().union(*seen) == {f"p{i:02d}.png" for i in range(12)}
    assert sum(len(s) for s in seen) == 12
    assert max(len(s) for s in seen) < 12  # really split
    # The same shard picks the same files every time.
    run("enhance", tmp_path / "in", tmp_path / "again", "--lut", look, "-q", "--shard", "2/3")
    assert set(_outputs(tmp_path / "again")) == seen[1] if seen[1] else not (tmp_path / "again").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "a.png")
    save_rgb(tmp_path / "in" / "sub" / "b.jpg")
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--dry-run", "--format", "webp")
    assert result.exit_code == 0
    assert f"{tmp_path / 'in' / 'a.png'} -> {tmp_path / 'out' / 'a.webp'}" in result.stdout
    assert f"{tmp_path / 'in' / 'sub' / 'b.jpg'} -> {tmp_path / 'out' / 'sub' / 'b.webp'}" in result.stdout
    assert "planned 2" in result.stderr
    assert not (tmp_path / "out").exists()


def test_format_and_suffix_and_name_collisions(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "x.png")
    save_rgb(tmp_path / "in" / "x.jpg")
    save_rgb(tmp_path / "in" / "y.tif")
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--format", "jpg", "--suffix", "_hdr")
    assert result.exit_code == 1
    assert _outputs(tmp_path / "out") == ["x_hdr.jpg", "y_hdr.jpg"]
    assert "x.png: its output x_hdr.jpg is also the output of" in result.stderr


def test_usage_errors_exit_2(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "a.png")
    cases = [
        ("enhance", tmp_path / "in", tmp_path / "in" / "out", "--lut", look),  # output inside input
        ("enhance", tmp_path / "in", tmp_path, "--lut", look),  # output contains input
        ("enhance", tmp_path / "missing", tmp_path / "out", "--lut", look),
        ("enhance", tmp_path / "in", tmp_path / "out"),  # no model yet
        ("enhance", tmp_path / "in", tmp_path / "out", "--lut", tmp_path / "nope.cube"),
        ("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--shard", "4/3"),
        ("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--format", "gif"),
        ("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--report", tmp_path / "r.txt"),
        ("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--device", "cuda:7"),
        ("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--weights", look),
        ("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--precision", "half"),
        ("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--precision", "bf16"),  # CUDA only
        ("enhance", tmp_path / "in", tmp_path / "out", "--model", "lut", "--device", "cpu", "--precision", "fp16"),
    ]
    env_weights = os.environ.get("AUTOHDR_WEIGHTS")
    for args in cases:
        if args == ("enhance", tmp_path / "in", tmp_path / "out") and env_weights is None:
            from autohdr_cli.checkpoint import default_weights_path

            if default_weights_path("lut").exists():
                continue  # a default model ships: this is no longer an error
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("autohdr: error: "), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()
    assert run("enhance", tmp_path / "in").exit_code == 2  # missing argument (Typer's usage error)


def test_weights_checkpoint_gives_the_same_result_as_the_cube(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "p.png")
    weights = tmp_path / "look.safetensors"
    save_checkpoint(weights, StaticLUT.from_cube(read_cube(look)))
    assert run("enhance", tmp_path / "in", tmp_path / "a", "--lut", look, "-q").exit_code == 0
    assert run("enhance", tmp_path / "in", tmp_path / "b", "--weights", weights, "-q").exit_code == 0
    assert (tmp_path / "a" / "p.png").read_bytes() == (tmp_path / "b" / "p.png").read_bytes()


def test_strength_zero_keeps_the_pixels(tmp_path, run, look):
    pixels = gradient()
    save_rgb(tmp_path / "in" / "p.png", pixels)
    assert run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "-q", "--strength", "0").exit_code == 0
    assert (np.asarray(Image.open(tmp_path / "out" / "p.png")) == pixels).all()


def test_single_file_input(tmp_path, run, look):
    save_rgb(tmp_path / "one.jpg")
    assert run("enhance", tmp_path / "one.jpg", tmp_path / "out", "--lut", look, "-q").exit_code == 0
    assert _outputs(tmp_path / "out") == ["one.jpg"]


def test_ctrl_c_keeps_finished_files_and_leaves_no_temporaries(tmp_path, look):
    for i in range(40):
        save_rgb(tmp_path / "in" / f"p{i:02d}.png", np.tile(gradient(seed=i), (20, 20, 1)))
    process = subprocess.Popen(
        [sys.executable, "-m", "autohdr_cli", "enhance", str(tmp_path / "in"), str(tmp_path / "out"),
         "--lut", str(look), "--workers", "1"],
        stderr=subprocess.PIPE, text=True,
    )
    import signal
    import time

    deadline = time.time() + 60
    while time.time() < deadline and not ((tmp_path / "out").exists() and any((tmp_path / "out").iterdir())):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    written = [p for p in (tmp_path / "out").iterdir() if p.name != MANIFEST_FOLDER]
    assert written and all(TEMP_MARKER not in p.name for p in written)
    for path in written:
        Image.open(path).load()  # every file left is a whole photo
    # The summary counts every photo that was written, and the manifest records each of them.
    assert f"interrupted: done {len(written)}," in stderr
    rerun = subprocess.run(
        [sys.executable, "-m", "autohdr_cli", "enhance", str(tmp_path / "in"), str(tmp_path / "out"), "--lut", str(look)],
        stderr=subprocess.PIPE, text=True, timeout=300,
    )
    assert rerun.returncode == 0 and f"skipped {len(written)}, failed 0" in rerun.stderr
    assert "no record" not in rerun.stderr


def test_style_picks_and_blends_the_looks_of_a_nilut(tmp_path, run):
    import torch

    from autohdr_cli.models import build

    model = build("nilut", {"num_styles": 2, "style_names": ["soft", "bold"], "grid_size": 9})
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    weights = tmp_path / "two-looks.safetensors"
    save_checkpoint(weights, model)
    save_rgb(tmp_path / "in" / "p.png")
    outputs = {}
    for style in ("soft", "bold", "0.5,0.5", "1", "1,0"):
        assert run("enhance", tmp_path / "in", tmp_path / style, "-w", weights, "--style", style, "-q").exit_code == 0
        outputs[style] = np.asarray(Image.open(tmp_path / style / "p.png")).astype(int)
    assert (outputs["soft"] != outputs["bold"]).any()
    assert (outputs["bold"] == outputs["1"]).all()  # a look by index
    assert (outputs["soft"] == outputs["1,0"]).all()  # a look by weights
    # A blend is a look of its own, neither of the two it mixes.
    assert (outputs["0.5,0.5"] != outputs["soft"]).any() and (outputs["0.5,0.5"] != outputs["bold"]).any()
    bad = run("enhance", tmp_path / "in", tmp_path / "x", "-w", weights, "--style", "loud")
    assert bad.exit_code == 2 and "no such look" in bad.stderr


def test_a_cube_run_never_imports_torch(tmp_path, look):
    # Importing torch costs seconds of start-up; a .cube look does not need it.
    save_rgb(tmp_path / "in" / "p.jpg")
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from autohdr_cli.cli import app\n"
        f"result = CliRunner().invoke(app, ['enhance', {str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r},"
        f" '--lut', {str(look)!r}, '-q'])\n"
        "print(result.exit_code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "False"]
    assert (tmp_path / "out" / "p.jpg").exists()


def test_many_photos_through_shared_buffers_equal_one_at_a_time(tmp_path, run, look):
    # Decoded and enhanced pixels live in pooled buffers that are handed on from photo to photo;
    # with photos of several sizes, formats and orientations in flight at once, each output must
    # still be exactly its own photo's lookup.
    rotated = Image.Exif()
    rotated[0x0112] = 6
    for i in range(9):
        pixels = gradient(20 + 7 * (i % 4), 30 + 5 * (i % 3), seed=i)
        name = f"p{i}.png" if i % 2 else f"p{i}.jpg"
        options = {"exif": rotated.tobytes()} if i % 3 == 0 else {}
        save_rgb(tmp_path / "in" / name, pixels, **options)
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "-q", "--format", "png", "--workers", "2")
    assert result.exit_code == 0
    table = expand_lut(read_cube(look).table.transpose(3, 0, 1, 2))
    for source in sorted((tmp_path / "in").iterdir()):
        expected = apply_table(np.ascontiguousarray(read_photo(source).pixels), table)
        output = read_photo(tmp_path / "out" / f"{source.stem}.png").pixels
        assert np.array_equal(output, expected), source.name


def test_half_strength_cube_matches_the_model_path(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "p.png", gradient(24, 32))
    weights = tmp_path / "look.safetensors"
    save_checkpoint(weights, StaticLUT.from_cube(read_cube(look)))
    for name, option in (("cube", "--lut"), ("model", "--weights")):
        source = look if name == "cube" else weights
        assert run("enhance", tmp_path / "in", tmp_path / name, option, source, "-q", "--strength", "0.5").exit_code == 0
    assert run("enhance", tmp_path / "in", tmp_path / "full", "--lut", look, "-q").exit_code == 0
    half, model, full = (read_photo(tmp_path / n / "p.png").pixels.astype(int) for n in ("cube", "model", "full"))
    original = gradient(24, 32).astype(int)
    assert np.abs(half - model).max() <= 1
    assert np.abs(half - (original + full) / 2).max() <= 1.5
    assert np.abs(half - full).mean() > 1
