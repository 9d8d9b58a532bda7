"""Training: one loop for every backend, on before/after pairs or synthetically degraded photos.

The loop knows nothing about the model beyond the contract: a registered ``nn.Module`` whose
``training_loss(source, target, looks)`` returns ``(loss, {name: float})``. Under ``torchrun`` it runs as
DistributedDataParallel (gloo on CPU, nccl on CUDA) with the same command line; ``--batch`` is per process.

Resuming: next to every checkpoint ``FILE`` the loop writes ``FILE.state`` (``torch.save`` of plain
tensors and numbers: optimizer state, step, elapsed time, the run's settings), loaded back with
``weights_only=True``. There is no RNG state to store: torch's generator is re-seeded from
(seed, rank, step) at every step, so a resumed run draws exactly the batches, crops and dropout masks
the uninterrupted run would have, and ``--resume`` continues it bit for bit on the same machine.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from . import metrics
from .cascade import (
    NONE as BASE_NONE,
    TEACHER_MIX,
    teacher_variation_count,
    train_on_auto_base,
    train_with_auto_teacher,
    wants_auto_base,
    wants_auto_teacher,
)
from .checkpoint import (
    DEFAULT_WEIGHTS_DIR,
    CheckpointError,
    file_sha256,
    load_checkpoint,
    model_digest,
    read_header,
    save_checkpoint,
)
from .ema import WeightAverage
from .imageio import atomic_write_bytes
from .lpips import MIN_SIDE as LPIPS_MIN_SIDE, LPIPSReference
from .models import MODELS, build, can_be_base, make_config, name_of, resolve_preset
from .models.ip2p import ModelUnavailable
from .distributed import pick_device, process_group, shared_elapsed
from .schedule import SCHEDULES, StepClock, forward_seed, learning_rate
from .pairs import PairsError, read_stem_list
from .train_options import (  # the names scripts and tests import from here stay importable
    CROP_KINDS,
    DEFAULT_CROPS,
    DEFAULT_EMA,
    DEFAULT_LR,
    DEFAULT_PERCEPTUAL,
    DEFAULT_SCHEDULE,
    DEFAULT_STEPS,
    DEFAULT_TRAIN_SIZE,
    FALLBACK_TRAIN_SIZE,
    RECIPE_FIELDS,
    TrainOptions,
    TrainResult,
    checkpoint_interval,
    files_in_the_way,
    parse_duration,  # noqa: F401 - the CLI and scripts import it from here
    stage1_log,
    stage1_path,
    state_path,
)
from .train_data import (
    IN_MEMORY_BYTES,
    MixedData,
    NativeCrops,
    PairData,
    SourceEdit,
    StepBatches,
    TrainError,
    TrainingData,
    decode_split,
    decoded_bytes,
    default_cache_dir,
    split_folders,
    step_batches,
    stream_split,
    teacher_variations,
)


# ------------------------------------------------------------------------------------------- helpers


class _LossModule(nn.Module):
    """Wraps a model so that DistributedDataParallel's forward is its training loss."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, source: torch.Tensor, target: torch.Tensor, looks: torch.Tensor, *extra: torch.Tensor):
        """The wrapped model's ``training_loss`` (DDP syncs gradients of whatever runs in forward)."""
        return self.model.training_loss(source, target, looks, *extra)


def evaluate_pairs(
    model: nn.Module | None, data: PairData, device: torch.device
) -> dict[str, float]:
    """Mean PSNR, SSIM, ΔE2000 and LPIPS of ``model`` (None = identity) over whole validation pairs.

    LPIPS is taken as ``autohdr evaluate`` takes it (a copy of at most 1024 px), and left out when a
    pair is too small for it (under 32 px a side).
    """
    totals = {"psnr": 0.0, "ssim": 0.0, "delta_e": 0.0, "lpips": 0.0}
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    with torch.no_grad():
        for source, target, look in zip(data.sources, data.targets, data.looks):
            source, target = source[None].to(device), target[None].to(device)
            if model is None:
                prediction = source
            else:
                if hasattr(model, "set_style") and getattr(model.config, "num_styles", 1) > 1:
                    model.set_style([1.0 if i == look else 0.0 for i in range(model.config.num_styles)])
                forward = getattr(model, "validation_forward", None)
                prediction = (forward(source, target) if forward else model(source)).clamp(0.0, 1.0)
            totals["psnr"] += float(metrics.psnr(prediction, target).clamp(max=100.0))
            totals["ssim"] += float(metrics.ssim(prediction, target))
            totals["delta_e"] += float(metrics.delta_e2000(prediction, target))
            distance = LPIPSReference(target[0]).distance(prediction[0])
            totals["lpips"] += math.nan if distance is None else distance
    if math.isnan(totals["lpips"]):
        del totals["lpips"]
    if model is not None:
        model.train(was_training)
    return {name: value / max(1, len(data)) for name, value in totals.items()}


# ----------------------------------------------------------------------------------------------- run


