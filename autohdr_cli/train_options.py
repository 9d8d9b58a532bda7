"""What one training run is told and what it reports: its options, defaults, the files it writes.

Kept apart from the loop in ``train.py`` so that ``cascade.py`` (and scripts) can build a run's options
without importing the loop.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .train_data import SourceEdit

def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90``, ``90s``, ``10m``, ``1.5h`` or ``1h30m``; raises ValueError."""
    cleaned = text.strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", cleaned)
    if not cleaned or parts is None or not any(parts.groups()):
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 10m, 1h30m)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return total


#: The AdamW learning rate of a model that does not name its own ``default_lr``.
DEFAULT_LR = 1e-3

#: Settings that decide what a run computes; a resumed run must use the same ones.
RECIPE_FIELDS = (
    "model", "batch", "lr", "weight_decay", "seed", "split_seed", "val_split", "crop", "train_size", "clip_grad",
    "ema", "crops", "schedule",
)

#: Optimizer steps of a run given neither ``--steps`` nor ``--time-limit``.
DEFAULT_STEPS = 2000

#: Long side pairs are decoded at when ``--train-size`` is not given: the pairs' own size up to this.
#: Measured at equal budgets (8 and 20 CPU-minutes, DESIGN.md): nafnet on native windows gained 1.0 dB at
#: 1536 px over 512; the lut lost 0.5 dB at 1536 (fewer steps in the time), so it stays at 512. DiffIR
#: trains as NAFNet does since it reads neighbourhood maps, which only native windows carry.
DEFAULT_TRAIN_SIZE = {"nafnet": 1536, "diffir": 1536}
FALLBACK_TRAIN_SIZE = 512

#: How training crops are cut when ``--crops`` is not given: ``resized`` (30-100% of the photo, resized to
#: ``--crop``: the whole photo's composition) or ``native`` (windows at the decoded size: an edit's local
#: parts at the scale they are used at). Models not named here use ``resized``.
DEFAULT_CROPS: dict[str, str] = {"nafnet": "native", "diffir": "native", "localtone": "native"}
#: ``--perceptual`` when it is not given, by model (measured: weights/README.md, "The perceptual loss
#: term"): at 1 x LPIPS and the same 20-minute budget NAFNet scored LPIPS -22% and +0.35 dB, DiffIR
#: LPIPS -8% and ΔE2000 -7% at -0.02 dB. Crops smaller than LPIPS's smallest input train without it.
DEFAULT_PERCEPTUAL: dict[str, float] = {"nafnet": 1.0, "diffir": 1.0}
CROP_KINDS = ("resized", "native")

#: Weight-EMA decay per model when ``--ema`` is not given (0 = off); measured on short runs (DESIGN.md).
DEFAULT_EMA: dict[str, float] = {}

#: The learning rate's shape when ``--schedule`` is not given (``schedule.SCHEDULES``); models not named
#: here use ``cosine``. Measured at 20 CPU-minutes (weights/README.md, "The schedule's shape"): NAFNet's
#: ~280 steps are far from converged, and holding the peak rate gained +0.68 dB (random split) and
#: +0.34 dB (by source), LPIPS -6% and -8%; DiffIR's ~100 steps a stage +1.62 dB, LPIPS -19%.
DEFAULT_SCHEDULE: dict[str, str] = {"nafnet": "wsd", "diffir": "wsd"}


