"""Train the shipped default DiffIR weights, ``autohdr_cli/weights/diffir-default.safetensors``, on the development pairs.

Usage, from the repository root (about 50 minutes on a 2-core CPU; any machine: each stage's step count
is fitted to its time budget by timing a few steps first, so the learning-rate schedule completes):

    nice -n 10 python scripts/train_diffir.py --pairs $AUTOHDR_DATA/pairs --stage 1 --time-budget 20m --threads 2
    nice -n 10 python scripts/train_diffir.py --pairs $AUTOHDR_DATA/pairs --stage 2 --time-budget 25m

Stage 1 writes ``NAME.stage1.safetensors``; stage 2 starts from it. ``--timesteps 0`` (with another
``--output``) trains the ablation where CPEN-S2's output is used directly instead of 4 diffusion steps,
from the same stage-1 checkpoint. Both stage-2 runs can go side by side, one thread each.

Held out (never trained on): the pairs' validation split at ``autohdr train``/``autohdr evaluate``
defaults (``--val-split 0.2 --seed 0``). Crops are cut at the pairs' own resolution (as for NAFNet);
the prior networks read each crop's whole photo, squashed to ``prior_size`` square, as at inference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from autohdr_cli.checkpoint import load_checkpoint, save_checkpoint
from autohdr_cli.models.diffir import DiffIR, preset
from autohdr_cli.train import TrainOptions, parse_duration, seconds_per_step, stage1_path, train
from autohdr_cli.train_data import NativeCrops, decode_split, split_folders
from autohdr_cli.devdata import data_option


def main(argv: list[str] | None = None) -> int:
    """Split and decode the pairs, fit the step count to the time budget, train one stage."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", **data_option("pairs"))
    parser.add_argument("--val-list", type=Path, default=None,
                        help="hold out the pairs this file names (a whole source; benchmarks/source_splits.py)")
    parser.add_argument("--output", "-o", type=Path, default=Path("autohdr_cli/weights/diffir-default.safetensors"))
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True)
    parser.add_argument("--stage1", type=Path, default=None,
                        help="stage 2: the stage-1 checkpoint to start from (default: the output's .stage1 file)")
    parser.add_argument("--preset", default="small", help="DiffIR preset (small, medium, base)")
    parser.add_argument("--config", default="{}", help="stage 1: JSON overriding preset fields")
    parser.add_argument("--timesteps", type=int, default=None, help="stage 2: diffusion steps (0 = ablation)")
    parser.add_argument("--time-budget", default="20m", help="wall time for this stage's steps, e.g. 20m")
    parser.add_argument("--steps", type=int, default=0, help="fixed step count (0 = fit to --time-budget)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (stage 1: 1e-3, stage 2: 5e-4)")
    parser.add_argument("--train-size", type=int, default=1536, help="pairs are decoded at this long side")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the held-out split (0: the one autohdr train/evaluate use by default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 is fastest on a shared machine (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lr = args.lr if args.lr is not None else (1e-3 if args.stage == 1 else 5e-4)

    split = split_folders([args.pairs], 0.2, args.split_seed, args.val_list)
    train_pairs, validation = decode_split(split, args.train_size)
    data = NativeCrops(train_pairs)
    output = stage1_path(args.output) if args.stage == 1 else args.output
    resume = None
    if args.stage == 1:
        config = preset(args.preset, **json.loads(args.config), stage=1)
        torch.manual_seed(args.seed)
        model = DiffIR(config)
    else:
        start = args.stage1 or stage1_path(args.output)
        model = load_checkpoint(start).model
        if args.timesteps is not None and args.timesteps != model.config.timesteps:
            # Same weights (the denoiser's shape does not depend on the step count), another schedule.
            changed = DiffIR(dataclasses.replace(model.config, timesteps=args.timesteps))
            changed.load_state_dict(model.state_dict())
            start = output.with_name(f"{output.stem}.start.safetensors")
            save_checkpoint(start, changed, training=load_checkpoint(args.stage1 or stage1_path(args.output)).training)
            model = changed
        resume = start
        model.begin_stage2()
    data.whole_size = model.config.prior_size
    budget = parse_duration(args.time_budget)
    steps = args.steps
    if not steps:
        per_step = seconds_per_step(model, data, args.batch, args.crop, lr)
        steps = max(10, int(budget * 0.9 / per_step))  # room for checkpoints and the final validation
        print(f"{per_step:.2f} s per step: {steps} steps fit in {args.time_budget}", file=sys.stderr, flush=True)
    description = split.description(0.2, args.split_seed)
    description.update(
        data=f"{description['train_pairs']} pairs of {args.pairs}, native-resolution {args.crop} px crops",
        recipe="scripts/train_diffir.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        preset=args.preset,
    )
    options = TrainOptions(
        pairs=[], output=output, model="diffir", config=dataclasses.asdict(model.config), steps=steps,
        time_limit=budget, batch=args.batch, lr=lr, seed=args.seed, device="cpu", crop=args.crop,
        train_size=args.train_size, val_every=10**9, checkpoint_every=max(1, steps // 10),
        progress=sys.stderr.isatty(), stage=args.stage, resume=resume,
    )
    result = train(options, data=data, validation=validation, description=description)
    print(json.dumps({"stage": args.stage, "steps": result.steps, "seconds": round(result.seconds),
                      "stopped_by": result.stopped_by, "validation": result.validation}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
