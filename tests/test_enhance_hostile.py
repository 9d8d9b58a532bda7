"""`autohdr enhance` against hostile files, names and options: nothing escapes, nothing hangs or explodes,
every problem is one line, reruns are never stale, metadata travels. Real files in tmp_path; memory and
hang guards in a subprocess (``RLIMIT_AS`` and a timeout)."""

from __future__ import annotations

import io
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autohdr_cli.imageio import TEMP_MARKER, read_photo
from autohdr_cli.outputs import MANIFEST_FOLDER

from conftest import file_hashes, gradient, save_rgb
from hostile import (
    huge_png,
    huge_tiff,
    jpeg_declaring,
    jpeg_with_second_frame,
    multipage_tiff,
    png_chunk,
    webp_declaring,
)

MEMORY_LIMIT = 1 << 30  # 1 GiB of address space: a decoded 500 MP photo needs 1.5-3 GB


def enhance_limited(*args, memory: int = MEMORY_LIMIT, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``autohdr enhance ARGS`` in a subprocess with bounded address space and time."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = dict(os.environ, MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "autohdr_cli", "enhance", *map(str, args), "--workers", "2"],
        preexec_fn=limit, capture_output=True, text=True, timeout=timeout, env=env,
    )


def _no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and "Error:" not in stderr.replace("autohdr: error:", ""), stderr


def _reasons(stderr: str) -> dict[str, str]:
    """``{file name: reason}`` from the ``path: reason`` lines of a run."""
    lines = [line for line in stderr.splitlines() if not line.startswith(("done", "autohdr:", "interrupted"))]
    return {Path(line.split(": ", 1)[0]).name: line.split(": ", 1)[1] for line in lines if ": " in line}


def _outputs(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and MANIFEST_FOLDER not in p.parts
    )


# ------------------------------------------------------------------------------ 1. output paths never escape


@pytest.mark.parametrize("suffix", ["/../../in/a", "/x", "..", "a\\b", "a\x00b", "a\nb"])
def test_a_suffix_that_names_another_folder_is_a_usage_error(tmp_path, run, look, suffix):
    save_rgb(tmp_path / "in" / "a.png")
    before = file_hashes(tmp_path / "in")
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--suffix", suffix, "--overwrite")
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("autohdr: error: --suffix")
    assert file_hashes(tmp_path / "in") == before and not (tmp_path / "out").exists()


def test_a_symlinked_output_subfolder_into_the_input_is_never_written_through(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "sub" / "a.png", gradient(seed=1))
    save_rgb(tmp_path / "in" / "b.png", gradient(seed=2))
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path / "in" / "sub", tmp_path / "out" / "sub")
    before = file_hashes(tmp_path / "in")
    for options in (["--dry-run"], [], ["--overwrite"]):
        result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, *options)
        assert result.exit_code == 1, options
        _no_traceback(result.stderr)
        assert "symlink" in _reasons(result.stderr)["a.png"], options
    assert file_hashes(tmp_path / "in") == before  # the input photo behind the symlink is untouched
    assert (tmp_path / "out" / "b.png").is_file()
    assert not list((tmp_path / "in").rglob(f"*{TEMP_MARKER}*"))  # no temporary file went there either


def test_an_existing_output_that_is_a_symlink_to_an_input_is_replaced_not_written_through(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path / "in" / "a.png", tmp_path / "out" / "a.png")
    before = file_hashes(tmp_path / "in")
    assert run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--overwrite").exit_code == 0
    assert file_hashes(tmp_path / "in") == before
    assert not (tmp_path / "out" / "a.png").is_symlink()
    # Without --overwrite it is an output with no record: kept, and said so.
    os.unlink(tmp_path / "out" / "a.png")
    os.symlink(tmp_path / "in" / "a.png", tmp_path / "out" / "a.png")
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look)
    assert result.exit_code == 0 and "no record" in result.stderr and file_hashes(tmp_path / "in") == before


def test_an_output_folder_reached_through_a_symlink_into_the_input_is_refused(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "a.png")
    os.symlink(tmp_path / "in", tmp_path / "sneaky")
    result = run("enhance", tmp_path / "in", tmp_path / "sneaky" / "out", "--lut", look)
    assert result.exit_code == 2 and "inside the input folder" in result.stderr


def test_a_symlinked_manifest_folder_is_a_usage_error(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out" / MANIFEST_FOLDER)
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look)
    assert result.exit_code == 2 and MANIFEST_FOLDER in result.stderr and len(result.stderr.splitlines()) == 1
    assert not list((tmp_path / "elsewhere").iterdir())