class _Progress:
    """A rich progress bar on stderr with the loss and the latest validation PSNR; silent when off."""

    def __init__(self, enabled: bool, total: int | None, start: int):
        self._progress = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  val PSNR {task.fields[psnr]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.__enter__()
        self._task = self._progress.add_task("train", total=total, completed=start, loss="-", psnr="-")

    def update(self, step: int, loss: float, psnr: float | None, total: int | None = None) -> None:
        """Show ``step`` steps done of ``total`` (the latest estimate), the latest loss and validation PSNR."""
        if self._progress is not None:
            fields = {"loss": f"{loss:.4f}"}
            if psnr is not None:
                fields["psnr"] = f"{psnr:.2f} dB"
            if total is not None:
                fields["total"] = total
            self._progress.update(self._task, completed=step, **fields)

    def close(self) -> None:
        """Remove the bar."""
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None


def _write_state(
    path: Path, optimizer: torch.optim.Optimizer, step: int, options: TrainOptions, recipe: dict, elapsed: float,
    checkpoint_sha256: str, raw: dict[str, torch.Tensor] | None = None,
) -> None:
    """Save what --resume needs beyond the weights, atomically, next to the checkpoint.

    Written after the checkpoint, with the checkpoint's SHA-256: a crash between the two writes leaves a
    new checkpoint beside the old state, which --resume then refuses instead of mixing them.
    ``budget`` is the run's planned end in seconds (None: steps alone), so that a resumed run keeps the
    same schedule; ``raw`` holds the raw weights when the checkpoint holds their average (EMA).
    """
    import io

    state = {"step": step, "optimizer": optimizer.state_dict(), "recipe": recipe, "seconds": elapsed,
             "budget": options.time_limit, "checkpoint_sha256": checkpoint_sha256}
    if raw is not None:
        state["raw"] = raw
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(state_path(path), buffer.getvalue())


def _recipe(options: TrainOptions) -> dict:
    """The settings a resumed run must share with the interrupted one. The held-out list counts by the
    pairs it names (sorted stems), so a moved list file still matches and an edited one does not."""
    recipe = {name: getattr(options, name) for name in RECIPE_FIELDS}
    recipe["base"] = options.base_edit.key if options.base_edit is not None else None
    recipe["teacher"] = options.teacher_edit.key if options.teacher_edit is not None else None
    if options.teacher_edit is not None:  # where a resumed run finds it again (not compared)
        recipe["teacher_file"] = str(Path(options.teacher).resolve())
    try:
        recipe["val_list"] = sorted(read_stem_list(options.val_list)) if options.val_list is not None else None
    except PairsError as e:
        raise TrainError(str(e)) from None
    return recipe


def _read_state(path: Path) -> dict:
    """Load a training state written by :func:`_write_state`; TrainError if missing or damaged."""
    file = state_path(path)
    if not file.is_file():
        raise TrainError(f"{path}: no training state ({file.name}) next to it, so it cannot be resumed exactly")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the state is unusable
        raise TrainError(f"{file}: damaged training state ({str(e).strip().splitlines()[0] if str(e).strip() else e!r})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or not isinstance(state.get("optimizer"), dict) \
            or not isinstance(state.get("recipe"), dict):
        raise TrainError(f"{file}: damaged training state (not one autohdr wrote)")
    return state


def _checkpoint_step(path: Path) -> str:
    """The step a checkpoint's metadata says it was saved at, as text (``?`` when it does not say)."""
    try:
        steps = json.loads(read_header(path).metadata.get("autohdr.training") or "{}").get("steps", "?")
    except (CheckpointError, ValueError, AttributeError):
        return "?"
    return str(steps)


def _format_metric(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.3f}"


def print_summary(validation: dict[str, dict[str, float]], count: int) -> None:
    """Print the validation table (identity vs the trained model) to stderr."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"validation ({count} pair{'s' if count != 1 else ''})")
    for column in ("", "PSNR dB", "SSIM", "ΔE2000", "LPIPS"):
        table.add_column(column, justify="right" if column else "left")
    for name, values in validation.items():
        table.add_row(name, *(_format_metric(values.get(key, math.nan)) for key in ("psnr", "ssim", "delta_e", "lpips")))
    Console(stderr=True).print(table)


def train(
    options: TrainOptions,
    data: TrainingData | None = None,
    validation: PairData | None = None,
    description: dict | None = None,
    report: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a model as ``options`` say and write its checkpoint; returns the run's figures.

    By default the data are the pairs folders in ``options.pairs`` (one look per folder, split into
    training and validation pairs). Scripts can pass their own ``data`` (e.g. :class:`DegradedPhotos`)
    with a ``validation`` set and a ``description`` stored in the checkpoint. ``report`` gets one-line
    messages (problems found, the split); by default they go to stderr on the main process.
    """
    if options.init is not None and options.resume is None:
        options = _with_init_config(options)
    try:
        model_name, config = resolve_preset(options.model, options.config)
    except KeyError as e:
        raise TrainError(str(e.args[0])) from None
    if wants_auto_base(options, model_name, own_data=data is not None):
        if data is not None:
            raise TrainError("--base applies to pairs folders; this run was given its own training data")
        with process_group(_check_before_a_cascade(options, model_name, config)):
            return train_on_auto_base(options, train, report)
    if wants_auto_teacher(options, model_name, own_data=data is not None):
        with process_group(_check_before_a_cascade(options, model_name, config)):
            return train_with_auto_teacher(options, train, report)
    if isinstance(options.base, str) and options.base == BASE_NONE:  # not even the model's default base
        options = dataclasses.replace(options, base=None)
    if isinstance(options.teacher, str) and options.teacher == BASE_NONE:
        options = dataclasses.replace(options, teacher=None)
    options = _resolved(options, model_name, config)
    options = _with_base(options)
    if options.base_edit is not None and data is not None:
        raise TrainError("--base applies to pairs folders; this run was given its own training data")
    options = _with_teacher(options)
    if options.teacher_edit is not None and data is not None:
        raise TrainError("--teacher applies to pairs folders; this run was given its own training data")
    in_the_way = files_in_the_way(options)
    if in_the_way:
        raise TrainError(f"{in_the_way[0]}: already exists; give --overwrite to replace it (and the run's other "
                         f"files), --resume {options.output} to continue it, or another -o")
    device = _device(options)
    with process_group(device) as place:
        say = report or (lambda line: print(line, file=sys.stderr, flush=True))
        if not place.main:
            say = lambda line: None  # noqa: E731 - one process speaks for the job
        if options.model == "diffir":
            return _train_diffir(options, data, validation, description, device, place, say)
        return _train(options, data, validation, description, device, place, say)


def _resolved(options: TrainOptions, model_name: str, config: dict) -> TrainOptions:
    """``options`` for ``model_name`` with ``config``, the perceptual weight, learning rate and the
    settings left to the model filled in (TrainError for what cannot be)."""
    weight = options.perceptual
    if weight is None and "perceptual_weight" not in options.config and options.crop >= LPIPS_MIN_SIDE:
        weight = DEFAULT_PERCEPTUAL.get(model_name)
    config = _with_perceptual(model_name, config, weight)
    lr = options.lr if options.lr is not None else getattr(MODELS.get(model_name), "default_lr", DEFAULT_LR)
    return _with_defaults(dataclasses.replace(options, model=model_name, config=config, lr=lr))


def _check_before_a_cascade(options: TrainOptions, model_name: str, config: dict) -> torch.device:
    """The checks of the run the user asked for, made before a cascade trains its localtone: a bad
    option, ``--config`` or pairs folder is then that run's one-line error, not the localtone's, and no
    minutes are spent first. The device first, as every command checks it; returns it."""
    device = _device(options)
    resolved = _resolved(options, model_name, config)
    _check_options(resolved)
    split_folders(options.pairs, options.val_split, options.validation_seed, options.val_list).check()
    return device


def _device(options: TrainOptions) -> torch.device:
    """The device this process trains on (under torchrun, its own GPU)."""
    return pick_device(options.device, int(os.environ.get("LOCAL_RANK", "0")))


def _with_base(options: TrainOptions) -> TrainOptions:
    """Load the global model the run learns on top of: ``--base``, else the base held by the checkpoint
    it resumes or starts from (a local model trained with ``--base`` keeps it when fine-tuned)."""
    if options.base is None:
        held = [p for p in (options.resume, options.init) if p is not None and "autohdr.base" in _metadata(p)]
        if not held:
            return options
        base, label = _load_model(held[0]).base, f"the base of {Path(held[0]).name}"
    else:
        base, label = _load_model(options.base), Path(options.base).name
        if not can_be_base(base):
            raise TrainError(f"--base {options.base}: holds a {name_of(base)} model; the base is one that edits "
                             "the whole photo at once (lut, cube, nilut, oneshot, localtone), applied first")
    cls = MODELS[options.model]
    if hasattr(cls, "predict_lut") or getattr(cls, "needs_base", False):
        raise TrainError(f"--base is for the local models (nafnet, diffir), not --model {options.model}")
    return dataclasses.replace(options, base_edit=SourceEdit(base.eval(), model_digest(base), label))


def _with_teacher(options: TrainOptions) -> TrainOptions:
    """Load ``--teacher``, or (resuming with none given) the teacher the resumed run was taught by."""
    teacher = options.teacher
    if teacher is None and options.resume is not None and options.model == "lut":
        _load_model(options.resume)  # a damaged checkpoint is refused before its state is read, as _train does
        teacher = _read_state(options.resume)["recipe"].get("teacher_file")
    if teacher is None:
        return options
    if options.model != "lut":
        raise TrainError(f"--teacher is for --model lut (the model it was measured on), not --model {options.model}")
    try:
        model = _without_base(load_checkpoint(Path(teacher)).model)
    except CheckpointError as e:
        hint = "" if options.teacher is not None else " (the resumed run's teacher; --teacher FILE if it moved)"
        raise TrainError(f"--teacher {e}{hint}") from None
    return dataclasses.replace(options, teacher=Path(teacher),
                               teacher_edit=SourceEdit(model.eval(), model_digest(model), Path(teacher).name))


def _metadata(path: Path) -> dict[str, str]:
    try:
        return read_header(path).metadata
    except CheckpointError as e:
        raise TrainError(str(e)) from None


def _without_base(model: nn.Module) -> nn.Module:
    """A loaded local model without the base its checkpoint holds: training applies the base to the data."""
    if "base" in model._modules:
        del model.base
    return model


def _with_perceptual(model_name: str, config: dict, weight: float | None) -> dict:
    """``config`` with ``perceptual_weight`` set to ``weight`` (unchanged when None)."""
    if weight is None:
        return config
    having = sorted(name for name, cls in MODELS.items()
                    if "perceptual_weight" in {f.name for f in dataclasses.fields(cls.config_class)})
    if model_name not in having:
        raise TrainError(f"--perceptual: model {model_name!r} has no perceptual term (models with one: {', '.join(having)})")
    if not weight >= 0:
        raise TrainError("--perceptual must be >= 0 (0 = no perceptual term)")
    return {**config, "perceptual_weight": weight}


def _with_defaults(options: TrainOptions) -> TrainOptions:
    """Fill in the settings left to the model and the budget: steps, train size, EMA, crops, schedule."""
    steps = options.steps if options.steps is not None or options.time_limit is not None else DEFAULT_STEPS
    measured_at = _size_the_model_measures_at(options)
    if measured_at is not None and options.train_size not in (None, measured_at):
        raise TrainError(
            f"--train-size {options.train_size}: model {options.model!r} measures neighbourhoods on photos "
            f"{measured_at} px long, so it trains at that size (change its context_size in --config instead)"
        )
    if measured_at is not None:
        train_size = measured_at
    else:
        train_size = options.train_size or DEFAULT_TRAIN_SIZE.get(options.model, FALLBACK_TRAIN_SIZE)
    ema = options.ema if options.ema is not None else DEFAULT_EMA.get(options.model, 0.0)
    crops = options.crops or DEFAULT_CROPS.get(options.model, "resized")
    if crops not in CROP_KINDS:
        raise TrainError(f"--crops must be one of {', '.join(CROP_KINDS)}, not {crops!r}")
    schedule = options.schedule or DEFAULT_SCHEDULE.get(options.model, "cosine")
    if schedule not in SCHEDULES:
        raise TrainError(f"--schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
    return dataclasses.replace(options, steps=steps, train_size=train_size, ema=ema, crops=crops, schedule=schedule)


def _size_the_model_measures_at(options: TrainOptions) -> int | None:
    """The decode size a model needs its training photos at (LocalTone: its ``context_size``), or None."""
    field_name = getattr(MODELS.get(options.model), "train_size_field", None)
    if field_name is None:
        return None
    try:
        return int(getattr(make_config(options.model, options.config), field_name))
    except (TypeError, ValueError):
        return None  # a bad --config is reported by _check_options


def _check_options(options: TrainOptions) -> None:
    if options.model not in MODELS or not hasattr(MODELS[options.model], "training_loss"):
        trainable = sorted(name for name, cls in MODELS.items() if hasattr(cls, "training_loss"))
        raise TrainError(f"unknown or untrainable model {options.model!r} (trainable: {', '.join(trainable)})")
    for name in ("steps", "batch", "crop", "train_size", "val_every", "checkpoint_every"):
        if getattr(options, name) is not None and getattr(options, name) < 1:
            raise TrainError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= options.val_split < 1:
        raise TrainError("--val-split must be in [0, 1)")
    if options.lr <= 0:
        raise TrainError("--lr must be positive")
    if options.clip_grad is not None and options.clip_grad < 0:
        raise TrainError("--clip-grad must be >= 0 (0 = no clipping)")
    if options.weight_decay < 0:
        raise TrainError("--weight-decay must be >= 0")
    if not 0 <= (options.ema or 0.0) < 1:
        raise TrainError("--ema is a decay in [0, 1), e.g. 0.999 (0 = off)")
    if options.workers is not None and options.workers < 0:
        raise TrainError("--workers must be >= 0")
    if options.precision not in ("auto", "fp32", "bf16"):
        raise TrainError("--precision is auto, fp32 or bf16")
    if options.stage is not None and (options.model != "diffir" or options.stage not in (1, 2)):
        raise TrainError("--stage is 1 or 2, and only for --model diffir (the two-stage model)")
    if options.config.get("perceptual_weight") and options.crop < LPIPS_MIN_SIDE:
        raise TrainError(f"--perceptual needs --crop {LPIPS_MIN_SIDE} or more (LPIPS's smallest input)")
    try:  # types and bounds of --config, before any pair is read
        make_config(options.model, options.config)
    except (TypeError, ValueError) as e:
        raise TrainError(f"bad config for model {options.model!r}: {e}") from None
    # A model that needs more than torch (ip2p: an extra, a base model) says so before any decoding.
    prepare = getattr(MODELS[options.model], "before_training", None)
    if prepare is not None and options.resume is None:
        try:
            prepare(options.config)
        except ModelUnavailable as e:
            raise TrainError(str(e)) from None


def _load_model(path: Path) -> nn.Module:
    """A checkpoint's model, for training on; its problems are TrainErrors."""
    try:
        return load_checkpoint(path).model
    except CheckpointError as e:
        raise TrainError(str(e)) from None


def _load_init(path: Path):
    try:
        return load_checkpoint(path)
    except CheckpointError as e:
        raise TrainError(f"--init {e}") from None


def _with_init_config(options: TrainOptions) -> TrainOptions:
    """The options of a run that starts from ``--init``: its model, its config under the given ``--config``.

    The starting checkpoint must hold the same model (``nafnet-base`` and ``nafnet`` are both nafnet);
    its config is the base, so the shapes match unless ``--config`` changes them.
    """
    start = _load_init(options.init)
    wanted = options.model.partition("-")[0]
    if start.name != wanted:
        raise TrainError(f"--init {options.init}: holds a {start.name} model; it cannot start --model {options.model}")
    return dataclasses.replace(options, model=start.name, config={**start.config, **options.config})


def _start_from_init(model: nn.Module, options: TrainOptions, say: Callable[[str], None]) -> Path | None:
    """Copy ``--init``'s weights into a freshly built model, or say why the run starts cold instead.
    Returns the file started from (None: cold)."""
    weights = _without_base(_load_init(options.init).model).state_dict()
    cold = f"warning: --init {options.init}: {{count}} tensor(s) differ in shape from this --config " \
           "(first: {first}); starting from random weights instead"
    return _copy_start(model, weights, Path(options.init), cold, f"starting from {options.init}", say)


def pretrained_start_path(model_name: str) -> Path:
    """Where the shipped pretrained start of ``model_name`` lives (it may not exist)."""
    return DEFAULT_WEIGHTS_DIR / f"{model_name}-pretrained.safetensors"


def _start_from_pretrained(model: nn.Module, options: TrainOptions, say: Callable[[str], None]) -> Path | None:
    """Copy the model's shipped pretrained start into a freshly built model when its shapes fit this
    config (a --config that changes shapes starts cold, with a note). Returns the file started from."""
    path = pretrained_start_path(options.model)
    if not path.is_file():
        return None
    try:
        weights = load_checkpoint(path).model.state_dict()
    except CheckpointError as e:
        raise TrainError(f"the pretrained start: {e} (--init none starts cold)") from None
    cold = f"note: this --config changes {{count}} tensor shape(s) of the pretrained start {path.name} " \
           "(first: {first}); starting from random weights"
    started = f"starting from the pretrained start {path.name} (--init none for a cold start)"
    return _copy_start(model, weights, path, cold, started, say)


def _copy_start(model: nn.Module, weights: dict[str, torch.Tensor], path: Path, cold: str, started: str,
                say: Callable[[str], None]) -> Path | None:
    """Load ``weights`` into ``model`` and say ``started`` (returns ``path``), or, when any tensor's
    name or shape differs, leave the model as built and say ``cold`` (returns None). A model's
    ``adapt_start`` first fits what it can (a NAFNet given neighbourhood maps widens a start without)."""
    adapt = getattr(model, "adapt_start", None)
    if adapt is not None:
        weights = adapt(weights)
    own = model.state_dict()
    differing = sorted(k for k in own.keys() | weights.keys()
                       if k not in own or k not in weights or own[k].shape != weights[k].shape)
    if differing:
        say(cold.format(count=len(differing), first=differing[0]))
        return None
    model.load_state_dict(weights)
    say(started)
    return path


def _build_model(
    options: TrainOptions, look_names: list[str], start_from: Path | None = None, say: Callable[[str], None] = print
) -> nn.Module:
    """A fresh model (seeded, or from ``--init``), the one being resumed, or (DiffIR) a stage-1 model to
    start stage 2 from."""
    if start_from is not None:
        try:
            model = _without_base(load_checkpoint(start_from).model)
        except CheckpointError as e:
            raise TrainError(str(e)) from None
        model.begin_stage2()
        if "perceptual_weight" in options.config:  # --perceptual given for stage 2 alone
            model.config = dataclasses.replace(model.config, perceptual_weight=options.config["perceptual_weight"])
        return model
    if options.resume is not None:
        return _without_base(_load_model(options.resume))
    config = dict(options.config)
    fields = {f.name for f in dataclasses.fields(MODELS[options.model].config_class)}
    # A model that holds several looks gets one per pairs folder, named after the folder.
    if "num_styles" in fields and "num_styles" not in config:
        config["num_styles"] = max(1, len(look_names))
        if "style_names" in fields and "style_names" not in config and len(look_names) == config["num_styles"]:
            config["style_names"] = tuple(look_names)
    torch.manual_seed(options.seed)
    try:
        model = build(options.model, config)
    except ModelUnavailable as e:
        raise TrainError(str(e)) from None
    except (TypeError, ValueError) as e:
        raise TrainError(f"bad config for model {options.model!r}: {e}") from None
    if options.init is not None:
        model.started_from = _start_from_init(model, options, say)
    elif options.pretrained_start:
        model.started_from = _start_from_pretrained(model, options, say)
    return model


class CSVLog:
    """The run's CSV log: one row per step, validation columns filled on validation steps.

    Rows are buffered and appended in batches. A resumed run drops rows logged after the checkpoint
    it resumes from (they will be logged again) and keeps the columns the log started with.
    """

    def __init__(self, path: Path, enabled: bool, has_validation: bool, resume_step: int | None):
        self.path, self.enabled, self.has_validation = path, enabled, has_validation
        self.fields: list[str] | None = None
        self.rows: list[dict] = []
        if enabled and path.exists():
            if resume_step is None:
                path.unlink()
            else:
                self._truncate(resume_step)

    def _truncate(self, step: int) -> None:
        with open(self.path, newline="") as handle:
            rows = list(csv.reader(handle))
        if rows:
            self.fields = rows[0]
            kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= step]
            with open(self.path, "w", newline="") as handle:
                csv.writer(handle).writerows(kept)

    def add(self, row: dict) -> None:
        """Buffer one row; written out on validation steps and every 50 rows."""
        self.rows.append(row)
        if "val_psnr" in row or len(self.rows) >= 50:
            self.flush()

    def flush(self) -> None:
        """Append the buffered rows to the file."""
        if not self.enabled or not self.rows:
            return
        new_file = not self.path.exists()
        if not self.fields:
            columns = [k for k in self.rows[0] if not k.startswith("val_")]
            self.fields = columns + (["val_psnr", "val_ssim", "val_delta_e", "val_lpips"] if self.has_validation else [])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerows(self.rows)
        self.rows.clear()


def _check_resume(state: dict, options: TrainOptions, recipe: dict) -> None:
    """Refuse to resume a checkpoint that is not the one its state was saved with, or with settings
    that would make the run differ from the interrupted one."""
    recorded = state.get("checkpoint_sha256")
    if recorded is not None:
        try:
            actual = file_sha256(options.resume)
        except CheckpointError as e:
            raise TrainError(str(e)) from None
        if actual != recorded:
            raise TrainError(
                f"{options.resume} holds step {_checkpoint_step(options.resume)} but {state_path(options.resume).name} "
                f"holds step {state['step']}: they were not saved together (a crash between the two writes, or a "
                "replaced file), so the run cannot continue exactly; start it again with --overwrite"
            )
    for name, value in recipe.items():
        stored = state["recipe"].get(name)
        if name == "val_list" and name in state["recipe"] and stored != value:  # a random split counts too
            raise TrainError(
                f"--val-list {options.val_list or '(none)'} holds out other pairs than the resumed run did "
                f"({', '.join(stored) if stored else 'a random --val-split'}); resume with the same list"
            )
        if name == "teacher_file":
            continue
        if name == "teacher" and stored != value:
            raise TrainError(f"--teacher {options.teacher or '(none)'}: another teacher than the resumed run's "
                             f"({state['recipe'].get('teacher_file') or 'none'}); resume without --teacher to keep its own")
        if name == "base" and stored is not None and stored != value:
            raise TrainError(f"--base {options.base}: another model than the base the resumed run was trained on; "
                             "resume without --base to keep its own")
        if stored is not None and stored != value:
            raise TrainError(
                f"--{name.replace('_', '-')} {value} differs from the resumed run's {stored}; "
                "resume with the same settings to continue it exactly"
            )


def _pairs_data(options: TrainOptions, say: Callable[[str], None]) -> tuple[PairData, PairData, dict, list[str]]:
    """Training and validation pairs from the pairs folders, problems listed before any decoding."""
    split = split_folders(options.pairs, options.val_split, options.validation_seed, options.val_list)
    for line in split.problems:
        say(f"{line} (skipped)")
    split.check()
    description = split.description(options.val_split, options.validation_seed)
    val_names = description["val_pairs"]
    say(
        f"training on {description['train_pairs']} pairs, validating on {len(val_names)}"
        + (f": {', '.join(val_names)}" if val_names else "")
    )
    if options.base_edit is not None:
        say(f"learning what is left after {options.base_edit.label}: it edits every source (whole photo) first")
    count = description["train_pairs"] + len(val_names)
    stream = options.stream
    if stream is None:
        stream = decoded_bytes(count, options.train_size) > IN_MEMORY_BYTES
    if stream:
        cache = options.cache_dir or default_cache_dir()
        say(f"streaming the pairs from the cache in {cache} (decoded at {options.train_size} px on first use)")
        data, validation = stream_split(split, options.train_size, cache, options.base_edit)
    else:
        data, validation = decode_split(split, options.train_size, options.base_edit)
    if options.teacher_edit is not None:
        count = teacher_variation_count(len(data), data.sources[0].numel())
        say(f"and on {count} varied training photos labelled by the teacher {options.teacher_edit.label} "
            f"({TEACHER_MIX:.0%} of each batch)")
        taught = teacher_variations(data.sources, data.targets, options.teacher_edit, count, options.seed)
        if options.crops == "native":
            data, taught = NativeCrops(data), NativeCrops(taught)
        return MixedData([data, taught], [1.0 - TEACHER_MIX, TEACHER_MIX]), validation, description, split.look_names()
    if options.crops == "native":
        data = NativeCrops(data)
    return data, validation, description, split.look_names()


def _with_resumed_budget(options: TrainOptions, state: dict | None, say: Callable[[str], None]) -> TrainOptions:
    """A resumed time-limited run keeps the budget it was planned with, so its schedule goes on unchanged."""
    budget = state.get("budget") if state else None
    if budget is None or budget == options.time_limit:
        return options
    if options.time_limit is not None:
        say(f"resuming with the run's own time budget of {budget:.0f} s (not --time-limit {options.time_limit:.0f} s)")
    return dataclasses.replace(options, time_limit=float(budget))


def _autocast(device: torch.device, precision: str):
    """bf16 autocast where ``precision`` asks for it (``auto``: on CUDA only; on the CPU it is ~4x slower)."""
    import contextlib

    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bring_what_the_model_reads(model: nn.Module, data: TrainingData) -> None:
    """Tell ``data`` what ``model`` reads besides its crops: whole photos (``prior_size``) and windows of
    maps measured on them (``source_maps``); TrainError when the data cannot bring the maps."""
    if hasattr(data, "whole_size"):
        data.whole_size = getattr(model, "prior_size", 0)
    source_maps = getattr(model, "source_maps", None)
    if source_maps is not None:
        if not hasattr(data, "source_maps"):
            raise TrainError(
                "this model reads the brightness around each crop in its whole photo, which only windows at "
                "the photos' own scale bring (--crops native, on pairs folders)"
            )
        data.source_maps = source_maps


def _train(options, data, validation, description, device, place, say, start_from: Path | None = None) -> TrainResult:
    _check_options(options)
    state = None
    recipe = _recipe(options)  # read once: every save records the held-out list the run started with
    if options.resume is not None:
        _load_model(options.resume)  # a damaged checkpoint is refused before its state is even read
        state = _read_state(options.resume)
        _check_resume(state, options, recipe)
    options = _with_resumed_budget(options, state, say)
    look_names: list[str] = []
    if data is None:
        data, validation, description, look_names = _pairs_data(options, say)
    validation = validation or PairData([], [], [], [])
    description = dict(description or {})

    model = _build_model(options, look_names, start_from, say).to(device).train()
    # The convolutional models train channels-last, on the CPU as on the GPU (a step 1.5-1.7x faster on
    # the CPU: benchmarks/bench_train_step.py); a LUT model's 5-D tables have no channels-last form.
    channels_last = getattr(model, "channels_last_training", False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    bring_what_the_model_reads(model, data)
    # The checkpoint holds the average of the weights (EMA) when on; the state keeps the raw ones to resume.
    average = WeightAverage(model, options.ema) if options.ema else None
    if state is not None and "raw" in state:
        model.load_state_dict(state["raw"])
    # Frozen parts (DiffIR's stage-1 encoder in stage 2) stay out of the optimizer.
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=options.lr, weight_decay=options.weight_decay)
    clip = options.clip_grad if options.clip_grad is not None else float(getattr(model, "clip_grad_norm", 0.0))
    start = 0
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise TrainError(f"{state_path(options.resume)}: does not fit the checkpoint's model ({e})") from None
        start = int(state["step"])
    shipped = average.model if average is not None else model  # what validation scores and the checkpoint holds
    loss_module: nn.Module = _LossModule(model)
    if place.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        loss_module = DistributedDataParallel(loss_module, device_ids=[device.index] if device.type == "cuda" else None)

    log = CSVLog(options.log_path(), place.main, bool(len(validation)), start if state is not None else None)

    def save(step: int, elapsed: float, final: dict | None = None) -> None:
        if not place.main:
            return
        record = dict(description)
        record.update(
            model=options.model, steps=step, seconds=round(elapsed, 1), batch=options.batch,
            world_size=place.world_size, lr=options.lr, weight_decay=options.weight_decay, crop=options.crop,
            clip_grad=clip, ema=options.ema or 0.0,
            train_size=options.train_size, seed=options.seed,
        )
        if getattr(model.config, "stage", None) is not None:
            record["stage"] = model.config.stage
        started_from = getattr(model, "started_from", None)
        if started_from is not None:
            record["init"] = Path(started_from).name
        if options.base_edit is not None:
            record["base"] = options.base_edit.label
        if options.teacher_edit is not None:
            record["teacher"] = options.teacher_edit.label
        if final:
            record["validation"] = final
        # Log, checkpoint, then state: after a crash anywhere here, --resume finds a consistent pair or
        # refuses (the log's rows past the checkpoint's step are dropped on resume).
        log.flush()
        digest = save_checkpoint(options.output, shipped, training=record,
                                 base=options.base_edit.model if options.base_edit is not None else None)
        _write_state(options.output, optimizer, step, options, recipe, elapsed, digest,
                     raw=model.state_dict() if average is not None else None)

    timer = StepClock(options.time_limit, options.steps, float(state.get("seconds", 0.0)) if state else 0.0,
                      options.clock)
    # Streamed pairs are read and cropped ahead by worker processes; pairs in memory are cropped in the loop.
    streamed = any(hasattr(part, "cache") for part in [data, *getattr(data, "parts", [])])
    workers = options.workers if options.workers is not None else (2 if streamed else 0)
    batches = step_batches(StepBatches(data, options.batch, options.crop, options.seed, place.rank), start,
                           options.steps, workers, pin_memory=device.type == "cuda")
    progress = _Progress(options.progress and place.main, options.steps, start)
    timer.start()
    step, stopped_by, latest_psnr = start, "steps", None
    interval, last_saved = checkpoint_interval(options.time_limit), time.monotonic()
    try:
        while options.steps is None or step < options.steps:
            elapsed = shared_elapsed(timer.elapsed(), place)  # one clock for all processes: same rates, same stop
            if options.time_limit is not None and elapsed >= options.time_limit:
                stopped_by = "time limit"
                break
            expected = timer.expected_steps(step, elapsed)
            batch = [t.to(device, non_blocking=True) for t in next(batches)]
            if channels_last:
                batch = [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in batch]
            # The step's own random numbers come from (seed, rank, step) alone: resuming redraws them exactly.
            torch.manual_seed(forward_seed(options.seed, place.rank, step))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(
                    options.lr, step, options.steps, elapsed, options.time_limit, options.schedule
                )
            with _autocast(device, options.precision):
                loss, parts = loss_module(*batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            extra = {}
            if clip > 0:
                extra["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(trainable, clip))
            optimizer.step()
            if average is not None:
                average.update(model, step)
            step += 1
            row = {"step": step, "seconds": round(elapsed, 2),
                   "lr": optimizer.param_groups[0]["lr"], "loss": float(loss.detach()), **parts, **extra}
            if place.main and len(validation) and (step % options.val_every == 0 or step == options.steps):
                scores = evaluate_pairs(shipped, validation, device)
                latest_psnr = scores["psnr"]
                row.update({f"val_{k}": v for k, v in scores.items()})
            log.add(row)
            progress.update(step, row["loss"], latest_psnr, expected)
            if (options.steps is None or step < options.steps) and (
                step % options.checkpoint_every == 0 or time.monotonic() - last_saved >= interval
            ):
                save(step, timer.elapsed())
                last_saved = time.monotonic()
    except KeyboardInterrupt:
        stopped_by = "interrupted"
    finally:
        progress.close()
        del batches  # stops the DataLoader's workers
    elapsed = timer.elapsed()
    final: dict[str, dict[str, float]] = {}
    if place.main and len(validation):
        label = getattr(model, "validation_label", options.model)
        # With a base, the validation sources are its edits: the first row is the base alone.
        first = "identity" if options.base_edit is None else f"base ({name_of(options.base_edit.model)})"
        final = {first: evaluate_pairs(None, validation, device), label: evaluate_pairs(shipped, validation, device)}
    save(step, elapsed, final)
    if place.main:
        say(f"{stopped_by}: {step} steps in {elapsed:.0f} s; wrote {options.output} (log {log.path})")
        if final:
            print_summary(final, len(validation))
    if place.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(options.output, step, elapsed, stopped_by, final, list(getattr(data, "names", [])),
                       list(validation.names))


def seconds_per_step(
    model: nn.Module,
    data: TrainingData,
    batch: int,
    crop: int,
    lr: float,
    trials: int = 4,
    autocast: torch.dtype | None = None,
) -> float:
    """Median time of one training step (forward, backward, AdamW) of a throwaway copy of ``model``.

    Scripts fit their step count to a time budget with it, so the learning-rate schedule completes.
    The batches go to the model's device; ``autocast`` (e.g. ``torch.bfloat16``) runs the forward
    pass and the loss under autocast. On CUDA each step is timed to its end (synchronised).
    """
    import copy
    from contextlib import nullcontext

    model = copy.deepcopy(model).train()
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    bring_what_the_model_reads(model, data)
    times = []
    for _ in range(trials + 1):  # the first step pays one-time costs and is dropped
        tensors = [t.to(device) for t in data.sample(batch, crop)]
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext():
            loss, _parts = model.training_loss(*tensors)
        optimizer.zero_grad()
        loss.float().backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


# ----------------------------------------------------------------------------------- DiffIR's stages


def _plan(steps: int | None, seconds: float | None) -> str:
    """A stage's length in words: steps, a time budget, or both."""
    parts = ([f"{steps} steps"] if steps is not None else []) + ([f"{seconds:.0f} s"] if seconds is not None else [])
    return " or ".join(parts)


def _checkpoint_stage(path: Path) -> int:
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as e:
        raise TrainError(str(e)) from None
    if checkpoint.name != "diffir":
        raise TrainError(f"{path}: a {checkpoint.name!r} checkpoint, not diffir")
    return int(checkpoint.model.config.stage)


def _train_diffir(options, data, validation, description, device, place, say) -> TrainResult:
    """DiffIR's two stages: ``--stage 1`` or ``--stage 2`` alone, or both in order (the default).

    Both stages: ``--steps`` and ``--time-limit`` are split evenly (stage 2 gets whatever time stage 1
    left); stage 1 writes ``NAME.stage1.safetensors`` (its own ``.state`` and log) and stage 2 starts
    from it. ``--resume`` takes either stage's checkpoint and goes on from there. ``--stage 2 --resume``
    with a stage-1 checkpoint starts stage 2 from it.
    """
    _check_options(options)
    resumed = _checkpoint_stage(options.resume) if options.resume is not None else None
    if options.stage == 1 and resumed == 2:
        raise TrainError(f"{options.resume}: already at stage 2; resume it with --stage 2 (or without --stage)")
    if options.stage == 2 and options.resume is None:
        raise TrainError("--stage 2 starts from a stage-1 checkpoint: give it with --resume FILE")
    if data is None:
        data, validation, description, _looks = _pairs_data(options, say)
    stage1_config = {**options.config, "stage": 1}
    if options.stage == 1:
        return _train(dataclasses.replace(options, config=stage1_config), data, validation, description, device, place, say)
    if options.stage == 2:
        if resumed == 1:
            say(f"stage 2 of DiffIR, starting from {options.resume}")
            return _train(dataclasses.replace(options, resume=None), data, validation, description, device, place, say,
                          start_from=options.resume)
        return _train(options, data, validation, description, device, place, say)

    first_steps = max(1, options.steps // 2) if options.steps is not None else None
    second_steps = max(1, options.steps - first_steps) if options.steps is not None else None
    half = options.time_limit / 2 if options.time_limit is not None else None
    if resumed == 2:
        return _train(dataclasses.replace(options, steps=second_steps, time_limit=half), data, validation,
                      description, device, place, say)
    first = stage1_path(options.output)
    first_log = stage1_log(options)
    say(f"stage 1 of DiffIR ({_plan(first_steps, half)}, prior read from the targets) -> {first}")
    result = _train(
        dataclasses.replace(options, output=first, steps=first_steps, time_limit=half, config=stage1_config,
                            resume=options.resume if resumed == 1 else None, log=first_log),
        data, validation, description, device, place, say,
    )
    if result.stopped_by == "interrupted":
        return result
    remaining = None
    if options.time_limit is not None:  # stage 2 gets what stage 1 left of the budget (its time, resumes included)
        remaining = max(1.0, options.time_limit - result.seconds)
    say(f"stage 2 of DiffIR ({_plan(second_steps, remaining)}, prior diffused from the source) -> {options.output}")
    return _train(dataclasses.replace(options, steps=second_steps, time_limit=remaining, resume=None),
                  data, validation, description, device, place, say, start_from=first)
