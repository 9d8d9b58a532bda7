"""Scoring photos against their targets (the reports are :mod:`autohdr_cli.report`).

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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError, load_model, read_header
from .cube import CubeError, read_cube
from .imageio import PhotoError, quantize, read_photo, to_float
from .lpips import SCORE_LONG_SIDE, LPIPSError, LPIPSReference, network_on
from .metrics import (
    SSIM_WINDOW,
    Stopwatch,
    ciede2000,
    mse,
    psnr_from_mse,
    rgb_to_lab,
    ssim_map,
)
from .models import MODELS
from .models.lut import StaticLUT
from .progress import ProgressBar
from .pairs import (
    Pair,
    PairsError,
    check_stems_found,
    find_pairs,
    image_size,
    photos_by_stem,
    read_stem_list,
    split_by_stems,
    split_pairs,
)
from .inference import enhance_tensor
from .report import ReportImages
from .scores import IDENTITY, RESULT, SORT_KEYS, EvaluateError, Evaluation, PhotoScores, Score

#: Pixels scored at a time (see :class:`TargetScorer`): about 1 MB per temporary.
BAND_PIXELS = 1 << 18
#: The line every evaluation carries about how LPIPS was taken.
LPIPS_NOTE = (
    f"LPIPS: v0.1 AlexNet (shipped weights), on copies of at most {SCORE_LONG_SIDE} px long side "
    "(antialiased), so its memory stays flat on any photo"
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
    image (SSIM bands get ``SSIM_WINDOW // 2`` rows of context). The target's Lab and LPIPS features
    are computed once. LPIPS is taken on a copy of at most ``SCORE_LONG_SIDE`` px (see
    :class:`autohdr_cli.lpips.LPIPSReference`).
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
        self.lpips = LPIPSReference(target)

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
                lpips=self.lpips.distance(candidate),
            )
        return score, error_map


def _prepare(sort_key: str) -> None:
    """Check ``sort_key`` and load the LPIPS network; raises :class:`EvaluateError` if either fails."""
    if sort_key not in SORT_KEYS:
        raise EvaluateError(f"--sort {sort_key}: expected one of {', '.join(SORT_KEYS)}")
    try:
        network_on("cpu")
    except LPIPSError as e:
        raise EvaluateError(str(e)) from None


def _scorer(target: torch.Tensor, path: Path) -> TargetScorer:
    """A :class:`TargetScorer` for the target read from ``path``; raises :class:`_Failure`."""
    try:
        return TargetScorer(target)
    except ValueError as e:
        raise _Failure(f"{path}: {e}") from None


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
    sort_key: str = "delta_e2000",
    on_problem: Callable[[str], None] = _silent_problem,
    on_progress: Callable[[int, int], None] = _silent_progress,
) -> Evaluation:
    """Score every result in ``prediction_dir`` against the target of the same stem in ``target_dir``.

    With ``source_dir``, the originals are scored too (as ``identity``). Unmatched, unreadable and
    size-mismatched files are passed to ``on_problem`` (one line each) before scoring starts.
    ``sort_key`` (a metric key) orders the reports' photos, worst first.
    """
    _prepare(sort_key)
    items, problems = match_folders(prediction_dir, target_dir, source_dir)
    if not items and not problems:
        raise EvaluateError(f"{prediction_dir}: no photos to score")
    evaluation = Evaluation("folders", ([IDENTITY] if source_dir else []) + [RESULT], sort_key=sort_key)
    evaluation.notes.append(LPIPS_NOTE)
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
    """A model to evaluate, with the name it is reported under, the file it came from and the load-time
    settings it runs with."""

    name: str
    model: nn.Module
    path: Path
    settings: dict = field(default_factory=dict)


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
    settings: dict | None = None,
) -> tuple[list[NamedModel], list[str]]:
    """Load checkpoints and ``.cube`` looks onto ``device``; a file that fails gets a line, not a stop.

    ``settings`` (config fields set at load time, e.g. ``{"lut_size": 33}``) go to each checkpoint whose
    model lists them in ``runtime_settings``; others load as they are. A checkpoint loaded with settings
    is named with them (``tone:lut_size=33``), so a report says which way it ran.
    """
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    models: list[NamedModel] = []
    problems: list[str] = []
    taken: set[str] = set()
    for raw in weights:
        path = Path(raw)
        try:
            name = read_header(path).metadata.get("autohdr.model") if settings else None
            own = {k: v for k, v in settings.items() if k in getattr(MODELS.get(name or ""), "runtime_settings", ())}
            model = load_model(path, map_location=device, settings=own)
        except (CheckpointError, CubeError) as e:
            problems.append(str(e))
            continue
        label = _unique_name(path, taken)
        if own:
            label = ":".join([label, *(f"{k}={v}" for k, v in sorted(own.items()))])
        models.append(NamedModel(label, model, path, own))
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
    val_list: str | os.PathLike | None = None,
    device: str = "cpu",
    images: ReportImages | None = None,
    problems: Sequence[str] = (),
    sort_key: str = "delta_e2000",
    on_problem: Callable[[str], None] = _silent_problem,
    on_progress: Callable[[int, int], None] = _silent_progress,
) -> Evaluation:
    """Run each model on the pairs (``split`` "all", or "val": the split training holds out) and score
    it beside identity, timing each model call (seconds per photo, MP/s).

    With ``val_list`` the validation split is exactly the pairs that file names (train's ``--val-list``).

    ``problems`` are lines from loading the models, reported first with the pairs' own problems.
    ``sort_key`` (a metric key) orders the reports' photos, worst first.
    """
    _prepare(sort_key)
    if split not in ("all", "val"):
        raise EvaluateError(f"--split must be 'all' or 'val', not {split!r}")
    try:
        pair_set = find_pairs(pairs_root)
        pairs = pair_set.pairs
        if split == "val" and val_list is not None:
            stems = read_stem_list(val_list)
            check_stems_found(stems, pairs, val_list)
            _, pairs = split_by_stems(pairs, stems)
        elif split == "val":
            _, pairs = split_pairs(pairs, val_fraction, seed)
    except PairsError as e:
        raise EvaluateError(str(e)) from None
    if not pairs and not pair_set.problems:
        where = " in the validation split" if split == "val" else ""
        raise EvaluateError(f"{pairs_root}: no pairs to score{where}")
    evaluation = Evaluation("models", [IDENTITY] + [m.name for m in models], device=device, sort_key=sort_key)
    evaluation.notes.append(LPIPS_NOTE)
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