def test_stale_temporaries_of_dead_runs_are_removed_and_live_ones_kept(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = out / f"{TEMP_MARKER}{dead.pid}-0123abcd@{host}@a.png"
        live = out / f"{TEMP_MARKER}{alive.pid}-0123abcd@{host}@b.png"
        elsewhere = out / f"{TEMP_MARKER}{dead.pid}-0123abcd@another-host@c.png"
        for path in (stale, live, elsewhere):
            path.write_bytes(b"half a photo")
        assert run("enhance", tmp_path / "in", out, "--lut", look, "-q").exit_code == 0
        assert not stale.exists() and live.exists() and elsewhere.exists()
    finally:
        alive.kill()
        alive.wait()


# ------------------------------------------------------------------------------------- 2. bounded resources


def test_small_files_declaring_500_megapixels_are_refused_before_decoding(tmp_path, look):
    folder = tmp_path / "in"
    folder.mkdir()
    huge_png(folder / "deep.png", 22400, 22400, depth=16, data_mb=2)
    huge_tiff(folder / "tiled.tif", 22400, 22400, tiled=True)
    huge_tiff(folder / "striped.tif", 22400, 22400, tiled=False, compression=None)
    jpeg_declaring(folder / "big.jpg", 30000, 17000)
    save_rgb(folder / "fine.jpg")
    assert max(p.stat().st_size for p in folder.iterdir()) < 8_000_000
    started = time.perf_counter()
    result = enhance_limited(folder, tmp_path / "out", "--lut", look)
    assert time.perf_counter() - started < 30
    _no_traceback(result.stderr)
    assert result.returncode == 1
    reasons = _reasons(result.stderr)
    for name in ("deep.png", "tiled.tif", "striped.tif", "big.jpg"):
        assert "too many pixels" in reasons[name] and "over the --max-megapixels limit of 400" in reasons[name]
    assert "501.8 MP" in reasons["deep.png"]
    assert _outputs(tmp_path / "out") == ["fine.jpg"]


def test_the_limit_is_exact_and_configurable(tmp_path, look):
    (tmp_path / "a").mkdir()
    huge_png(tmp_path / "a" / "p441.png", 21000, 21000, depth=8, data_mb=1)
    result = enhance_limited(tmp_path / "a", tmp_path / "out", "--lut", look)
    assert "21000 x 21000 = 441.0 MP, over the --max-megapixels limit of 400" in _reasons(result.stderr)["p441.png"]
    (tmp_path / "b").mkdir()
    webp_declaring(tmp_path / "b" / "w.webp", 16000, 16000)  # 256 MP
    result = enhance_limited(tmp_path / "b", tmp_path / "out2", "--lut", look, "--max-megapixels", "100")
    assert "256.0 MP, over the --max-megapixels limit of 100" in _reasons(result.stderr)["w.webp"]


def test_a_header_that_lies_after_the_first_frame_is_refused(tmp_path, look):
    folder = tmp_path / "in"
    folder.mkdir()
    jpeg_with_second_frame(folder / "liar.jpg", 20000, 20000)
    result = enhance_limited(folder, tmp_path / "out", "--lut", look)
    _no_traceback(result.stderr)
    assert result.returncode == 1
    assert "inconsistent header" in _reasons(result.stderr)["liar.jpg"]


def test_only_the_first_page_of_a_multipage_tiff_counts(tmp_path, look):
    (tmp_path / "in").mkdir()
    path = multipage_tiff(tmp_path / "in" / "pages.tif", [(24, 16), (4000, 3000)])
    assert read_photo(path).pixels.shape == (16, 24, 3)
    result = enhance_limited(tmp_path / "in", tmp_path / "out", "--lut", look, "--max-megapixels", "1")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("as_argument", [False, True])
def test_a_fifo_named_like_a_photo_is_reported_and_never_opened(tmp_path, look, as_argument):
    save_rgb(tmp_path / "in" / "a.jpg")
    os.mkfifo(tmp_path / "in" / "x.jpg")
    source = tmp_path / "in" / "x.jpg" if as_argument else tmp_path / "in"
    result = enhance_limited(source, tmp_path / "out", "--lut", look, timeout=60)
    _no_traceback(result.stderr)
    assert result.returncode == 1
    assert _reasons(result.stderr)["x.jpg"] == "is a FIFO, not a photo file: skipped, never opened"
    assert ("a.jpg" in _outputs(tmp_path / "out")) != as_argument


def test_a_socket_named_like_a_photo_is_reported(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "a.jpg")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "in" / "s.png"))
        result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look)
    finally:
        server.close()
    assert result.exit_code == 1 and "is a socket" in _reasons(result.stderr)["s.png"]


