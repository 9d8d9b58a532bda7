"""Scoring photos against their targets, and the reports: terminal table, JSON, CSV, HTML, contact sheet.

Two ways in:

* :func:`evaluate_folders` scores a folder of results against a folder of targets, matched by file stem
  (the path relative to the folder, without its extension). Given the originals too, it also scores
  them as they are: the ``identity`` baseline any edit has to beat.
* :func:`evaluate_models` runs models on a pairs folder (or its seeded validation split) and scores
  each of them side by side with identity, timing the models.

Both stream: a photo is decoded, scored and dropped before the next one, and only its numbers are kept
(plus small JPEG thumbnails on disk while an HTML report is wanted), so memory stays flat on any folder.
Scores are taken on the values as written: a model's output is first rounded to the source file's
sample type (8 or 16 bits), so the numbers are the ones a user gets from ``autohdr enhance``.

PSNR of two identical photos is infinite. The table prints ``inf``; JSON and CSV write the string
``"inf"`` (``float("inf")`` reads it back): JSON has no infinity, and ``null`` would read as "missing".
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
import math
import os
import shutil
import statistics
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from . import __version__
from .checkpoint import CheckpointError, load_model
from .cube import CubeError, read_cube
from .imageio import TEMP_MARKER, PhotoError, atomic_write_bytes, quantize, read_photo, to_float
from .metrics import (
    SSIM_WINDOW,
    Stopwatch,
    ciede2000,
    lpips_unavailable_reason,
    megapixels_per_second,
    mse,
    psnr_from_mse,
    rgb_to_lab,
    ssim_map,
)
from .models.lut import StaticLUT
from .progress import ProgressBar
from .pairs import Pair, PairsError, photos_by_stem, find_pairs, image_size, split_pairs
from .inference import enhance_tensor

#: Name of the baseline that leaves the source as it is.
IDENTITY = "identity"
#: Name of the results folder's scores when scoring PRED_DIR against TARGET_DIR.
RESULT = "result"
#: Pixels scored at a time (see :class:`TargetScorer`): about 1 MB per temporary.
BAND_PIXELS = 1 << 18
#: Long side of the report thumbnails, in pixels.
THUMBNAIL_SIZE = 256
#: ΔE00 shown at full heat in the error maps (a clearly visible colour difference).
HEAT_MAX = 15.0
#: Rows of the contact sheet (worst first): a PNG of thousands of rows would help nobody.
CONTACT_SHEET_ROWS = 60
#: Heat map colours from ΔE00 = 0 to HEAT_MAX (black, purple, red, orange, pale yellow).
_HEAT_COLOURS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)


@dataclass(frozen=True)
class Metric:
    """How one metric is named, which way is better, and how many decimals it is shown with."""

    key: str
    label: str
    higher_is_better: bool
    digits: int


METRICS = (
    Metric("psnr", "PSNR dB ↑", True, 2),
    Metric("ssim", "SSIM ↑", True, 4),
    Metric("delta_e2000", "ΔE00 ↓", False, 3),
)


class EvaluateError(Exception):
    """The inputs cannot be evaluated at all (a folder that does not exist, nothing to score)."""


@dataclass
class Score:
    """One photo's scores for one model; ``seconds`` is the model's run time (None for files)."""

    psnr: float
    ssim: float
    delta_e2000: float
    seconds: float | None = None


@dataclass
class PhotoScores:
    """Everything kept about one scored photo: its files, its size, and a score per model."""

    stem: str
    width: int
    height: int
    target: str
    source: str | None = None
    prediction: str | None = None
    scores: dict[str, Score] = field(default_factory=dict)

    @property
    def megapixels(self) -> float:
        """Pixel count in millions."""
        return self.width * self.height / 1e6


@dataclass
class Stats:
    """Mean, median and worst value of one metric over the photos."""

    mean: float
    median: float
    worst: float


@dataclass
class ModelSummary:
    """One model's statistics per metric, and its speed when it was run."""

    model: str
    photos: int
    stats: dict[str, Stats | None]
    seconds_per_photo: float | None = None
    megapixels_per_second: float | None = None


@dataclass
class Evaluation:
    """The outcome of a run: per-photo scores, the lines about inputs that failed, and notes."""

    mode: str
    models: list[str]
    photos: list[PhotoScores] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    device: str | None = None

    @property
    def primary(self) -> str:
        """The model the reports sort by: the first one that is not identity."""
        return next((m for m in self.models if m != IDENTITY), self.models[0])

    def worst_first(self) -> list[PhotoScores]:
        """The photos ordered by the primary model's ΔE00, largest first (unscored ones last)."""
        key = self.primary
        return sorted(
            self.photos,
            key=lambda p: -p.scores[key].delta_e2000 if key in p.scores else math.inf,
        )


# ---------------------------------------------------------------------------------------------- scoring


