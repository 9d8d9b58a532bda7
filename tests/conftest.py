"""Shared helpers for the tests: tiny real photo files on disk, and running the CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from autohdr_cli.cli import app
from autohdr_cli.cube import CubeLUT, identity_table, write_cube


def gradient(height: int = 16, width: int = 24, seed: int = 0) -> np.ndarray:
    """A small uint8 RGB test picture: smooth ramps plus noise, so every level range is exercised."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), (x + y) / (width + height - 2)], axis=-1)
    noisy = np.clip(base * 230 + rng.integers(0, 25, size=base.shape), 0, 255)
    return noisy.astype(np.uint8)


def save_rgb(path: Path, pixels: np.ndarray | None = None, **options) -> Path:
    """Write an RGB photo with Pillow (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gradient() if pixels is None else pixels, "RGB").save(path, **options)
    return path


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def warm_table(size: int = 9) -> np.ndarray:
    """A visible but smooth look: warmer, brighter, a little more contrast."""
    table = identity_table(size)
    table = np.clip(table**0.85, 0, 1)
    table[..., 0] = np.clip(table[..., 0] * 1.08, 0, 1)
    table[..., 2] = np.clip(table[..., 2] * 0.92, 0, 1)
    return table.astype(np.float32)


@pytest.fixture
def look(tmp_path: Path) -> Path:
    """A ``.cube`` file with a warm look."""
    path = tmp_path / "warm.cube"
    write_cube(path, CubeLUT(warm_table(), "warm"))
    return path


@pytest.fixture
def run():
    """Run the ``autohdr`` CLI in-process; returns the click Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str | Path):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: on tiny tensors more threads only add hand-over costs, and on a
    busy machine their barriers stall badly. Test files that work on tiny models use it for every test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
