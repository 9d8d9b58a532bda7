"""Train a pretrained start for ``autohdr train --model nafnet``: undoing random global and local edits.

The task teaches how photos get edited, not one look: each crop of a development photo is edited at
random (exposure, white balance, contrast, saturation, a tone curve, shadows/highlights and local
contrast, each both ways) and the model learns to bring it back. ``autohdr train --model nafnet`` starts
from the result by default (``--init none`` for a cold start). Usage, from the repository root:

    python scripts/train_pretrained.py --photos $AUTOHDR_DATA/photos --exclude held-out.txt --time-budget 30m

``--exclude`` names photos (one stem or file name a line, as ``--val-list``) the start must never see,
e.g. the held-out source of a by-source measurement. The photos it trained on are stored in the
checkpoint's training record (and listed in the model card).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from autohdr_cli.devdata import data_option
from autohdr_cli.edits import LocalEditRanges
from autohdr_cli.imageio import EXTENSIONS
from autohdr_cli.models import MODELS
from autohdr_cli.pairs import read_stem_list
from autohdr_cli.train import TrainOptions, parse_duration, train
from autohdr_cli.train_data import DegradationRanges, DegradedPhotos, decode_for_training


def photo_files(folder: Path, excluded: set[str]) -> list[Path]:
    """The photos of ``folder`` (sorted) whose stem and name are not in ``excluded``."""
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in EXTENSIONS and p.stem not in excluded and p.name not in excluded
    )


def main(argv: list[str] | None = None) -> int:
    """Decode the photos, train on random edits for the budget, write the checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", **data_option("photos"))
    parser.add_argument("--exclude", type=Path, action="append", default=[],
                        help="file of photos never to train on (repeatable)")
    parser.add_argument("--model", default="nafnet", help="nafnet (the model's default config)")
    parser.add_argument("--config", default="{}", help="JSON overriding the model's default config")
    parser.add_argument("--output", "-o", type=Path, default=Path("autohdr_cli/weights/nafnet-pretrained.safetensors"))
    parser.add_argument("--time-budget", default="30m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-size", type=int, default=1536, help="photos are decoded at this long side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    excluded: set[str] = set()
    for file in args.exclude:
        excluded.update(read_stem_list(file))
    files = photo_files(args.photos, excluded)
    if not files:
        raise SystemExit(f"{args.photos}: no photos left to train on")
    photos = [decode_for_training(path, args.train_size) for path in files]
    data = DegradedPhotos(photos, DegradationRanges(), local=LocalEditRanges(), native=True)
    config = {**dataclasses.asdict(MODELS[args.model].config_class()), **json.loads(args.config)}
    description = {
        "data": f"{len(files)} photos of {args.photos} with random global and local edits undone "
                f"(native {args.crop} px windows at {args.train_size} px)",
        "photos": [path.name for path in files],
        "excluded": sorted(excluded),
        "recipe": "scripts/train_pretrained.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    options = TrainOptions(
        pairs=[], output=args.output, model=args.model, config=config, time_limit=parse_duration(args.time_budget),
        batch=args.batch, lr=args.lr, seed=args.seed, device="cpu", crop=args.crop, train_size=args.train_size,
        val_every=10**9, progress=sys.stderr.isatty(), overwrite=True, pretrained_start=False,
    )
    result = train(options, data=data, description=description)
    print(json.dumps({"steps": result.steps, "seconds": round(result.seconds), "stopped_by": result.stopped_by,
                      "photos": len(files)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
