"""Train the shipped default NAFNet weights, ``autohdr_cli/weights/nafnet-default.safetensors``, on the development pairs.

Usage, from the repository root (about 35 minutes on a 2-core CPU; any machine: the step count is fitted
to ``--time-budget`` by timing a few steps first, so the learning-rate schedule always completes):

    nice -n 10 python scripts/train_nafnet.py --pairs $AUTOHDR_DATA/pairs --time-budget 35m

One thread by default: on a CPU shared with other jobs, two OpenMP threads spend most of their time
waiting for each other (measured: 2-20x slower steps than one thread under a load of 7 on 2 cores).

Held out (never trained on): the pairs' validation split at ``autohdr train``/``autohdr evaluate``
defaults (``--val-split 0.2 --seed 0``), the same pairs the LUT backends are scored on.

Unlike ``autohdr train --model nafnet`` (which works too), crops are cut at the pairs' own resolution
rather than resized from 30-100% of the photo: a local model must learn the edit's local parts
(sharpening, local contrast radius) at the scale it is evaluated and used at.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from autohdr_cli.models.nafnet import NAFNet, preset
from autohdr_cli.train import TrainOptions, parse_duration, seconds_per_step, train
from autohdr_cli.train_data import NativeCrops, decode_split, split_folders
from autohdr_cli.devdata import data_option


def main(argv: list[str] | None = None) -> int:
    """Split and decode the pairs, fit the step count to the time budget, train, write the checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", **data_option("pairs"))
    parser.add_argument("--val-list", type=Path, default=None,
                        help="hold out the pairs this file names (a whole source; benchmarks/source_splits.py)")
    parser.add_argument("--output", "-o", type=Path, default=Path("autohdr_cli/weights/nafnet-default.safetensors"))
    parser.add_argument("--preset", default="small", help="NAFNet preset (small, medium, base, large)")
    parser.add_argument("--config", default="{}", help="JSON overriding preset fields")
    parser.add_argument("--time-budget", default="35m", help="wall time for the training steps, e.g. 35m")
    parser.add_argument("--steps", type=int, default=0, help="fixed step count (0 = fit to --time-budget)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-size", type=int, default=1536, help="pairs are decoded at this long side")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the held-out split (0: the one autohdr train/evaluate use by default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 is fastest on a shared machine (0 = torch's default)")
    parser.add_argument("--log", type=Path, default=None)
    parser.add_argument("--init", type=Path, default=None,
                        help="start from this checkpoint's weights (same preset), e.g. to fine-tune the shipped one")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    config = preset(args.preset, **json.loads(args.config))
    split = split_folders([args.pairs], 0.2, args.split_seed, args.val_list)
    train_pairs, validation = decode_split(split, args.train_size)
    data = NativeCrops(train_pairs)
    data.whole_size = config.whole_context  # crops bring their whole photos when the model reads them
    budget = parse_duration(args.time_budget)
    steps = args.steps
    if not steps:
        per_step = seconds_per_step(NAFNet(config), data, args.batch, args.crop, args.lr)
        steps = max(10, int(budget * 0.92 / per_step))  # leave room for checkpoints and the final validation
        print(f"{per_step:.2f} s per step: {steps} steps fit in {args.time_budget}", file=sys.stderr, flush=True)
    description = split.description(0.2, args.split_seed)
    description.update(
        data=f"{description['train_pairs']} pairs of {args.pairs}, native-resolution {args.crop} px crops",
        recipe="scripts/train_nafnet.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        preset=args.preset,
    )
    options = TrainOptions(
        pairs=[], output=args.output, model="nafnet", config=dataclasses.asdict(config), steps=steps,
        time_limit=budget, batch=args.batch, lr=args.lr, seed=args.seed, device="cpu", crop=args.crop,
        train_size=args.train_size, val_every=10**9, checkpoint_every=max(1, steps // 10), log=args.log,
        progress=sys.stderr.isatty(), init=args.init, pretrained_start=False,
    )
    result = train(options, data=data, validation=validation, description=description)
    print(json.dumps({"steps": result.steps, "seconds": round(result.seconds), "stopped_by": result.stopped_by,
                      "validation": result.validation}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