class _Failure(Exception):
    """One input cannot be scored; the message is the ``path: reason`` line to report."""


def _read_float(path: Path) -> tuple[torch.Tensor, np.dtype]:
    """A photo as float ``3 x H x W`` in [0, 1], and its sample type; raises :class:`_Failure`."""
    try:
        photo = read_photo(path)
    except PhotoError as e:
        raise _Failure(f"{path}: {e}") from None
    return torch.from_numpy(photo.to_float()), photo.pixels.dtype


def _check_same_size(image: torch.Tensor, path: Path, target: torch.Tensor, target_path: Path) -> None:
    if image.shape != target.shape:
        raise _Failure(
            f"{path}: size {image.shape[2]}x{image.shape[1]} differs from {target_path} "
            f"({target.shape[2]}x{target.shape[1]})"
        )


def as_written(image: torch.Tensor, dtype: np.dtype) -> torch.Tensor:
    """The values a user gets in the file: ``image`` (float ``3 x H x W``) rounded to ``dtype``'s levels.

    uint8 and uint16 round to 255 or 65535 levels; float32 (32-bit TIFF) is only clipped.
    """
    levels = quantize(image.detach().cpu().permute(1, 2, 0).numpy(), dtype)
    return torch.from_numpy(to_float(levels).transpose(2, 0, 1))


