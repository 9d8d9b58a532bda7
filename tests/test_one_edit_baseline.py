"""``benchmarks/one_edit_baseline.py``: one fixed edit fitted to training pairs, scored on held-out ones."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autohdr_cli.train_data import degrade

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "one_edit_baseline.py"


def _write_look_pairs(folder: Path, count: int) -> None:
    """Pairs whose targets are all the same global edit of their sources (brighter, more contrast)."""
    rng = np.random.default_rng(0)
    edit = torch.tensor([[0.6, 0.1, -0.1, 1.15, 1.0]])
    for side in ("source", "target"):
        (folder / side).mkdir(parents=True)
    for index in range(count):
        ramp = np.linspace(0.1, 0.6, 48)[None, :, None] * rng.uniform(0.6, 1.0, (1, 1, 3))
        source = np.clip(ramp + rng.normal(0, 0.03, (32, 48, 3)), 0, 1)
        target = degrade(torch.from_numpy(source).permute(2, 0, 1)[None].float(), edit)[0]
        target = target.clamp(0, 1).permute(1, 2, 0).numpy()
        Image.fromarray((source * 255).round().astype(np.uint8)).save(folder / "source" / f"p{index}.png")
        Image.fromarray((target * 255).round().astype(np.uint8)).save(folder / "target" / f"p{index}.png")


def test_a_look_that_is_one_global_edit_is_recovered_on_held_out_pairs(tmp_path):
    _write_look_pairs(tmp_path / "pairs", count=4)
    (tmp_path / "held.txt").write_text("p3\n")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "pairs"), "--val-list", str(tmp_path / "held.txt"),
         "--size", "48", "--score-size", "48", "--steps", "150"],
        check=True, capture_output=True, text=True,
    )
    assert "3 training pairs, 1 held out" in result.stdout
    held = re.search(r"held-out pairs at 48 px: identity ([\d.]+) dB, one edit ([\d.]+) dB", result.stdout)
    identity, fitted = float(held.group(1)), float(held.group(2))
    assert fitted > identity + 8, result.stdout


def test_a_list_that_holds_out_every_pair_is_refused(tmp_path):
    _write_look_pairs(tmp_path / "pairs", count=2)
    (tmp_path / "held.txt").write_text("p0\np1\n")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "pairs"), "--val-list", str(tmp_path / "held.txt")],
        capture_output=True, text=True,
    )
    assert result.returncode != 0 and "needs pairs on both sides" in result.stderr