# ----------------------------------------------------------------------------- 3. one line, never a traceback


def test_names_that_are_not_utf8_work_in_listing_shards_reports_and_messages(tmp_path, look):
    folder = tmp_path / "in"
    save_rgb(folder / "plain.png")
    raw = os.fsencode(folder) + b"/caf\xe9.png"
    with open(raw, "wb") as f:
        f.write((folder / "plain.png").read_bytes())
    with open(os.fsencode(folder) + b"/bad\xff.jpg", "wb") as f:
        f.write(b"not a photo")
    for shard, report in (("1/1", "r.jsonl"), ("1/1", "r.csv"), ("1/2", "h.csv"), ("2/2", "h.jsonl")):
        out = tmp_path / f"out-{shard.replace('/', '-')}"
        result = enhance_limited(folder, out, "--lut", look, "--shard", shard, "--report", tmp_path / report)
        _no_traceback(result.stderr)
        assert result.returncode in (0, 1)
        text = (tmp_path / report).read_text(encoding="utf-8")
        if report.endswith(".jsonl"):
            text = " ".join(json.loads(line)["input"] for line in text.splitlines())
        if shard == "1/1":
            assert result.returncode == 1 and "bad\\xff.jpg: not a JPEG" in result.stderr
            assert "caf\\xe9.png" in text
            assert os.path.exists(os.fsencode(out) + b"/caf\xe9.png")  # the output keeps the real name
    # Both halves together are the whole folder, each file once.
    halves = [set(_outputs(tmp_path / name)) for name in ("out-1-2", "out-2-2")]
    assert len(halves[0] | halves[1]) == 2 and not halves[0] & halves[1]


def test_a_report_that_fails_mid_run_is_one_line_and_exit_1_and_the_batch_finishes(tmp_path, look):
    folder = tmp_path / "in"
    for i in range(20):
        save_rgb(folder / f"photo-with-a-rather-long-name-{i:02d}.png", gradient(seed=i))
    size = 4096  # the report passes this after a dozen records; photos and the manifest stay below it

    def limit() -> None:
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    result = subprocess.run(
        [sys.executable, "-m", "autohdr_cli", "enhance", str(folder), str(tmp_path / "out"), "--lut", str(look),
         "--report", str(tmp_path / "r.jsonl")],
        preexec_fn=limit, capture_output=True, text=True, timeout=120,
    )
    _no_traceback(result.stderr)
    assert result.returncode == 1
    assert "done 20, skipped 0, failed 0" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("autohdr: error:")]
    assert len(errors) == 1 and "--report" in errors[0] and "cannot write" in errors[0]
    assert len(_outputs(tmp_path / "out")) == 20


def test_a_report_on_a_full_disk_from_the_start(tmp_path, run, look):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    save_rgb(tmp_path / "in" / "a.png")
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--report", "/dev/full/../full.csv")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1  # cannot be created: nothing was done
    os.symlink("/dev/full", tmp_path / "full.jsonl")
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--report", tmp_path / "full.jsonl")
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    assert (tmp_path / "out" / "a.png").is_file()


COMMANDS_AND_BAD_ARGUMENTS = [
    ["enhance", "in", "out", "--no-such-option"],
    ["enhance"],
    ["enhance", "in", "out", "--quality", "lots"],
    ["enhance", "in", "out", "--max-megapixels", "-3"],
    ["train", "pairs", "-o", "x.safetensors", "--steps", "many"],
    ["train", "pairs"],
    ["evaluate", "--bogus"],
    ["export", "w.safetensors"],
    ["info"],
    ["info", "a", "b"],
    ["no-such-command"],
    ["--no-such-global-option"],
]


@pytest.mark.parametrize("arguments", COMMANDS_AND_BAD_ARGUMENTS, ids=" ".join)
def test_typer_usage_errors_are_one_line_and_exit_2(run, arguments):
    result = run(*arguments)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("autohdr: error: "), result.stderr


# ------------------------------------------------------------------------------------ 4. reruns are never stale


def _other_look(tmp_path: Path) -> Path:
    from autohdr_cli.cube import CubeLUT, identity_table, write_cube

    path = tmp_path / "cool.cube"
    table = identity_table(5)
    table[..., 2] = np.clip(table[..., 2] * 1.2, 0, 1)
    write_cube(path, CubeLUT(table.astype(np.float32), "cool"))
    return path


