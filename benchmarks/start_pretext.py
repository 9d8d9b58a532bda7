"""How much of its own task a pretrained start has learned, on photos it never saw and on its own.

``scripts/train_pretrained.py`` teaches a network to undo random global and local edits. This draws a
fixed set of such edits (seeded) on native 256 px windows of the photos named in a list and prints
the mean PSNR of doing nothing and of each start's undoing. A start that beats identity on its
training photos but not on others has memorised its photos' renderings instead of learning how
edits look. Usage, from the repository root::

    python benchmarks/start_pretext.py $AUTOHDR_DATA/photos held-out.txt START.safetensors [...]

Run it once with the held-out list and once with a list of the start's training photos.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from autohdr_cli import metrics
from autohdr_cli.checkpoint import load_model
from autohdr_cli.edits import LocalEditRanges
from autohdr_cli.pairs import photos_by_stem, read_stem_list
from autohdr_cli.train_data import DegradationRanges, DegradedPhotos, decode_for_training


def mean_psnr(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over images of the PSNR in dB (predictions clipped to [0, 1])."""
    return float(metrics.psnr(predictions.clamp(0, 1), targets).mean())


def main() -> None:
    """Draw the edited windows once, score identity and each start on them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path, help="folder of photos")
    parser.add_argument("names", type=Path, help="which photos: one stem or file name a line")
    parser.add_argument("starts", type=Path, nargs="+", help="pretrained starts (.safetensors)")
    parser.add_argument("--windows", type=int, default=64, help="edited windows drawn (in batches of 8)")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = read_stem_list(args.names)
    files = [path for stem, path in sorted(photos_by_stem(args.photos)[0].items()) if stem in names]
    if not files:
        raise SystemExit(f"{args.names}: names no photo of {args.photos}")
    data = DegradedPhotos([decode_for_training(p, 1536) for p in files], DegradationRanges(),
                          local=LocalEditRanges(), native=True)
    torch.manual_seed(args.seed)
    batches = [data.sample(8, 256)[:2] for _ in range(max(1, args.windows // 8))]
    print(f"{len(files)} photos, {8 * len(batches)} edited windows")
    print(f"identity: {sum(mean_psnr(e, c) for e, c in batches) / len(batches):.2f} dB")
    for start in args.starts:
        model = load_model(start).eval()
        with torch.no_grad():
            score = sum(mean_psnr(model(e), c) for e, c in batches) / len(batches)
        print(f"{start}: {score:.2f} dB")


if __name__ == "__main__":
    main()
