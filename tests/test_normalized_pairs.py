"""``benchmarks/normalized_pairs.py``: the normalised-sources pairs folder that issue 17's lever is measured on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from autohdr_cli.pairs import find_pairs

from test_train import write_pairs

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "normalized_pairs.py"


def _normalize(pairs: Path, out: Path, *options: str) -> None:
    subprocess.run([sys.executable, str(SCRIPT), str(pairs), str(out), *options], check=True, capture_output=True)


def test_sources_reach_the_target_mean_per_channel_and_targets_are_kept(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", count=3)
    _normalize(pairs, tmp_path / "out", "--target", "0.4")
    for index in range(3):
        normalized = tifffile.imread(tmp_path / "out" / "source" / f"p{index}.tif")
        assert normalized.dtype == np.uint16 and normalized.shape == (24, 32, 3)
        assert np.allclose((normalized / 65535.0).reshape(-1, 3).mean(axis=0), 0.4, atol=0.03)
        kept = tmp_path / "out" / "target" / f"p{index}.png"
        assert kept.read_bytes() == (pairs / "target" / f"p{index}.png").read_bytes()
    # The result is a pairs folder the CLI reads: every source found beside its target.
    found = find_pairs(tmp_path / "out")
    assert len(found.pairs) == 3 and not found.problems


def test_exposure_only_brightens_all_channels_by_one_curve(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", count=1)
    _normalize(pairs, tmp_path / "out", "--exposure-only", "--target", "0.6")
    before = np.asarray(Image.open(pairs / "source" / "p0.png"), dtype=np.float64) / 255.0
    after = tifffile.imread(tmp_path / "out" / "source" / "p0.tif") / 65535.0
    # One exponent for all channels: a pixel's channels keep their order, and the photo got brighter.
    assert after.mean() > before.mean() + 0.1
    order_before, order_after = np.argsort(before, axis=-1), np.argsort(after, axis=-1)
    distinct = np.min(np.abs(np.diff(np.sort(before, axis=-1), axis=-1)), axis=-1) > 2 / 255
    assert np.array_equal(order_before[distinct], order_after[distinct])


def test_targets_under_their_source_curve_come_back_by_denormalize(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", count=2)
    _normalize(pairs, tmp_path / "both", "--normalize-targets")
    normalized_target = tifffile.imread(tmp_path / "both" / "target" / "p0.tif") / 65535.0
    original = np.asarray(Image.open(pairs / "target" / "p0.png"), dtype=np.float64) / 255.0
    assert np.abs(normalized_target - original).mean() > 0.02  # the curve did something
    # Undoing each source's curve on the normalised targets gives the original targets back.
    _normalize(pairs, tmp_path / "back", "--denormalize", str(tmp_path / "both" / "target"))
    for index in range(2):
        back = tifffile.imread(tmp_path / "back" / f"p{index}.tif") / 65535.0
        original = np.asarray(Image.open(pairs / "target" / f"p{index}.png"), dtype=np.float64) / 255.0
        assert np.abs(back - original).mean() < 0.5 / 255 and np.abs(back - original).max() < 8 / 255