@dataclass
class TrainOptions:
    """Everything one training run needs; the CLI fills it from its options."""

    pairs: list[Path]
    output: Path
    model: str = "lut"
    config: dict = field(default_factory=dict)
    steps: int | None = None  # None: DEFAULT_STEPS, or unbounded under a time limit
    time_limit: float | None = None
    batch: int = 8
    lr: float | None = None  # None: the model's ``default_lr`` (1e-3 for the models without one)
    weight_decay: float = 0.0
    seed: int = 0
    split_seed: int | None = None  # seed of the validation split; None = ``seed``
    device: str = "auto"
    resume: Path | None = None
    val_split: float = 0.2
    val_list: Path | None = None  # hold out exactly the pairs this file names (a whole source)
    init: Path | None = None  # start from this checkpoint's weights (same model), not from random ones
    pretrained_start: bool = True  # with no init: start from the model's shipped pretrained start, if any
    val_every: int = 100
    checkpoint_every: int = 250
    crop: int = 256
    train_size: int | None = None  # None: the model's DEFAULT_TRAIN_SIZE
    crops: str | None = None  # "resized" or "native"; None: the model's DEFAULT_CROPS
    log: Path | None = None
    progress: bool = True
    stage: int | None = None  # DiffIR: 1 or 2 alone; None runs both in order
    clip_grad: float | None = None  # max gradient norm; None = the model's ``clip_grad_norm`` (0 = off)
    perceptual: float | None = None  # weight of the LPIPS loss term; None = the model config's default
    overwrite: bool = False  # replace an existing checkpoint, its .state, log and stage-1 files
    ema: float | None = None  # weight-EMA decay; None = the model's DEFAULT_EMA, 0 = off
    schedule: str | None = None  # "cosine" or "wsd"; None = the model's DEFAULT_SCHEDULE
    base: Path | str | None = None  # a global model's checkpoint applied to each whole photo first; "auto", "none"
    base_edit: SourceEdit | None = field(default=None, repr=False)  # the base, loaded (train() sets it)
    teacher: Path | str | None = None  # lut: a model labelling varied training photos; "auto", "none"
    teacher_edit: SourceEdit | None = field(default=None, repr=False)  # the teacher, loaded (train() sets it)
    stream: bool | None = None  # pairs from the disk cache; None = when they would not fit IN_MEMORY_BYTES
    cache_dir: Path | None = None  # the disk cache; None = default_cache_dir()
    workers: int | None = None  # DataLoader worker processes; None = 2 when streaming, else 0
    precision: str = "auto"  # fp32, bf16 (autocast), or auto: bf16 on CUDA, fp32 on the CPU
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)  # seconds; tests pass a fake one

    @property
    def validation_seed(self) -> int:
        """The seed that draws the validation split: ``split_seed``, or ``seed`` when that is not set."""
        return self.seed if self.split_seed is None else self.split_seed

    def log_path(self) -> Path:
        """Where the CSV log goes: ``--log``, or next to the output as ``NAME.csv``."""
        return self.log or self.output.with_suffix(".csv")


def state_path(checkpoint: str | os.PathLike) -> Path:
    """The training-state file that sits next to checkpoint ``checkpoint`` (``FILE.state``)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".state")


#: Besides every ``--checkpoint-every`` steps, the checkpoint is written after this many seconds of
#: training (a quarter of ``--time-limit`` when that is shorter), so a crash loses minutes, not hours.
CHECKPOINT_SECONDS = 120.0


def checkpoint_interval(time_limit: float | None) -> float:
    """Wall-clock seconds between checkpoints: :data:`CHECKPOINT_SECONDS`, or a quarter of the time limit."""
    return CHECKPOINT_SECONDS if time_limit is None else min(CHECKPOINT_SECONDS, time_limit / 4)


def run_files(checkpoint: Path, log: Path | None = None) -> list[Path]:
    """The files a run writing ``checkpoint`` creates: it, its ``.state`` and its CSV log."""
    return [checkpoint, state_path(checkpoint), log or checkpoint.with_suffix(".csv")]


def files_in_the_way(options: TrainOptions) -> list[Path]:
    """Existing files this run would replace: its checkpoint, ``.state`` and log (and a two-stage
    DiffIR's stage-1 files), except those of the run it resumes. Empty with ``overwrite``."""
    if options.overwrite:
        return []
    written = run_files(options.output, options.log_path())
    if options.model.partition("-")[0] == "diffir" and options.stage is None:
        written += run_files(stage1_path(options.output), stage1_log(options))
    kept: set[Path] = set()
    if options.resume is not None:
        resumed = options.resume.resolve()
        kept = {resumed, state_path(resumed)}
        if resumed == options.output.resolve():
            kept.add(options.log_path().resolve())
        if options.model.partition("-")[0] == "diffir":
            # Resuming either stage: stage 1's files are the ones resumed, or stage 1 is not run again.
            kept.update(p.resolve() for p in run_files(stage1_path(options.output), stage1_log(options)))
    return [path for path in written if path.resolve() not in kept and (path.exists() or path.is_symlink())]


@dataclass
class TrainResult:
    """What a finished run reports: its checkpoint, steps done, time, and validation metrics."""

    output: Path
    steps: int
    seconds: float
    stopped_by: str
    validation: dict[str, dict[str, float]]
    train_names: list[str]
    val_names: list[str]


def stage1_path(output: Path) -> Path:
    """Where a two-stage DiffIR run keeps its stage-1 checkpoint: ``NAME.stage1.safetensors`` beside it."""
    return output.with_name(f"{output.stem}.stage1{output.suffix or '.safetensors'}")


def stage1_log(options: TrainOptions) -> Path | None:
    """The stage-1 log of a two-stage DiffIR run with ``--log``: ``LOG.stage1.csv`` (None: beside the checkpoint)."""
    return options.log.with_name(f"{options.log.stem}.stage1{options.log.suffix}") if options.log else None
