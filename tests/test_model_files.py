"""Hostile and damaged model files (checkpoints, ``.cube`` looks, pairs folders) and shared options:
one line ``autohdr: error: FILE: reason`` and exit 2 in every command, in bounded memory and time."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save

from autohdr_cli.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from autohdr_cli.cube import CubeError, read_cube
from autohdr_cli.models import build, make_config

from conftest import save_rgb

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_LUT = {"lut_size": 5, "num_basis": 2, "thumbnail_size": 16, "widths": [4], "hidden": 8, "histogram_bins": 4}
ROOT = Path(__file__).resolve().parents[1]


def split_file(data: bytes) -> tuple[dict, bytes]:
    """A safetensors file's header (as a dict) and its data section."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def join_file(header, body: bytes) -> bytes:
    """Bytes of a safetensors file from a header (dict, or raw bytes) and a data section."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


def with_metadata(data: bytes, **changes: str) -> bytes:
    header, body = split_file(data)
    header["__metadata__"].update(changes)
    return join_file(header, body)


def with_config(data: bytes, **changes) -> bytes:
    header, _ = split_file(data)
    config = json.loads(header["__metadata__"]["autohdr.config"])
    config.update(changes)
    return with_metadata(data, **{"autohdr.config": json.dumps(config)})


def with_first_value(data: bytes, value: float) -> bytes:
    """The file with the first float of its first tensor replaced."""
    header, body = split_file(data)
    first = min((v for k, v in header.items() if k != "__metadata__"), key=lambda v: v["data_offsets"][0])
    start = first["data_offsets"][0]
    body = body[:start] + np.float32(value).tobytes() + body[start + 4 :]
    return join_file(header, body)


def with_tensor(data: bytes, key: str, **changes) -> bytes:
    header, body = split_file(data)
    header[key].update(changes)
    return join_file(header, body)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    """The bytes of a real (tiny) image-adaptive LUT checkpoint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("good") / "lut.safetensors"
    save_checkpoint(path, build("lut", TINY_LUT), training={"steps": 3})
    return path.read_bytes()


