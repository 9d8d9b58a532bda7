"""Fit one static 3D LUT to a pairs folder and write it as a ``.cube`` look.

This is what a plain exported preset can do: one colour transform for every photo. The sample look in
``samples/looks/realestate.cube`` was made with:

    python scripts/fit_static_look.py ../data/pairs samples/looks/realestate.cube --size 17

(``../data`` built by ``../shared/data/make_pairs.sh``). The fit minimises the L1 error of the looked-up
source against the target on downscaled copies, with a small smoothness term so that colours seen
rarely in the pairs stay well behaved.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from autohdr_cli.cube import CubeLUT, write_cube
from autohdr_cli.imageio import load_image
from autohdr_cli.models.lut import apply_lut, identity_lut, lut_to_table
from autohdr_cli.pairs import find_pairs


def load_pairs_small(folder: str, long_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs as two ``3 x N`` pixel tensors, each photo downscaled to ``long_side``."""
    sources, targets = [], []
    for pair in find_pairs(folder).pairs:
        for path, bucket in ((pair.source, sources), (pair.target, targets)):
            image = torch.from_numpy(load_image(path)).unsqueeze(0)
            scale = long_side / max(image.shape[-2:])
            if scale < 1:
                image = F.interpolate(image, scale_factor=scale, mode="area")
            bucket.append(image[0].reshape(3, -1))
    return torch.cat(sources, 1), torch.cat(targets, 1)


def smoothness(lut: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring LUT entries along each axis."""
    return sum(lut.diff(dim=d).pow(2).mean() for d in (1, 2, 3))


def fit_static_lut(source: torch.Tensor, target: torch.Tensor, size: int, steps: int) -> torch.Tensor:
    """A ``3 x S x S x S`` LUT that maps source pixels onto target pixels (Adam on L1 + smoothness)."""
    lut = identity_lut(size).requires_grad_(True)
    optimizer = torch.optim.Adam([lut], lr=0.01)
    images = source.reshape(1, 3, 1, -1)
    wanted = target.reshape(1, 3, 1, -1)
    for step in range(steps):
        optimizer.zero_grad()
        loss = (apply_lut(images, lut) - wanted).abs().mean() + 0.1 * smoothness(lut)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            lut.clamp_(0, 1)
    return lut.detach()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs")
    parser.add_argument("output")
    parser.add_argument("--size", type=int, default=17)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--long-side", type=int, default=256)
    args = parser.parse_args()
    started = time.time()
    source, target = load_pairs_small(args.pairs, args.long_side)
    lut = fit_static_lut(source, target, args.size, args.steps)
    with torch.no_grad():
        before = (source - target).abs().mean().item()
        after = (apply_lut(source.reshape(1, 3, 1, -1), lut).reshape(3, -1) - target).abs().mean().item()
    comments = [
        "autohdr sample look: one static LUT fitted to RawTherapee real-estate before/after pairs",
        f"fit by scripts/fit_static_look.py: size {args.size}, {args.steps} steps, mean L1 {before:.4f} -> {after:.4f}",
    ]
    write_cube(args.output, CubeLUT(lut_to_table(lut), "autohdr real-estate sample", comments=comments))
    print(f"wrote {args.output}: L1 {before:.4f} -> {after:.4f} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
