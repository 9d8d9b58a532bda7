"""Where a trained lut loses on photos it never saw: its predictor's choice, or what its bases can make.

Usage:

    python benchmarks/lut_predictor_gap.py LUT.safetensors PAIRS HELD_OUT.txt [--size 512] [--steps 150]

For each pair named in ``HELD_OUT.txt`` (one stem a line, as ``--val-list`` takes), at ``--size`` px
long side, it prints the PSNR of identity, of the lut as trained (the LUT its predictor picks from the
photo's thumbnail), of the best LUT its bases and curves can make for that photo (Adam on the
``hidden`` numbers the encoder hands the two heads, ``--steps`` steps, everything else fixed: an
oracle of the predictor), and of a 17³ LUT fitted to the pair itself (``carry.fit_lut``: an oracle of
any global look). The gaps between the columns split the lut's shortfall into the predictor choosing
badly and the basis mix being unable to reach the photo's LUT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from autohdr_cli.carry import fit_lut
from autohdr_cli.checkpoint import load_model
from autohdr_cli.imageio import read_photo, to_float
from autohdr_cli.models.lut import AdaptiveLUT, apply_lut, make_thumbnail


def load(path: Path, size: int) -> torch.Tensor:
    """A photo as ``1 x 3 x H x W`` float, at most ``size`` px long."""
    pixels = to_float(read_photo(path, long_side=size).pixels)
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1]."""
    return float(-10.0 * torch.log10(((a - b) ** 2).mean()))


def best_in_predictor_space(model: AdaptiveLUT, source: torch.Tensor, target: torch.Tensor, steps: int) -> torch.Tensor:
    """The lut's output for ``source`` with the encoder's features optimised for ``target``."""
    with torch.no_grad():
        start = model.encoder(make_thumbnail(source, model.thumbnail_size))
    features = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([features], lr=0.05)
    for _ in range(steps):
        luts, _curves = model.luts_from_features(features)
        loss = ((apply_lut(source, luts.clamp(0.0, 1.0)) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return apply_lut(source, model.luts_from_features(features)[0].clamp(0.0, 1.0))


def main() -> int:
    """Print one row per held-out pair and the means."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("pairs", type=Path, help="pairs folder with source/ and target/")
    parser.add_argument("held_out", type=Path, help="stems of the pairs to measure, one a line")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(args.weights).eval()
    if not isinstance(model, AdaptiveLUT):
        parser.error(f"{args.weights}: not a lut checkpoint")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    rows = []
    print(f"{'pair':32} {'identity':>8} {'lut':>8} {'best mix':>8} {'fit 17³':>8}")
    for stem in args.held_out.read_text().split():
        source = load(next((args.pairs / "source").glob(stem + ".*")), args.size)
        target = load(next((args.pairs / "target").glob(stem + ".*")), args.size)
        with torch.no_grad():
            predicted = model(source)
        best = best_in_predictor_space(model, source, target, args.steps)
        fitted = apply_lut(source, fit_lut(source[0].double(), target[0].double(), 17).float())
        rows.append([psnr(source, target), psnr(predicted, target), psnr(best, target), psnr(fitted, target)])
        print(f"{stem[:32]:32} " + " ".join(f"{value:8.2f}" for value in rows[-1]), flush=True)
    print(f"{'mean':32} " + " ".join(f"{value:8.2f}" for value in np.mean(rows, axis=0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
