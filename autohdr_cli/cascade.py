"""``train --base auto`` and ``--teacher auto``: a localtone trained first, inside the run's own budget,
then the model the run is for, on top of it (``--base``: a local model learning what is left after it)
or taught by it (``--teacher``: the lut learning from its labels of varied training photos too).

A cascade of two ``train`` runs on the same pairs and validation split: the localtone (``BASE_MODEL``) gets
``BASE_SHARE`` of the time limit, the local model the rest, and the local model's file holds both (as with
``--base FILE``). The base's own checkpoint stays beside the output as ``NAME.base.safetensors`` (a look
of its own, and what a rerun can pass as ``--base``). With ``--teacher auto`` the first run is the
teacher (``TEACHER_SHARE`` of the time limit), kept as ``NAME.teacher.safetensors``; the lut's file
names it in its record but does not hold it (enhancing never runs the teacher).
"""

from __future__ import annotations

import dataclasses
import os
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


#: The model a ``--teacher auto`` run trains first, its share of the time limit, and the share of each
#: batch that is the teacher's labelled variations (the rest: the real pairs). Measured in
#: autohdr_cli/weights/README.md ("The lut taught by a localtone"): a quarter of the budget teaches as
#: well as half (the labels take only how the teacher's edit changes), and leaves the lut more steps.
TEACHER_MODEL = "localtone"
TEACHER_SHARE = 0.25
TEACHER_MIX = 0.5

#: Labelled variations a taught run draws: 8 of each photo, at most 192 in all, and no more than fit
#: ``TEACHER_MEMORY`` bytes at the training size (192 photos 512 px long take about 0.8 GB).
TEACHER_PER_PHOTO = 8
TEACHER_MOST = 192
TEACHER_MEMORY = 1 << 30

#: Models whose real pairs are joined by a teacher's labelled variations unless ``--teacher`` says
#: otherwise (the only model that takes a teacher is the lut). The lut since session 20: within its
#: budget, by source, level or better on every hold-out and seed measured (model card, "The lut taught
#: by a localtone").
DEFAULT_TEACHER: dict[str, str] = {"lut": AUTO}


def teacher_variation_count(photos: int, values_per_photo: int) -> int:
    """How many labelled variations a taught run on ``photos`` training photos of ``values_per_photo``
    float32 values each (as decoded for training) draws: at least one."""
    pair_bytes = 2 * 4 * values_per_photo  # the varied photo and its label
    return max(1, min(TEACHER_PER_PHOTO * photos, TEACHER_MOST, TEACHER_MEMORY // pair_bytes))


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


def teacher_path(output: Path) -> Path:
    """Where ``--teacher auto`` writes its teacher: ``NAME.teacher.safetensors`` beside ``NAME.safetensors``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.teacher{output.suffix}")


def wants_auto_teacher(options: TrainOptions, model_name: str, own_data: bool = False) -> bool:
    """True when this run trains its teacher first: ``--teacher auto``, or the model's default when no
    teacher is given, the run trains on pairs folders and resumes nothing (a resumed run keeps the
    teacher it started with)."""
    if options.teacher is not None:
        return isinstance(options.teacher, str) and options.teacher == AUTO
    return DEFAULT_TEACHER.get(model_name) == AUTO and not own_data and options.resume is None


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
    base_file = base_path(options.output)
    return _first_then(options, dataclasses.replace(options, base=base_file), base_file, BASE_MODEL, BASE_SHARE,
                       "--base auto", f"on the {BASE_MODEL}'s edits", train, report)


def train_with_auto_teacher(
    options: TrainOptions, train: Callable[..., TrainResult], report: Callable[[str], None] | None
) -> TrainResult:
    """Train the teacher, then the model on the real pairs and the teacher's labelled variations, within
    ``options``' budget; returns the model's figures. ``train`` is :func:`autohdr_cli.train.train`."""
    if options.resume is not None:
        raise TrainError("--teacher auto trains a new teacher, and --resume keeps the one its run started with: "
                         "drop --teacher to resume")
    teacher_file = teacher_path(options.output)
    return _first_then(options, dataclasses.replace(options, teacher=teacher_file), teacher_file, TEACHER_MODEL,
                       TEACHER_SHARE, "--teacher auto", f"taught by the {TEACHER_MODEL}", train, report)


def _first_then(options: TrainOptions, second: TrainOptions, first_file: Path, first_model: str, share: float,
                label: str, how: str, train: Callable[..., TrainResult],
                report: Callable[[str], None] | None) -> TrainResult:
    """Train ``first_model`` into ``first_file`` on ``share`` of the budget, then the run ``second``
    (which uses that file) on what is left of it."""
    say = report or (lambda line: print(line, file=sys.stderr, flush=True))
    if int(os.environ.get("RANK", "0")) != 0:
        say = lambda line: None  # noqa: E731 - under torchrun one process speaks for the job
    first = TrainOptions(
        pairs=options.pairs, output=first_file, model=first_model, steps=options.steps,
        time_limit=options.time_limit * share if options.time_limit is not None else None,
        seed=options.seed, split_seed=options.split_seed, device=options.device, val_split=options.val_split,
        val_list=options.val_list, val_every=options.val_every, checkpoint_every=options.checkpoint_every,
        progress=options.progress, overwrite=options.overwrite, stream=options.stream,
        cache_dir=options.cache_dir, workers=options.workers, precision=options.precision, clock=options.clock,
    )
    # Refuse before the first model's minutes are spent: the second run's files are checked now, not after,
    # and first, so a rerun of the same command names its output (as a run without a cascade does).
    for run in (second, first):
        in_the_way = files_in_the_way(run)
        if in_the_way:
            resume = f"--resume {options.output} to continue it, " if run is second else ""
            raise TrainError(f"{in_the_way[0]}: already exists; give --overwrite to replace it (and the run's "
                             f"other files), {resume}or another -o")
    planned = f"{share:.0%} of the time limit" if options.time_limit is not None else "its own steps"
    say(f"{label}: training a {first_model} first ({planned}) -> {first_file}")
    result = train(first, report=report)
    if result.stopped_by == "interrupted":
        return result
    if options.time_limit is not None:
        second = dataclasses.replace(second, time_limit=max(options.time_limit - result.seconds, 1.0))
    say(f"{label}: now {options.model} {how}")
    return train(second, report=report)