def test_a_rerun_with_another_look_or_options_stops_instead_of_skipping(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "a.jpg", gradient(seed=1))
    save_rgb(tmp_path / "in" / "b.png", gradient(seed=2))
    out = tmp_path / "out"
    assert run("enhance", tmp_path / "in", out, "--lut", look).exit_code == 0
    made = file_hashes(out)
    again = run("enhance", tmp_path / "in", out, "--lut", look)
    assert again.exit_code == 0 and "done 0, skipped 2" in again.stderr
    for extra in (["--lut", _other_look(tmp_path)], ["--lut", look, "--strength", "0.5"],
                  ["--lut", look, "--strip-metadata"], ["--lut", look, "--quality", "80"]):
        result = run("enhance", tmp_path / "in", out, *extra)
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, extra
        assert "made differently" in result.stderr and "--overwrite" in result.stderr
        assert file_hashes(out) == made  # nothing was written
    assert "strength 1.0 -> 0.5" in run("enhance", tmp_path / "in", out, "--lut", look, "--strength", "0.5").stderr
    redo = run("enhance", tmp_path / "in", out, "--lut", _other_look(tmp_path), "--overwrite")
    assert redo.exit_code == 0 and "done 2" in redo.stderr
    assert run("enhance", tmp_path / "in", out, "--lut", _other_look(tmp_path)).exit_code == 0
    assert run("enhance", tmp_path / "in", out, "--lut", look).exit_code == 2  # the first look is stale now


def test_concurrent_shards_share_one_output_folder_and_its_manifest(tmp_path, look):
    for i in range(12):
        save_rgb(tmp_path / "in" / f"p{i:02d}.png", gradient(seed=i))
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    shards = [
        subprocess.Popen(
            [sys.executable, "-m", "autohdr_cli", "enhance", str(tmp_path / "in"), str(out), "--lut", str(look),
             "--shard", f"{k}/3", "-q"], env=env, stderr=subprocess.PIPE, text=True,
        )
        for k in (1, 2, 3)
    ]
    assert [p.wait(timeout=120) for p in shards] == [0, 0, 0]
    assert len(list((out / MANIFEST_FOLDER).glob("shard-*-of-3.jsonl"))) == 3
    assert len(_outputs(out)) == 12
    rerun = subprocess.run(
        [sys.executable, "-m", "autohdr_cli", "enhance", str(tmp_path / "in"), str(out), "--lut", str(look)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert rerun.returncode == 0 and "done 0, skipped 12" in rerun.stderr and "no record" not in rerun.stderr


def test_a_torn_manifest_line_is_ignored(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    assert run("enhance", tmp_path / "in", out, "--lut", look).exit_code == 0
    manifest = out / MANIFEST_FOLDER / "all.jsonl"
    with manifest.open("a") as f:
        f.write('{"output": "a.png", "rec')  # a crash in the middle of a record
    result = run("enhance", tmp_path / "in", out, "--lut", look)
    assert result.exit_code == 0 and "skipped 1" in result.stderr


def test_unread_photo_files_and_symlinked_folders_are_named(tmp_path, run, look):
    save_rgb(tmp_path / "in" / "a.jpg")
    for name in ("b.CR2", "c.nef", "d.arw", "e.dng", "f.heic", "g.HEIF"):
        (tmp_path / "in" / name).write_bytes(b"raw sensor data")
    save_rgb(tmp_path / "elsewhere" / "x.jpg")
    os.symlink(tmp_path / "elsewhere", tmp_path / "in" / "linked")
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look)
    assert result.exit_code == 0
    notes = [line for line in result.stderr.splitlines() if line.startswith("autohdr: note:")]
    assert any("not read: 6:" in line and "b.CR2" in line and "g.HEIF" in line for line in notes), notes
    assert any("not followed: 1:" in line and "linked" in line for line in notes), notes
    assert _outputs(tmp_path / "out") == ["a.jpg"]


def test_zero_photos_is_a_warning_with_exit_3_but_an_empty_shard_is_not(tmp_path, run, look):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    result = run("enhance", tmp_path / "empty", tmp_path / "out", "--lut", look)
    assert result.exit_code == 3 and "autohdr: warning: no JPEG, PNG, TIFF or WebP photos" in result.stderr
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.cr2").write_bytes(b"raw")
    result = run("enhance", tmp_path / "raw", tmp_path / "out", "--lut", look)
    assert result.exit_code == 3 and "a.cr2" in result.stderr
    save_rgb(tmp_path / "one" / "a.png")
    codes = {run("enhance", tmp_path / "one", tmp_path / f"o{k}", "--lut", look, "--shard", f"{k}/2").exit_code
             for k in (1, 2)}
    assert codes == {0}  # one shard got the photo, the other nothing: both fine


@pytest.mark.parametrize("shard", ["", "1/", "/2", "0/2", "3/2", "١/٢", "1/２", "1/2/3", "a/b"])
def test_bad_shards_are_usage_errors(tmp_path, run, look, shard):
    save_rgb(tmp_path / "in" / "a.png")
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--shard", shard)
    assert result.exit_code == 2 and result.stderr.startswith("autohdr: error: --shard")


# ------------------------------------------------------------------------------------------------ 5. metadata

XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>autohdr-test-xmp</rdf:RDF></x:xmpmeta>'
IPTC = b"\x1c\x02\x00\x00\x02\x00\x04\x1c\x02\x78\x00\x0bhello iptc!"


def _jpeg_with_all_metadata(path: Path) -> Path:
    """A JPEG holding EXIF, ICC, XMP (APP1) and IPTC (APP13 Photoshop resource 0x0404)."""
    from PIL import ImageCms

    exif = Image.Exif()
    exif[0x010F] = "autohdr-test-camera"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    Image.fromarray(gradient()).save(buffer, "JPEG", quality=95, exif=exif.tobytes(), icc_profile=icc, xmp=XMP)
    data = buffer.getvalue()
    resource_block = b"8BIM" + struct.pack(">HHI", 0x0404, 0, len(IPTC)) + IPTC + b"\x00" * (len(IPTC) & 1)
    payload = b"Photoshop 3.0\x00" + resource_block
    segment = b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:2] + segment + data[2:])
    return path


