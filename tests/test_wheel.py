"""A wheel install works from any folder: the default weights travel inside the package.

Builds the wheel from a copy of the sources (so the checkout gets no build/ or egg-info), installs it
with ``--no-deps`` into a throwaway folder that shadows this checkout (the dependencies are the current
environment's, nothing is downloaded), and runs the README's main job from another folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "photos"


def _pip(*args: str, cwd: Path) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A folder holding the installed wheel (``--target`` layout: the package and ``bin/autohdr``)."""
    pytest.importorskip("setuptools", minversion="68")  # the build backend; the test extra pins it
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "autohdr_cli", source / "autohdr_cli", ignore=shutil.ignore_patterns("__pycache__"))
    _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(work / "dist"), str(source), cwd=work)
    wheels = list((work / "dist").glob("autohdr-*.whl"))
    assert len(wheels) == 1
    target = work / "site"
    _pip("install", "--no-deps", "--no-compile", "--target", str(target), str(wheels[0]), cwd=work)
    return target


def _run_installed(target: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(target))
    env.pop("AUTOHDR_WEIGHTS", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_holds_the_default_weights_and_runs_the_default_job_from_another_folder(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run_installed(installed, "-c", "import autohdr_cli; print(autohdr_cli.__file__)", cwd=elsewhere)
    assert Path(where.stdout.strip()).is_relative_to(installed), where.stdout + where.stderr
    for name in ("lut", "localtone", "nafnet", "diffir"):
        assert (installed / "autohdr_cli" / "weights" / f"{name}-default.safetensors").is_file()

    # The console script the wheel declares, run as a user would, on the default weights.
    script = installed / "bin" / "autohdr"
    assert script.is_file()
    result = _run_installed(installed, str(script), "enhance", str(SAMPLES), "out", "--quiet", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (elsewhere / "out").iterdir() if not p.name.startswith("."))  # not the manifest
    assert written == sorted(p.name for p in SAMPLES.iterdir() if p.suffix == ".jpg")

    # --model NAME finds the packaged weights the same way.
    one = next(SAMPLES.glob("*.jpg"))
    result = _run_installed(installed, str(script), "enhance", str(one), "by-name", "--model", "lut", "--quiet",
                            cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "by-name" / one.name).is_file()