class TargetScorer:
    """Scores candidate images against one target, a band of rows at a time.

    Bands keep the temporaries of the colour and SSIM maths small on 50 MP photos; the scores are the
    same as :func:`metrics.psnr`, :func:`metrics.ssim` and :func:`metrics.delta_e2000` on the whole
    image (SSIM bands get ``SSIM_WINDOW // 2`` rows of context). The target's Lab is computed once.
    """

    def __init__(self, target: torch.Tensor, band_pixels: int = BAND_PIXELS):
        if min(target.shape[-2:]) < SSIM_WINDOW:
            raise ValueError(f"too small to score (SSIM needs at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels)")
        self.target = target.unsqueeze(0)
        height, width = target.shape[-2:]
        self.rows = max(SSIM_WINDOW, band_pixels // width)
        with torch.inference_mode():
            bands = [self.target[:, :, start : start + self.rows] for start in range(0, height, self.rows)]
            self.target_lab = torch.cat([rgb_to_lab(band) for band in bands], dim=2)

    def score(self, candidate: torch.Tensor) -> tuple[Score, torch.Tensor]:
        """The candidate's :class:`Score` (``3 x H x W``) and its per-pixel ΔE00 map (``H x W``)."""
        batch = candidate.unsqueeze(0)
        height = batch.shape[2]
        context = SSIM_WINDOW // 2
        error_map = torch.empty(batch.shape[2:], dtype=torch.float32)
        squared_error = structure = 0.0
        with torch.inference_mode():
            for start in range(0, height, self.rows):
                stop = min(height, start + self.rows)
                band, target_band = batch[:, :, start:stop], self.target[:, :, start:stop]
                error_map[start:stop] = ciede2000(rgb_to_lab(band), self.target_lab[:, :, start:stop])[0]
                squared_error += float(mse(band, target_band)[0]) * (stop - start)
                low, high = max(0, start - context), min(height, stop + context)
                similarity = ssim_map(batch[:, :, low:high].contiguous(), self.target[:, :, low:high].contiguous())
                structure += float(similarity[0, start - low : stop - low].double().sum())
            pixels = error_map.numel()
            score = Score(
                psnr=float(psnr_from_mse(torch.tensor(squared_error / height, dtype=torch.float64))),
                ssim=structure / pixels,
                delta_e2000=float(error_map.double().mean()),
            )
        return score, error_map


def _scorer(target: torch.Tensor, path: Path) -> TargetScorer:
    """A :class:`TargetScorer` for the target read from ``path``; raises :class:`_Failure`."""
    try:
        return TargetScorer(target)
    except ValueError as e:
        raise _Failure(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------- report images


def thumbnail(image: torch.Tensor, size: int = THUMBNAIL_SIZE) -> torch.Tensor:
    """Shrink ``C x H x W`` so its long side is at most ``size`` (antialiased; never enlarged)."""
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    if scale >= 1:
        return image
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(image.unsqueeze(0).float(), size=shape, mode="bilinear", antialias=True)[0]


def heat_colours(error_map: np.ndarray, top: float = HEAT_MAX) -> np.ndarray:
    """Colour an ``H x W`` ΔE00 map (0 black .. ``top`` and above pale yellow) as uint8 ``H x W x 3``."""
    position = np.clip(error_map / top, 0.0, 1.0)
    anchors = np.linspace(0.0, 1.0, len(_HEAT_COLOURS))
    channels = [np.interp(position, anchors, _HEAT_COLOURS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def _jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class ReportImages:
    """Small JPEG thumbnails for the HTML report, kept in a temporary folder while photos are scored.

    Kept on disk rather than in memory so that a report on thousands of photos stays flat in memory.
    Kinds are ``before``, ``target``, ``result:MODEL`` and ``heat:MODEL``.
    """

    def __init__(self, directory: str | os.PathLike):
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix=f"{TEMP_MARKER}thumbs-", dir=directory))
        except OSError as e:
            raise EvaluateError(f"{directory}: cannot create the report folder: {e.strerror or e}") from None
        self.directory = directory
        self._kinds: dict[str, int] = {}

    def _path(self, index: int, kind: str) -> Path:
        number = self._kinds.setdefault(kind, len(self._kinds))
        return self.folder / f"{index:07d}-{number}.jpg"

    def add_image(self, index: int, kind: str, image: torch.Tensor) -> None:
        """Store a thumbnail of a float ``3 x H x W`` image."""
        small = thumbnail(image).clamp(0, 1).mul(255).round().to(torch.uint8)
        self._path(index, kind).write_bytes(_jpeg_bytes(small.permute(1, 2, 0).contiguous().numpy()))

    def add_heat_map(self, index: int, kind: str, error_map: torch.Tensor) -> None:
        """Store a coloured thumbnail of a ``H x W`` ΔE00 map."""
        small = thumbnail(error_map.unsqueeze(0))[0].numpy()
        self._path(index, kind).write_bytes(_jpeg_bytes(heat_colours(small)))

    def read(self, index: int, kind: str) -> bytes | None:
        """The stored JPEG, or None when there is none (a model that failed on that photo)."""
        if kind not in self._kinds:
            return None
        path = self._path(index, kind)
        return path.read_bytes() if path.is_file() else None

    def close(self) -> None:
        """Delete the temporary thumbnails."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "ReportImages":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def report_images(directory: str | os.PathLike | None) -> contextlib.AbstractContextManager:
    """A :class:`ReportImages` context for ``directory``, or one that yields None when there is none."""
    return ReportImages(directory) if directory is not None else contextlib.nullcontext(None)


# ------------------------------------------------------------------------------------------- reporting


class ProblemReporter(ProgressBar):
    """Prints each ``path: reason`` line on stderr as it happens and, when enabled, a progress bar."""

    def __init__(self, progress: bool):
        super().__init__("evaluate", progress)

    def problem(self, line: str) -> None:
        """Report one input that failed."""
        self.print_line(line)

    def advance(self, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` photos are scored."""
        self.update(done, total)


def _silent_problem(line: str) -> None:
    """Default problem callback: the lines are kept in the evaluation only."""


def _silent_progress(done: int, total: int) -> None:
    """Default progress callback: nothing shown."""


# -------------------------------------------------------------------------------------------- folders


@dataclass
class FolderItem:
    """A result matched with its target (and its source, when the originals are given)."""

    stem: str
    prediction: Path
    target: Path
    source: Path | None = None


def _size_problem(path: Path, target: Path, target_size: tuple[int, int]) -> str | None:
    """A line when ``path``'s header size differs from the target's (or cannot be read), else None."""
    size = image_size(path)
    if size is None:
        return f"{path}: cannot read the image size (damaged or not an image)"
    if size != target_size:
        return f"{path}: size {size[0]}x{size[1]} differs from {target} ({target_size[0]}x{target_size[1]})"
    return None


def match_folders(
    prediction_dir: str | os.PathLike,
    target_dir: str | os.PathLike,
    source_dir: str | os.PathLike | None = None,
) -> tuple[list[FolderItem], list[str]]:
    """Match results to targets (and sources) by stem, checking sizes from the file headers.

    Returns the usable items and one ``path: reason`` line per file that is unmatched, unreadable or
    of another size than its target; those files are left out of the items, never silently.
    """
    folders = [Path(prediction_dir), Path(target_dir)] + ([Path(source_dir)] if source_dir else [])
    for folder in folders:
        if not folder.is_dir():
            raise EvaluateError(f"{folder}: not a folder")
    predictions, problems = photos_by_stem(folders[0])
    targets, target_problems = photos_by_stem(folders[1])
    sources, source_problems = photos_by_stem(folders[2]) if source_dir else ({}, [])
    problems += target_problems + source_problems
    items: list[FolderItem] = []
    for stem in sorted(set(predictions) | set(targets) | set(sources)):
        if stem not in targets:
            for path in dict.fromkeys([predictions.get(stem), sources.get(stem)]):  # once, if both are one
                if path is not None:
                    problems.append(f"{path}: no matching file in {folders[1]}")
            continue
        target = targets[stem]
        if stem not in predictions:
            problems.append(f"{target}: no matching file in {folders[0]}")
            continue
        if source_dir and stem not in sources:
            problems.append(f"{target}: no matching file in {folders[2]}")
            continue
        target_size = image_size(target)
        if target_size is None:
            problems.append(f"{target}: cannot read the image size (damaged or not an image)")
            continue
        checked = dict.fromkeys([predictions[stem]] + ([sources[stem]] if source_dir else []))
        size_problems = [line for line in (_size_problem(p, target, target_size) for p in checked) if line]
        if size_problems:
            problems += size_problems
            continue
        items.append(FolderItem(stem, predictions[stem], target, sources.get(stem)))
    return items, problems


def _score_folder_item(index: int, item: FolderItem, images: ReportImages | None) -> PhotoScores:
    """Score one result (and its source) against its target; raises :class:`_Failure`."""
    target, _ = _read_float(item.target)
    prediction, _ = _read_float(item.prediction)
    _check_same_size(prediction, item.prediction, target, item.target)
    source = None
    if item.source is not None:
        source, _ = _read_float(item.source)
        _check_same_size(source, item.source, target, item.target)
    scorer = _scorer(target, item.target)
    photo = PhotoScores(
        item.stem,
        target.shape[2],
        target.shape[1],
        str(item.target),
        str(item.source) if item.source else None,
        str(item.prediction),
    )
    candidates = ([(IDENTITY, source)] if source is not None else []) + [(RESULT, prediction)]
    for name, candidate in candidates:
        photo.scores[name], error_map = scorer.score(candidate)
        if images is not None:
            if name != IDENTITY:
                images.add_image(index, f"result:{name}", candidate)
            images.add_heat_map(index, f"heat:{name}", error_map)
    if images is not None:
        images.add_image(index, "target", target)
        if source is not None:
            images.add_image(index, "before", source)
    return photo


def evaluate_folders(
    prediction_dir: str | os.PathLike,
    target_dir: str | os.PathLike,
    source_dir: str | os.PathLike | None = None,
    *,
    images: ReportImages | None = None,
    on_problem: Callable[[str], None] = _silent_problem,
    on_progress: Callable[[int, int], None] = _silent_progress,
) -> Evaluation:
    """Score every result in ``prediction_dir`` against the target of the same stem in ``target_dir``.

    With ``source_dir``, the originals are scored too (as ``identity``). Unmatched, unreadable and
    size-mismatched files are passed to ``on_problem`` (one line each) before scoring starts.
    """
    items, problems = match_folders(prediction_dir, target_dir, source_dir)
    if not items and not problems:
        raise EvaluateError(f"{prediction_dir}: no photos to score")
    evaluation = Evaluation("folders", ([IDENTITY] if source_dir else []) + [RESULT])
    evaluation.notes.append(lpips_unavailable_reason())
    for line in problems:
        evaluation.problems.append(line)
        on_problem(line)
    for index, item in enumerate(items):
        try:
            evaluation.photos.append(_score_folder_item(index, item, images))
        except _Failure as failure:
            evaluation.problems.append(str(failure))
            on_problem(str(failure))
        on_progress(index + 1, len(items))
    return evaluation


# --------------------------------------------------------------------------------------------- models


@dataclass
class NamedModel:
    """A model to evaluate, with the name it is reported under and the file it came from."""

    name: str
    model: nn.Module
    path: Path


def check_device(device: str) -> str | None:
    """Why ``device`` cannot run models here, in one line; None when it can."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps)"
    if parsed.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: CUDA is not available on this machine"
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        return f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device}: MPS is not available on this machine"
    if parsed.type not in ("cpu", "cuda", "mps"):
        return f"--device {device}: only cpu, cuda and mps are supported"
    return None


def _unique_name(path: Path, taken: set[str]) -> str:
    """The file's stem; its whole path when the stem is taken (two ``best.safetensors``); then numbered."""
    name = path.stem if path.stem not in taken and path.stem != IDENTITY else str(path)
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}#{number}", number + 1
    return candidate


def load_models(
    weights: Sequence[str | os.PathLike],
    luts: Sequence[str | os.PathLike] = (),
    device: str = "cpu",
) -> tuple[list[NamedModel], list[str]]:
    """Load checkpoints and ``.cube`` looks onto ``device``; a file that fails gets a line, not a stop."""
    models: list[NamedModel] = []
    problems: list[str] = []
    taken: set[str] = set()
    for raw in weights:
        path = Path(raw)
        try:
            model = load_model(path, map_location=device)
        except (CheckpointError, CubeError) as e:
            problems.append(str(e))
            continue
        models.append(NamedModel(_unique_name(path, taken), model, path))
        taken.add(models[-1].name)
    for raw in luts:
        path = Path(raw)
        try:
            model = StaticLUT.from_cube(read_cube(path)).eval().to(device)
        except CubeError as e:
            problems.append(str(e))
            continue
        models.append(NamedModel(_unique_name(path, taken), model, path))
        taken.add(models[-1].name)
    return models, problems


def _warm_up(models: Sequence[NamedModel], device: str) -> None:
    """Run each model once on a tiny image, so one-time set-up costs stay out of the timings."""
    sample = torch.rand(3, 64, 64)
    for named in models:
        try:
            enhance_tensor(named.model, sample, device=device)
        except RuntimeError:
            pass  # a model that cannot run fails on the first photo, where it gets its line



def _score_pair(
    index: int,
    pair: Pair,
    models: Sequence[NamedModel],
    device: str,
    images: ReportImages | None,
    on_problem: Callable[[str], None],
    problems: list[str],
) -> PhotoScores:
    """Score identity and every model on one pair; raises :class:`_Failure` when the pair is unusable."""
    source, dtype = _read_float(pair.source)
    target, _ = _read_float(pair.target)
    _check_same_size(source, pair.source, target, pair.target)
    scorer = _scorer(target, pair.target)
    photo = PhotoScores(pair.stem, target.shape[2], target.shape[1], str(pair.target), str(pair.source))
    photo.scores[IDENTITY], error_map = scorer.score(source)
    if images is not None:
        images.add_image(index, "before", source)
        images.add_image(index, "target", target)
        images.add_heat_map(index, f"heat:{IDENTITY}", error_map)
    for named in models:
        stopwatch = Stopwatch(device)
        try:
            with stopwatch:
                output = enhance_tensor(named.model, source, device=device)
        except RuntimeError as e:  # out of memory, a shape the model cannot take: this photo only
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            line = f"{pair.source}: model {named.name} failed: {reason}"
            problems.append(line)
            on_problem(line)
            continue
        written = as_written(output, dtype)
        score, error_map = scorer.score(written)
        score.seconds = stopwatch.last
        photo.scores[named.name] = score
        if images is not None:
            images.add_image(index, f"result:{named.name}", written)
            images.add_heat_map(index, f"heat:{named.name}", error_map)
    return photo


def evaluate_models(
    pairs_root: str | os.PathLike,
    models: Sequence[NamedModel],
    *,
    split: str = "all",
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "cpu",
    images: ReportImages | None = None,
    problems: Sequence[str] = (),
    on_problem: Callable[[str], None] = _silent_problem,
    on_progress: Callable[[int, int], None] = _silent_progress,
) -> Evaluation:
    """Run each model on the pairs (``split`` "all", or "val": the split training holds out) and score
    it beside identity, timing each model call (seconds per photo, MP/s).

    ``problems`` are lines from loading the models, reported first with the pairs' own problems.
    """
    if split not in ("all", "val"):
        raise EvaluateError(f"--split must be 'all' or 'val', not {split!r}")
    try:
        pair_set = find_pairs(pairs_root)
    except PairsError as e:
        raise EvaluateError(str(e)) from None
    pairs = pair_set.pairs
    if split == "val":
        _, pairs = split_pairs(pairs, val_fraction, seed)
    if not pairs and not pair_set.problems:
        where = " in the validation split" if split == "val" else ""
        raise EvaluateError(f"{pairs_root}: no pairs to score{where}")
    evaluation = Evaluation("models", [IDENTITY] + [m.name for m in models], device=device)
    evaluation.notes.append(lpips_unavailable_reason())
    for line in list(problems) + pair_set.problems:
        evaluation.problems.append(line)
        on_problem(line)
    _warm_up(models, device)
    for index, pair in enumerate(pairs):
        try:
            photo = _score_pair(index, pair, models, device, images, on_problem, evaluation.problems)
            evaluation.photos.append(photo)
        except _Failure as failure:
            evaluation.problems.append(str(failure))
            on_problem(str(failure))
        on_progress(index + 1, len(pairs))
    return evaluation


# ------------------------------------------------------------------------------------------- summaries


def _stats(values: list[float], higher_is_better: bool) -> Stats | None:
    if not values:
        return None
    worst = min(values) if higher_is_better else max(values)
    return Stats(statistics.fmean(values), statistics.median(values), worst)


def summarize(evaluation: Evaluation) -> list[ModelSummary]:
    """Per model: mean, median and worst of each metric, and its speed where it was timed."""
    summaries = []
    for model in evaluation.models:
        scores = [p.scores[model] for p in evaluation.photos if model in p.scores]
        stats = {m.key: _stats([getattr(s, m.key) for s in scores], m.higher_is_better) for m in METRICS}
        timed = [(p.megapixels, p.scores[model].seconds) for p in evaluation.photos
                 if model in p.scores and p.scores[model].seconds is not None]
        summary = ModelSummary(model, len(scores), stats)
        if timed:
            seconds = sum(s for _, s in timed)
            summary.seconds_per_photo = seconds / len(timed)
            summary.megapixels_per_second = megapixels_per_second(sum(mp for mp, _ in timed), seconds)
        summaries.append(summary)
    return summaries


def format_number(value: float | None, digits: int) -> str:
    """A number for people: fixed decimals, ``inf`` for infinity, a dash for no value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def print_summary(evaluation: Evaluation, console=None) -> None:
    """Print the scores table (mean, median, worst per metric and model), speeds and notes to stdout."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    summaries = summarize(evaluation)
    count = len(evaluation.photos)
    table = Table(
        title=f"autohdr evaluate: {count} photo{'' if count == 1 else 's'}",
        title_justify="left",
        caption="worst: lowest PSNR and SSIM, highest ΔE00",
        caption_justify="left",
    )
    for column in ("Metric", "Model"):
        table.add_column(column)
    for column in ("Mean", "Median", "Worst", "Photos"):
        table.add_column(column, justify="right")
    for number, metric in enumerate(METRICS):
        if number:
            table.add_section()
        for row, summary in enumerate(summaries):
            stats = summary.stats[metric.key]
            values = [None] * 3 if stats is None else [stats.mean, stats.median, stats.worst]
            table.add_row(
                metric.label if row == 0 else "",
                summary.model,
                *(format_number(v, metric.digits) for v in values),
                str(summary.photos),
            )
    console.print(table)
    timed = [s for s in summaries if s.seconds_per_photo is not None]
    if timed:
        speed = Table(title=f"Model speed on {evaluation.device}", title_justify="left")
        speed.add_column("Model")
        for column in ("Photos", "s/photo", "MP/s"):
            speed.add_column(column, justify="right")
        for summary in timed:
            speed.add_row(
                summary.model,
                str(summary.photos),
                format_number(summary.seconds_per_photo, 3),
                format_number(summary.megapixels_per_second, 2),
            )
        console.print(speed)
    for note in evaluation.notes:
        console.print(note, markup=False, soft_wrap=True)


# --------------------------------------------------------------------------------------- JSON and CSV


def _json_number(value: float | None) -> float | str | None:
    """A float for JSON: infinities as the strings "inf"/"-inf", NaN as null."""
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _score_record(score: Score) -> dict:
    record = {m.key: _json_number(getattr(score, m.key)) for m in METRICS}
    record["seconds"] = _json_number(score.seconds)
    return record


def evaluation_record(evaluation: Evaluation) -> dict:
    """The whole evaluation as JSON-ready data: summary per model, one record per photo, problems."""
    summary = {}
    for model in summarize(evaluation):
        entry: dict = {"photos": model.photos}
        for metric in METRICS:
            stats = model.stats[metric.key]
            entry[metric.key] = None if stats is None else {
                "mean": _json_number(stats.mean),
                "median": _json_number(stats.median),
                "worst": _json_number(stats.worst),
            }
        entry["seconds_per_photo"] = _json_number(model.seconds_per_photo)
        entry["megapixels_per_second"] = _json_number(model.megapixels_per_second)
        summary[model.model] = entry
    photos = [
        {
            "stem": p.stem,
            "width": p.width,
            "height": p.height,
            "megapixels": p.megapixels,
            "source": p.source,
            "target": p.target,
            "prediction": p.prediction,
            "scores": {model: _score_record(score) for model, score in p.scores.items()},
        }
        for p in evaluation.photos
    ]
    return {
        "autohdr_version": __version__,
        "mode": evaluation.mode,
        "device": evaluation.device,
        "models": evaluation.models,
        "sorted_by": f"{evaluation.primary}.delta_e2000",
        "summary": summary,
        "photos": photos,
        "problems": evaluation.problems,
        "notes": evaluation.notes,
    }


def _ensure_parent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)


