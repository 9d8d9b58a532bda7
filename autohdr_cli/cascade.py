"""``train --base auto``: a whole-photo model trained first, inside the run's own budget, then the local
model learning what is left after it.

A cascade of two ``train`` runs on the same pairs and validation split: the localtone (``BASE_MODEL``) gets
``BASE_SHARE`` of the time limit, the local model the rest, and the local model's file holds both (as with
``--base FILE``). The base's own checkpoint stays beside the output as ``NAME.base.safetensors`` (a look
of its own, and what a rerun can pass as ``--base``).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from .checkpoint import CheckpointError, read_header
from .train_data import TrainError
from .train_options import TrainOptions, TrainResult, files_in_the_way

#: ``--base`` keywords: train a base first, or none at all (overrides a model's default).
AUTO = "auto"
NONE = "none"

#: The model a cascade trains first, and its share of a time-limited run's budget. LocalTone, since it
#: travels best (by source, NAFNet on it: +3.91 dB over the lut-based cascade on the development look,
#: +1.50 dB on the airy look; autohdr_cli/weights/README.md, session 13).
BASE_MODEL = "localtone"
BASE_SHARE = 0.25

#: Models that train on an automatic base unless ``--base`` says otherwise. Empty until measured
#: (DESIGN.md, "The cascade"); ``{"diffir": AUTO}`` makes it DiffIR's default.
DEFAULT_BASE: dict[str, str] = {}


def base_path(output: Path) -> Path:
    """Where a cascade writes its base: ``NAME.base.safetensors`` beside ``NAME.safetensors``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.base{output.suffix}")


def wants_auto_base(options: TrainOptions, model_name: str, own_data: bool = False) -> bool:
    """True when this run trains its own base first: ``--base auto``, or the model's default when no base
    is given, the run trains on pairs folders (not on ``own_data`` a script passes), resumes nothing and
    does not start from a checkpoint that holds a base."""
    if options.base is not None:
        return isinstance(options.base, str) and options.base == AUTO  # Path("auto") is a file of that name
    return (DEFAULT_BASE.get(model_name) == AUTO and not own_data and options.resume is None
            and not _holds_base(options.init))


def _holds_base(checkpoint: Path | None) -> bool:
    if checkpoint is None:
        return False
    try:
        return "autohdr.base" in read_header(checkpoint).metadata
    except CheckpointError:
        return False  # the run's own loading of --init says what is wrong with it


def train_on_auto_base(
    options: TrainOptions, train: Callable[..., TrainResult], report: Callable[[str], None] | None
) -> TrainResult:
    """Train the base, then the local model on its edits, within ``options``' budget; returns the local
    model's figures. ``train`` is :func:`autohdr_cli.train.train` (passed in: it calls back here)."""
    if options.resume is not None:
        raise TrainError("--base auto trains a new base, and --resume keeps the one its checkpoint holds: "
                         "drop --base to resume")
    say = report or (lambda line: print(line, file=sys.stderr, flush=True))
    base_file = base_path(options.output)
    base_options = TrainOptions(
        pairs=options.pairs, output=base_file, model=BASE_MODEL, steps=options.steps,
        time_limit=options.time_limit * BASE_SHARE if options.time_limit is not None else None,
        seed=options.seed, split_seed=options.split_seed, device=options.device, val_split=options.val_split,
        val_list=options.val_list, val_every=options.val_every, checkpoint_every=options.checkpoint_every,
        progress=options.progress, overwrite=options.overwrite, stream=options.stream,
        cache_dir=options.cache_dir, workers=options.workers, precision=options.precision, clock=options.clock,
    )
    local_options = dataclasses.replace(options, base=base_file)
    # Refuse before the base's minutes are spent: the local model's files are checked now, not after.
    for run in (base_options, local_options):
        in_the_way = files_in_the_way(run)
        if in_the_way:
            raise TrainError(f"{in_the_way[0]}: already exists; give --overwrite to replace it (and the run's "
                             "other files), or another -o")
    share = f"{BASE_SHARE:.0%} of the time limit" if options.time_limit is not None else "its own steps"
    say(f"--base auto: training a {BASE_MODEL} first ({share}) -> {base_file}")
    base = train(base_options, report=report)
    if base.stopped_by == "interrupted":
        return base
    if options.time_limit is not None:
        local_options = dataclasses.replace(local_options, time_limit=max(options.time_limit - base.seconds, 1.0))
    say(f"--base auto: now {options.model} on the {BASE_MODEL}'s edits")
    return train(local_options, report=report)