@pytest.mark.parametrize("fmt", ["jpg", "png", "tiff", "webp"])
def test_xmp_and_iptc_travel_like_exif_and_icc(tmp_path, run, look, fmt):
    _jpeg_with_all_metadata(tmp_path / "in" / "a.jpg")
    assert run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--format", fmt).exit_code == 0
    written = next(p for p in (tmp_path / "out").iterdir() if p.is_file())
    photo = read_photo(written)
    assert photo.xmp == XMP and photo.icc
    assert (photo.iptc == IPTC) if fmt in ("jpg", "tiff") else photo.iptc is None  # PNG/WebP have no IPTC
    if fmt != "tiff":
        assert b"autohdr-test-camera" in (photo.exif or b"")
    assert run("enhance", tmp_path / "in", tmp_path / "bare", "--lut", look, "--format", fmt,
               "--strip-metadata").exit_code == 0
    bare = read_photo(next(p for p in (tmp_path / "bare").iterdir() if p.is_file()))
    assert (bare.xmp, bare.iptc, bare.exif, bare.icc) == (None, None, None, None)
    assert XMP not in next(p for p in (tmp_path / "bare").iterdir() if p.is_file()).read_bytes()


def test_xmp_of_a_16bit_png_and_a_tiff_are_read(tmp_path, run, look):
    import tifffile

    pixels = (np.arange(16 * 24 * 3, dtype=np.uint16).reshape(16, 24, 3) * 50)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "t.tif", pixels, photometric="rgb",
                     extratags=[(700, 1, len(XMP), XMP, True)], metadata=None)
    assert run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--format", "png").exit_code == 0
    photo = read_photo(tmp_path / "out" / "t.png")
    assert photo.pixels.dtype == np.uint16 and photo.xmp == XMP


def test_an_exif_block_too_big_for_jpeg_is_dropped_with_a_warning(tmp_path, run, look):
    exif = Image.Exif()
    exif[0x010E] = "x" * 70_000  # ImageDescription: the block is over JPEG's 64 KB segment
    buffer = io.BytesIO()
    Image.fromarray(gradient()).save(buffer, "PNG", exif=exif.tobytes())
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big.png").write_bytes(buffer.getvalue())
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look, "--format", "jpg",
                 "--report", tmp_path / "r.jsonl")
    assert result.exit_code == 0
    warning = _reasons(result.stderr)["big.png"]
    assert warning.startswith("warning: EXIF block of") and "dropped" in warning
    assert read_photo(tmp_path / "out" / "big.jpg").exif is None
    record = json.loads((tmp_path / "r.jsonl").read_text())
    assert record["status"] == "done" and "EXIF" in record["warning"]


def test_an_xmp_itxt_chunk_in_an_8bit_png_is_carried(tmp_path, run, look):
    buffer = io.BytesIO()
    Image.fromarray(gradient()).save(buffer, "PNG")
    data = buffer.getvalue()
    chunk = png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + XMP)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.png").write_bytes(data[:33] + chunk + data[33:])
    assert run("enhance", tmp_path / "in", tmp_path / "out", "--lut", look).exit_code == 0
    assert read_photo(tmp_path / "out" / "x.png").xmp == XMP
