"""``scripts/submit.sh``: enhance a test folder, check one output per input, zip, write the timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from autohdr_cli.cube import read_cube

from conftest import gradient, save_rgb

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "submit.sh"


def submit(*args: str | Path) -> subprocess.CompletedProcess:
    """Run the script with this interpreter's autohdr (the checkout under test)."""
    env = dict(os.environ, AUTOHDR=f"{sys.executable} -m autohdr_cli", PYTHON=sys.executable)
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def test_folder(tmp_path: Path) -> Path:
    """Three photos in two formats and a sub-folder, plus a file that is not a photo."""
    folder = tmp_path / "test"
    save_rgb(folder / "a.png", gradient(16, 24, seed=1))
    save_rgb(folder / "b.jpg", gradient(20, 12, seed=2), quality=95)
    save_rgb(folder / "rooms" / "c.png", gradient(10, 14, seed=3))
    (folder / "readme.txt").write_text("not a photo")
    return folder


def test_submission_zips_one_output_per_input_and_times_the_run(test_folder, look, tmp_path):
    zip_path = tmp_path / "out" / "submission.zip"
    result = submit(test_folder, zip_path, "--weights", look, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["a.png", "b.jpg", "rooms/c.png"]
        for name in archive.namelist():
            with Image.open(BytesIO(archive.read(name))) as output, Image.open(test_folder / name) as original:
                assert (output.format, output.size) == (original.format, original.size)
        enhanced = np.asarray(Image.open(BytesIO(archive.read("a.png"))).convert("RGB"))
    cube = read_cube(look)
    original = Image.open(test_folder / "a.png").convert("RGB")
    expected = np.asarray(original.filter(ImageFilter.Color3DLUT(cube.size, cube.table.reshape(-1))))
    assert np.abs(enhanced.astype(int) - np.asarray(original).astype(int)).mean() > 2, "the look was applied"
    assert np.abs(enhanced.astype(int) - expected.astype(int)).max() <= 1
    timing = json.loads((tmp_path / "out" / "submission.timing.json").read_text())
    assert timing["ok"] is True and timing["photos"] == 3 and timing["problems"] == []
    assert timing["total_seconds"] > 0
    assert timing["seconds_per_photo"] == pytest.approx(timing["total_seconds"] / 3, rel=0.01)
    megapixels = (16 * 24 + 20 * 12 + 10 * 14) / 1e6
    assert timing["megapixels"] == pytest.approx(megapixels, abs=1e-3)
    assert timing["megapixels_per_second"] == pytest.approx(megapixels / timing["total_seconds"], abs=1e-3)
    assert timing["device"].startswith("cpu")
    assert timing["ignored_files"] == ["readme.txt"]


def test_a_failing_photo_fails_the_submission_and_writes_no_zip(test_folder, look, tmp_path):
    (test_folder / "rooms" / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not really a JPEG")
    zip_path = tmp_path / "submission.zip"
    result = submit(test_folder, zip_path, "--weights", look, "--device", "cpu")
    assert result.returncode == 1
    assert "broken.jpg" in result.stderr
    assert not zip_path.exists()
    timing = json.loads((tmp_path / "submission.timing.json").read_text())
    assert timing["ok"] is False and timing["zip"] is None
    assert any("broken.jpg" in problem for problem in timing["problems"])


def test_usage_errors_exit_2_before_any_work(tmp_path, look):
    assert submit().returncode == 2
    assert submit(tmp_path / "missing", tmp_path / "x.zip", "--weights", look).returncode == 2
    assert submit(tmp_path, tmp_path / "x.tar", "--weights", look).returncode == 2
    assert submit(tmp_path, tmp_path / "x.zip", "--colour", "red").returncode == 2
    assert not list(tmp_path.glob("x.*"))