def write_json(evaluation: Evaluation, path: str | os.PathLike) -> None:
    """Write :func:`evaluation_record` as JSON (no bare Infinity: see the module notes)."""
    path = Path(path)
    _ensure_parent(path)
    text = json.dumps(evaluation_record(evaluation), indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def csv_columns(evaluation: Evaluation) -> list[str]:
    """CSV header: the photo's fields, then ``MODEL.METRIC`` (and ``MODEL.seconds`` for timed models)."""
    columns = ["stem", "width", "height", "megapixels", "source", "target", "prediction"]
    for model in evaluation.models:
        columns += [f"{model}.{m.key}" for m in METRICS]
        if evaluation.mode == "models" and model != IDENTITY:
            columns.append(f"{model}.seconds")
    return columns


def write_csv(evaluation: Evaluation, path: str | os.PathLike) -> None:
    """Write one row per photo, every model's scores side by side (``inf`` for infinite PSNR)."""
    path = Path(path)
    _ensure_parent(path)
    columns = csv_columns(evaluation)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for p in evaluation.photos:
        row = {
            "stem": p.stem,
            "width": p.width,
            "height": p.height,
            "megapixels": f"{p.megapixels:.6f}",
            "source": p.source or "",
            "target": p.target,
            "prediction": p.prediction or "",
        }
        for model, score in p.scores.items():
            for key, value in _score_record(score).items():
                column = f"{model}.{key}"
                if column in columns:
                    row[column] = "" if value is None else value
        writer.writerow(row)
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


# ------------------------------------------------------------------------------------ HTML and sheet


def report_columns(evaluation: Evaluation) -> list[tuple[str, str]]:
    """The (image kind, caption) columns of the report, in order."""
    columns: list[tuple[str, str]] = []
    if any(p.source for p in evaluation.photos):
        columns.append(("before", "before"))
        if IDENTITY in evaluation.models:
            columns.append((f"heat:{IDENTITY}", "error: before vs target"))
    columns.append(("target", "target"))
    for model in evaluation.models:
        if model != IDENTITY:
            columns += [(f"result:{model}", f"result: {model}"), (f"heat:{model}", f"error: {model}")]
    return columns


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
table{border-collapse:collapse;margin:8px 0}th,td{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
section.photo{border-top:1px solid #ccc;padding:12px 0}
.strip{display:flex;gap:8px;flex-wrap:wrap;align-items:flex-start}figure{margin:0}
figcaption{font-size:12px;color:#555}img{display:block;max-width:256px;height:auto}
.missing{width:160px;height:90px;background:#eee;color:#888;display:flex;align-items:center;justify-content:center}
.legend{display:inline-block;width:240px;height:12px;vertical-align:middle;background:linear-gradient(to right,%s)}
.problems{color:#a00}
"""


def _legend_gradient() -> str:
    return ",".join(f"rgb({r:.0f},{g:.0f},{b:.0f})" for r, g, b in _HEAT_COLOURS)


def _summary_html(evaluation: Evaluation) -> str:
    summaries = summarize(evaluation)
    rows = []
    for metric in METRICS:
        for summary in summaries:
            stats = summary.stats[metric.key]
            values = [None] * 3 if stats is None else [stats.mean, stats.median, stats.worst]
            cells = "".join(f"<td>{format_number(v, metric.digits)}</td>" for v in values)
            rows.append(f"<tr><td>{html.escape(metric.label)}</td><td>{html.escape(summary.model)}</td>{cells}"
                        f"<td>{summary.photos}</td></tr>")
    head = "<tr><th>Metric</th><th>Model</th><th>Mean</th><th>Median</th><th>Worst</th><th>Photos</th></tr>"
    table = f"<table class='summary'>{head}{''.join(rows)}</table>"
    timed = [s for s in summaries if s.seconds_per_photo is not None]
    if timed:
        speed_rows = "".join(
            f"<tr><td>{html.escape(s.model)}</td><td>{s.photos}</td>"
            f"<td>{format_number(s.seconds_per_photo, 3)}</td>"
            f"<td>{format_number(s.megapixels_per_second, 2)}</td></tr>"
            for s in timed
        )
        table += (f"<h2>Model speed on {html.escape(str(evaluation.device))}</h2><table class='speed'>"
                  f"<tr><th>Model</th><th>Photos</th><th>s/photo</th><th>MP/s</th></tr>{speed_rows}</table>")
    return table


def _photo_html(rank: int, photo: PhotoScores, evaluation: Evaluation, images: ReportImages, index: int) -> str:
    primary = photo.scores.get(evaluation.primary)
    delta = "" if primary is None else f"{primary.delta_e2000:.6f}"
    rows = "".join(
        f"<tr><td>{html.escape(model)}</td>"
        + "".join(f"<td>{format_number(getattr(score, m.key), m.digits)}</td>" for m in METRICS)
        + "</tr>"
        for model, score in photo.scores.items()
    )
    head = "<tr><th>Model</th>" + "".join(f"<th>{html.escape(m.label)}</th>" for m in METRICS) + "</tr>"
    figures = []
    for kind, caption in report_columns(evaluation):
        data = images.read(index, kind)
        if data is None:
            picture = "<div class='missing'>no image</div>"
        else:
            encoded = base64.b64encode(data).decode("ascii")
            picture = f"<img alt='{html.escape(caption)}' src='data:image/jpeg;base64,{encoded}'>"
        figures.append(f"<figure data-kind='{html.escape(kind)}'>{picture}"
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return (
        f"<section class='photo' data-stem='{html.escape(photo.stem)}' data-delta-e='{delta}'>"
        f"<h3>{rank}. {html.escape(photo.stem)}</h3><table class='scores'>{head}{rows}</table>"
        f"<div class='strip'>{''.join(figures)}</div></section>\n"
    )


def write_html_report(evaluation: Evaluation, images: ReportImages, directory: str | os.PathLike) -> Path:
    """Write ``index.html``: one self-contained page (thumbnails embedded), photos worst first.

    Written piece by piece to a temporary file and renamed into place, so a report on thousands of
    photos never sits in memory whole, and a crash never leaves half a page.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "index.html"
    temporary = directory / f"{TEMP_MARKER}{uuid.uuid4().hex[:12]}-index.html"
    index_of = {id(p): i for i, p in enumerate(evaluation.photos)}
    try:
        with open(temporary, "w", encoding="utf-8") as page:
            page.write("<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
                       "<title>autohdr evaluation</title>"
                       f"<style>{_STYLE % _legend_gradient()}</style></head><body>\n")
            page.write(f"<h1>autohdr evaluation</h1><p>{len(evaluation.photos)} photos, "
                       f"worst first by ΔE00 of <b>{html.escape(evaluation.primary)}</b>. "
                       f"Error maps: CIEDE2000 per pixel, <span class='legend'></span> 0 to {HEAT_MAX:g} "
                       "and above. Contact sheet: <a href='contact_sheet.png'>contact_sheet.png</a>.</p>\n")
            page.write(_summary_html(evaluation) + "\n")
            for note in evaluation.notes:
                page.write(f"<p class='note'>{html.escape(note)}</p>\n")
            if evaluation.problems:
                items = "".join(f"<li>{html.escape(line)}</li>" for line in evaluation.problems)
                page.write(f"<h2>Not scored ({len(evaluation.problems)})</h2><ul class='problems'>{items}</ul>\n")
            for rank, photo in enumerate(evaluation.worst_first(), start=1):
                page.write(_photo_html(rank, photo, evaluation, images, index_of[id(photo)]))
            page.write("</body></html>\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the small bitmap font
        return ImageFont.load_default()


def write_contact_sheet(
    evaluation: Evaluation,
    images: ReportImages,
    path: str | os.PathLike,
    *,
    cell: tuple[int, int] = (192, 144),
    max_rows: int = CONTACT_SHEET_ROWS,
) -> Path:
    """Write a PNG grid of the report: a row per photo (worst first, at most ``max_rows``), its columns."""
    columns = report_columns(evaluation)
    photos = evaluation.worst_first()[:max_rows]
    index_of = {id(p): i for i, p in enumerate(evaluation.photos)}
    gap, label = 8, 18
    cell_width, cell_height = cell
    width = gap + len(columns) * (cell_width + gap)
    height = label + gap + len(photos) * (label + cell_height + gap)
    sheet = Image.new("RGB", (width, max(height, label + gap)), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    for number, (_, caption) in enumerate(columns):
        draw.text((gap + number * (cell_width + gap), 2), caption[:30], fill=(60, 60, 60), font=font)
    for row, photo in enumerate(photos):
        top = label + gap + row * (label + cell_height + gap)
        primary = photo.scores.get(evaluation.primary)
        heading = f"{row + 1}. {photo.stem}"
        if primary is not None:
            heading += (f"   {evaluation.primary}: dE00 {primary.delta_e2000:.2f}, "
                        f"PSNR {format_number(primary.psnr, 2)} dB, SSIM {primary.ssim:.3f}")
        draw.text((gap, top), heading, fill=(0, 0, 0), font=font)
        for number, (kind, _) in enumerate(columns):
            data = images.read(index_of[id(photo)], kind)
            left = gap + number * (cell_width + gap)
            if data is None:
                box = [left, top + label, left + cell_width - 1, top + label + cell_height - 1]
                draw.rectangle(box, fill=(225, 225, 225))
                continue
            with Image.open(io.BytesIO(data)) as picture:
                picture = picture.convert("RGB")
                picture.thumbnail((cell_width, cell_height))
                sheet.paste(picture, (left + (cell_width - picture.width) // 2, top + label))
    path = Path(path)
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG", optimize=False, compress_level=6)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_reports(
    evaluation: Evaluation,
    images: ReportImages | None,
    *,
    json_path: str | os.PathLike | None = None,
    csv_path: str | os.PathLike | None = None,
    html_dir: str | os.PathLike | None = None,
) -> list[str]:
    """Write the requested report files; returns one ``path: reason`` line per file that failed."""
    failures = []
    jobs: list[tuple[Path, Callable[[], object]]] = []
    if json_path is not None:
        jobs.append((Path(json_path), lambda: write_json(evaluation, json_path)))
    if csv_path is not None:
        jobs.append((Path(csv_path), lambda: write_csv(evaluation, csv_path)))
    if html_dir is not None and images is not None:
        jobs.append((Path(html_dir) / "index.html", lambda: write_html_report(evaluation, images, html_dir)))
        jobs.append((Path(html_dir) / "contact_sheet.png",
                     lambda: write_contact_sheet(evaluation, images, Path(html_dir) / "contact_sheet.png")))
    for path, job in jobs:
        try:
            job()
        except OSError as e:
            failures.append(f"{path}: cannot write: {e.strerror or e}")
    return failures
