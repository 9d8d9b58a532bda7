"""``autohdr train`` for one-shot looks: fit :class:`~autohdr_cli.models.oneshot.OneShotLook` to one pair.

Given as two files (before, after) or as pairs folders (usually holding one pair). There is no
training loop: the fit is closed-form plus a few hundred Adam steps on a downscaled copy, seconds on
a CPU. A single pair leaves nothing to validate on, and the summary says so; with more pairs the usual
seeded split is held out and scored against doing nothing.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import save_checkpoint
from .imageio import PhotoError, load_image
from .models import make_config
from .models.oneshot import fit_oneshot
from .train import FALLBACK_TRAIN_SIZE, TrainError, TrainOptions, TrainResult, evaluate_pairs, print_summary
from .train_data import PairData, load_pairs, merge_pairs, resize_long_side, split_folders


def is_file_pair(paths: list[Path]) -> bool:
    """True when the ``train`` arguments are one before/after pair given as two files."""
    return len(paths) == 2 and all(Path(p).is_file() for p in paths)


def _file_pair(options: TrainOptions) -> tuple[PairData, dict]:
    before, after = (Path(p) for p in options.pairs)
    images = []
    for path in (before, after):
        try:
            images.append(resize_long_side(torch.from_numpy(load_image(path)), options.train_size))
        except (PhotoError, OSError) as e:
            raise TrainError(f"{path}: {e}") from None
    if images[0].shape != images[1].shape:
        raise TrainError(
            f"{after}: {images[1].shape[2]}x{images[1].shape[1]} pixels, but {before} has "
            f"{images[0].shape[2]}x{images[0].shape[1]}; before and after must be the same photo"
        )
    return PairData([images[0]], [images[1]], [0], [before.stem]), {"before": str(before), "after": str(after)}


def _folder_pairs(options: TrainOptions, say: Callable[[str], None]) -> tuple[PairData, PairData, dict]:
    split = split_folders(options.pairs, options.val_split, options.validation_seed)
    for line in split.problems:
        say(line)
    for folder, train_pairs in zip(split.folders, split.train):
        if not train_pairs:
            raise TrainError(f"{folder}: no usable pair; a one-shot look needs one before/after pair")
    description = split.description(options.val_split, options.validation_seed)
    train = merge_pairs([load_pairs(pairs, options.train_size) for pairs in split.train])
    validation = merge_pairs([load_pairs(pairs, options.train_size) for pairs in split.validation])
    return train, validation, description


def train_oneshot(options: TrainOptions, report: Callable[[str], None] | None = None) -> TrainResult:
    """Fit a one-shot look as ``options`` say (pairs, output, config, train_size, split) and write it.

    Raises :class:`TrainError` for unusable input (a file that is not a photo, sizes that differ, a
    folder without a pair, an unknown config key).
    """
    import sys

    say = report or (lambda line: print(line, file=sys.stderr, flush=True))
    if options.train_size is None:  # the pairs are decoded at the loop's default size
        options = dataclasses.replace(options, train_size=FALLBACK_TRAIN_SIZE)
    try:
        config = make_config("oneshot", options.config)
    except ValueError as e:
        raise TrainError(str(e)) from None
    began = time.monotonic()
    if is_file_pair(options.pairs):
        data, description = _file_pair(options)
        validation = PairData([], [], [], [])
    else:
        data, validation, description = _folder_pairs(options, say)
    say(f"fitting a one-shot look to {len(data)} pair{'s' if len(data) != 1 else ''}: {', '.join(data.names)}")
    torch.manual_seed(options.seed)
    model = fit_oneshot(list(data.sources), list(data.targets), config, seed=options.seed)
    elapsed = time.monotonic() - began
    final: dict[str, dict[str, float]] = {}
    device = torch.device("cpu")
    if len(validation):
        final = {"identity": evaluate_pairs(None, validation, device), "oneshot": evaluate_pairs(model, validation, device)}
    record = dict(description, model="oneshot", seconds=round(elapsed, 1), train_size=options.train_size,
                  seed=options.seed, pairs_fitted=list(data.names))
    if final:
        record["validation"] = final
    save_checkpoint(options.output, model, training=record)
    say(f"fitted in {elapsed:.1f} s; wrote {options.output}")
    if final:
        print_summary(final, len(validation))
    else:
        say("no validation: a single pair leaves nothing to hold out; check the look on a few other photos "
            "of the shoot (autohdr enhance)")
    return TrainResult(Path(options.output), config.fit_steps, elapsed, "fitted", final, list(data.names),
                       list(validation.names))