def hostile_files(good: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, what the error must say)."""
    header, body = split_file(good)
    first = sorted(k for k in header if k != "__metadata__")[0]
    other = build("lut", {**TINY_LUT, "lut_size": 9})
    metadata = header["__metadata__"]
    tensors = {k: torch.zeros(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    return {
        "header is a JSON list": (join_file(b"[1, 2, 3]", body), "header is a JSON list, not an object"),
        "header is not JSON": (join_file(b"{not json", body), "header is not JSON"),
        "header nested deeply": (join_file(b"[" * 100_000 + b"]" * 100_000, b""), "nested too deeply"),
        "huge header length": ((2**60).to_bytes(8, "little") + b"{}", "bad header length"),
        "too short": (b"abc", "too short"),
        "metadata is a list": (join_file({**header, "__metadata__": ["x"]}, body), "__metadata__ must be an object of strings"),
        "metadata value not a string": (join_file({**header, "__metadata__": {"autohdr.model": 5}}, body),
                                        "__metadata__ must be an object of strings"),
        "unknown dtype": (with_tensor(good, first, dtype="Q9"), "dtype 'Q9' is not one autohdr reads"),
        "dtype of another size": (with_tensor(good, first, dtype="F64"), "bytes for shape"),
        "integer dtype": (with_tensor(good, first, dtype="I32"), "is I32, but the model needs torch.float32"),
        "shape is not a list": (with_tensor(good, first, shape="big"), "bad shape"),
        "negative offsets": (with_tensor(good, first, data_offsets=[-4, 0]), "bad data_offsets"),
        "truncated": (good[: len(good) - 100], "truncated"),
        "trailing bytes": (good + b"\0" * 64, "has bytes no tensor owns"),
        "no autohdr metadata": (save({"w": torch.zeros(3)}), "not an autohdr checkpoint"),
        "unknown model": (with_metadata(good, **{"autohdr.model": "no-such-model"}), "model 'no-such-model' is unknown"),
        "config is a list": (with_metadata(good, **{"autohdr.config": "[1, 2]"}), "autohdr.config is a JSON list"),
        "config nested deeply": (with_metadata(good, **{"autohdr.config": "[" * 50_000 + "]" * 50_000}), "nested too deeply"),
        "training is a string": (with_metadata(good, **{"autohdr.training": '"x"'}), "autohdr.training is a JSON str"),
        "unknown config key": (with_config(good, colour="red"), "unknown config key(s) for model 'lut': colour"),
        "config value of another type": (with_config(good, lut_size="5"), "lut_size must be a whole number"),
        "config NaN": (with_metadata(good, **{"autohdr.config": '{"dropout": NaN}'}), "dropout must be a finite number"),
        "negative size": (with_config(good, hidden=-8), "hidden -8 is outside 0..1.04858e+06"),
        "huge thumbnail (run-time memory)": (with_config(good, thumbnail_size=60000), "thumbnail_size 60000 is outside 1..1024"),
        "nafnet with a huge width": (with_metadata(good, **{"autohdr.model": "nafnet", "autohdr.config": '{"width": 100000}'}),
                                     "config builds over 500,000,000 values"),
        "config of other sizes": (with_config(good, lut_size=9), "has shape [2, 3, 5, 5, 5], but model 'lut'"),
        "many blocks, few tensors": (with_metadata(good, **{"autohdr.model": "nafnet", "autohdr.config": '{"middle_blocks": 100000}'}),
                                     "config builds more tensors than the file holds"),
        "a gap in the data": (join_file({k: v for k, v in header.items() if k != first}, body), "data starts at byte"),
        "a tensor missing": (save({k: v for k, v in tensors.items() if k != first}, metadata=metadata),
                             f"tensors do not match model 'lut' with config"),
        "a tensor too many": (save({**tensors, "extra": torch.zeros(2)}, metadata=metadata), "unexpected extra"),
        "tensors of another model": (save(dict(other.state_dict()), metadata=metadata), "needs [2, 3, 5, 5, 5]"),
        "NaN weight": (with_first_value(good, float("nan")), "holds values that are not finite"),
        "infinite weight": (with_first_value(good, float("inf")), "holds values that are not finite"),
    }


def test_hostile_checkpoints_are_refused_with_one_line_in_every_command(tmp_path, good, run):
    save_rgb(tmp_path / "in" / "p.png")
    (tmp_path / "pairs").mkdir()
    for name, (data, message) in hostile_files(good).items():
        path = tmp_path / (name.replace(" ", "-") + ".safetensors")
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(path)
        assert str(error.value).startswith(f"{path}: "), name
        assert message in str(error.value), (name, str(error.value))
        assert "\n" not in str(error.value), name
        commands = [
            ("info", path),
            ("enhance", tmp_path / "in", tmp_path / "out", "--weights", path, "--quiet"),
            ("export", path, "-o", tmp_path / "x.cube"),
            ("evaluate", tmp_path / "pairs", "--weights", path),
            ("train", tmp_path / "pairs", "-o", path, "--resume", path, "--steps", "1", "--quiet"),
        ]
        for args in commands:
            result = run(*args)
            assert result.exit_code == 2, (name, args[0], result.output)
            assert result.stderr.strip().splitlines() == [f"autohdr: error: {error.value}"], (name, args[0])
        assert not (tmp_path / "out").exists() and not (tmp_path / "x.cube").exists()


def test_good_checkpoint_still_loads_and_keeps_its_metadata(tmp_path, good):
    path = tmp_path / "good.safetensors"
    path.write_bytes(good)
    checkpoint = load_checkpoint(path)
    assert checkpoint.name == "lut" and checkpoint.training == {"steps": 3}
    assert checkpoint.metadata["autohdr.model"] == "lut"
    header, body = split_file(good)  # other float widths are read (and widened): basis as float16
    begin, end = header["basis"]["data_offsets"]
    values = np.frombuffer(body[begin:end], dtype=np.float32).astype(np.float16).tobytes()
    header["basis"].update(dtype="F16", data_offsets=[begin, begin + len(values)])
    shift = (end - begin) - len(values)
    for key, entry in header.items():
        if key != "__metadata__" and entry["data_offsets"][0] >= end:
            entry["data_offsets"] = [entry["data_offsets"][0] - shift, entry["data_offsets"][1] - shift]
    (tmp_path / "half.safetensors").write_bytes(join_file(header, body[:begin] + values + body[end:]))
    loaded = load_checkpoint(tmp_path / "half.safetensors").model
    assert loaded.basis.dtype == torch.float32


def test_config_checks_apply_to_train_config_too(tmp_path, run):
    (tmp_path / "pairs").mkdir()
    for config, message in [
        ('{"lut_size": 2.5}', "lut_size must be a whole number"),
        ('{"thumbnail_size": 100000}', "thumbnail_size 100000 is outside 1..1024"),
        ('{"widths": "wide"}', "widths must be a list"),
        ('{"dropout": Infinity}', "dropout must be a finite number"),
    ]:
        result = run("train", tmp_path / "pairs", "-o", tmp_path / "x.safetensors", "--config", config, "--quiet")
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert make_config("nafnet", {"enc_blocks": [1, 2]} | {"dec_blocks": [1, 1]}).enc_blocks == (1, 2)


def _limited(megabytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))

    return apply


def run_limited(*args, megabytes: int = 2048, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in a subprocess whose address space is capped (a regression fails instead of exhausting
    the machine) and that is killed after ``timeout`` seconds (a hang fails instead of blocking)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "autohdr_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=_limited(megabytes), env=env, cwd=ROOT)


def test_a_small_file_claiming_a_huge_model_costs_no_memory(tmp_path, good):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(with_metadata(good, **{"autohdr.model": "nafnet", "autohdr.config": '{"width": 100000}'}))
    result = run_limited("info", path, megabytes=2048)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "config builds over 500,000,000 values" in result.stderr


def test_fifos_are_refused_not_waited_on(tmp_path):
    save_rgb(tmp_path / "in" / "p.png")
    os.mkfifo(tmp_path / "look.cube")
    os.mkfifo(tmp_path / "model.safetensors")
    for flag, path in (("--lut", tmp_path / "look.cube"), ("--weights", tmp_path / "model.safetensors")):
        result = run_limited("enhance", tmp_path / "in", tmp_path / "out", flag, path, timeout=120)
        assert result.returncode == 2
        assert result.stderr.strip() == f"autohdr: error: {path}: not a regular file (a FIFO, socket or device), so it is not read"


# ----------------------------------------------------------------------------------------- .cube files

IDENTITY_ROWS = "".join(f"{r} {g} {b}\n" for b in (0, 1) for g in (0, 1) for r in (0, 1))


@pytest.mark.parametrize(
    "text, message",
    [
        ("LUT_3D_SIZE 2\nDOMAIN_MIN nan 0 0\n" + IDENTITY_ROWS, "line 2: DOMAIN_MIN needs three finite numbers"),
        ("LUT_3D_SIZE 2\nDOMAIN_MAX 1 inf 1\n" + IDENTITY_ROWS, "line 2: DOMAIN_MAX needs three finite numbers"),
        ("LUT_3D_SIZE 2\nLUT_3D_INPUT_RANGE 0 -inf\n" + IDENTITY_ROWS, "line 2: LUT_3D_INPUT_RANGE needs two finite"),
        ("LUT_3D_SIZE 2\nDOMAIN_MIN 1 1 1\nDOMAIN_MAX 0 0 0\n" + IDENTITY_ROWS, "DOMAIN_MAX must be above DOMAIN_MIN"),
        ("LUT_3D_SIZE 2\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 0 1 1\n" + IDENTITY_ROWS, "DOMAIN_MAX must be above DOMAIN_MIN"),
        ("LUT_3D_SIZE 2\n" + IDENTITY_ROWS.replace("1 1 1", "1 nan 1"), "line 9: a value that is not finite"),
        ("LUT_3D_SIZE 2\n" + IDENTITY_ROWS.replace("1 1 1", "1 1e39 1"), "line 9: a value beyond float32's range"),
        ("LUT_3D_SIZE 2\n" + IDENTITY_ROWS + "0 0 0\n", "line 10: more table rows than LUT_3D_SIZE 2 declares (8)"),
        ("LUT_3D_SIZE 2\nLUT_3D_SIZE 2\n" + IDENTITY_ROWS, "line 2: a second LUT_3D_SIZE line"),
    ],
)
def test_cube_refuses_non_finite_values_bad_domains_and_extra_rows(tmp_path, text, message, run):
    path = tmp_path / "bad.cube"
    path.write_text(text)
    with pytest.raises(CubeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_cube(path)
    save_rgb(tmp_path / "in" / "p.png")
    result = run("enhance", tmp_path / "in", tmp_path / "out", "--lut", path)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and str(path) in result.stderr


def _peak_bytes(function) -> int:
    tracemalloc.start()
    try:
        function()
    except CubeError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_cube_memory_follows_the_declared_size_not_the_file(tmp_path):
    many = tmp_path / "many.cube"
    with open(many, "w") as handle:
        handle.write("LUT_3D_SIZE 2\n" + IDENTITY_ROWS + "0.5 0.5 0.5\n" * 1_000_000)
    declared = tmp_path / "declared.cube"
    declared.write_text("LUT_3D_SIZE 256\n0 0 0\n")
    long_line = tmp_path / "long.cube"
    long_line.write_text("LUT_3D_SIZE 2\n# " + "x" * 20_000_000 + "\n" + IDENTITY_ROWS)
    for path, message in ((many, "line 10: more table rows"), (declared, "needs 16777216 table rows, found 1"),
                          (long_line, "line 2: line longer than 4096 characters")):
        with pytest.raises(CubeError, match=message):
            read_cube(path)
        assert _peak_bytes(lambda: read_cube(path)) < 2_000_000, path.name
    good = tmp_path / "good.cube"
    good.write_text("TITLE \"t\"\nLUT_3D_SIZE 2\n" + IDENTITY_ROWS)
    assert read_cube(good).table.shape == (2, 2, 2, 3)


# -------------------------------------------------------------------------------------------- --device


@pytest.mark.parametrize("value", ["mps", "gpu", "cuda:x", "CPU", "cuda:99", ""])
def test_device_values_and_errors_are_the_same_in_every_command(tmp_path, value, run, look):
    save_rgb(tmp_path / "in" / "p.png")
    (tmp_path / "pairs" / "source").mkdir(parents=True)
    (tmp_path / "pairs" / "target").mkdir()
    lines = {}
    for command in (
        ("enhance", tmp_path / "in", tmp_path / "out", "--lut", look),
        ("enhance", tmp_path / "in", tmp_path / "out", "--model", "lut"),
        ("train", tmp_path / "pairs", "-o", tmp_path / "t.safetensors"),
        ("evaluate", tmp_path / "in", tmp_path / "in"),
        ("evaluate", tmp_path / "pairs", "--lut", look),
    ):
        result = run(*command, "--device", value)
        assert result.exit_code == 2, (command[0], result.output)
        lines[command[0] + " " + command[-1].name if isinstance(command[-1], Path) else command[0]] = result.stderr.strip()
    assert len(set(lines.values())) == 1, lines
    line = next(iter(lines.values()))
    assert line.startswith(f"autohdr: error: --device {value}") or line.startswith(f"autohdr: error: --device '{value}'")


# ------------------------------------------------------------------------------ replacing -o files


def test_export_refuses_to_replace_a_file_unless_overwrite(tmp_path, look, run):
    target = tmp_path / "out.cube"
    target.write_text("mine")
    result = run("export", look, "-o", target)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"autohdr: error: {target}: already exists; give --overwrite to replace it, or another -o"
    assert target.read_text() == "mine"
    assert run("export", look, "-o", target, "--overwrite").exit_code == 0
    assert read_cube(target).size == 33


# ------------------------------------------------------------------------------------- pairs folders


def test_malformed_pairs_folders_are_one_line_and_exit_2(tmp_path, run):
    save_rgb(tmp_path / "file.png")
    (tmp_path / "bare").mkdir()
    for folder, message in ((tmp_path / "nope", "not a folder"), (tmp_path / "file.png", "not a folder"),
                            (tmp_path / "bare", "no before/after sub-folders")):
        for args in (("train", folder, "-o", tmp_path / "x.safetensors"), ("evaluate", folder)):
            result = run(*args)
            assert result.exit_code == 2, result.output
            assert len(result.stderr.strip().splitlines()) == 1
            assert result.stderr.startswith(f"autohdr: error: {folder}: {message}")


def test_special_and_damaged_files_in_a_pairs_folder(tmp_path):
    pairs = tmp_path / "pairs"
    for index in range(4):
        pixels = np.random.default_rng(index).integers(0, 255, (96, 128, 3), dtype=np.uint8)
        save_rgb(pairs / "source" / f"p{index}.jpg", pixels)
        save_rgb(pairs / "target" / f"p{index}.jpg", pixels)
    os.mkfifo(pairs / "source" / "fifo.jpg")
    os.mkfifo(pairs / "target" / "fifo.jpg")
    args = ["train", pairs, "-o", tmp_path / "a.safetensors", "--steps", "1", "--quiet", "--crop", "16",
            "--train-size", "32", "--config", json.dumps(TINY_LUT)]
    result = run_limited(*args, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{pairs / 'source' / 'fifo.jpg'}: not a regular file" in result.stderr
    # A photo whose header reads but whose pixels do not: one line naming it, exit 2, nothing written.
    data = (pairs / "source" / "p1.jpg").read_bytes()
    (pairs / "source" / "p1.jpg").write_bytes(data[: len(data) // 2])
    args[3] = tmp_path / "b.safetensors"
    result = run_limited(*args, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"autohdr: error: {pairs / 'source' / 'p1.jpg'}: ")
    assert not (tmp_path / "b.safetensors").exists()
