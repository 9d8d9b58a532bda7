"""What an evaluation holds: the metrics, one photo's scores, and the per-model summaries.

Kept apart from the scoring (:mod:`autohdr_cli.evaluate`) and the report formats
(:mod:`autohdr_cli.report`), which both read these records.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from .metrics import megapixels_per_second

#: Name of the baseline that leaves the source as it is.
IDENTITY = "identity"
#: Name of the results folder's scores when scoring PRED_DIR against TARGET_DIR.
RESULT = "result"


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
    Metric("lpips", "LPIPS ↓", False, 4),
)
#: What ``--sort`` accepts: the metric keys.
SORT_KEYS = tuple(m.key for m in METRICS)


def metric_named(key: str) -> Metric:
    """The :class:`Metric` named ``key`` (one of :data:`SORT_KEYS`)."""
    return next(m for m in METRICS if m.key == key)


class EvaluateError(Exception):
    """The inputs cannot be evaluated at all (a folder that does not exist, nothing to score)."""


@dataclass
class Score:
    """One photo's scores for one model; ``seconds`` is the model's run time (None for files).

    ``lpips`` is None where the photo is too small for the LPIPS network (under 32 px a side).
    """

    psnr: float
    ssim: float
    delta_e2000: float
    lpips: float | None = None
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
    sort_key: str = "delta_e2000"

    @property
    def primary(self) -> str:
        """The model the reports sort by: the first one that is not identity."""
        return next((m for m in self.models if m != IDENTITY), self.models[0])

    def worst_first(self) -> list[PhotoScores]:
        """The photos ordered by the primary model's ``sort_key`` metric, worst first (lowest PSNR or
        SSIM, highest ΔE00 or LPIPS); photos without that score last."""
        model, chosen = self.primary, metric_named(self.sort_key)
        sign = 1.0 if chosen.higher_is_better else -1.0

        def badness(photo: PhotoScores) -> float:
            value = getattr(photo.scores[model], chosen.key) if model in photo.scores else None
            return math.inf if value is None or math.isnan(value) else sign * value

        return sorted(self.photos, key=badness)


# ------------------------------------------------------------------------------------------- summaries


def _stats(values: list[float | None], higher_is_better: bool) -> Stats | None:
    values = [v for v in values if v is not None]
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
