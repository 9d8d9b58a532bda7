"""The learning-rate schedule and the run's clock: warm-up and cosine decay over steps or a time budget."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from .train_data import step_seed


#: Shapes of the decay after warm-up: ``cosine`` over the whole run, or ``wsd`` (warm-up, stable, decay):
#: the peak rate held until the last :data:`WSD_DECAY` of the run, then a cosine down to the same floor.
SCHEDULES = ("cosine", "wsd")
WSD_DECAY = 0.2
LR_FLOOR = 0.1


def learning_rate(
    base: float, step: int, steps: int | None, elapsed: float = 0.0, budget: float | None = None,
    shape: str = "cosine",
) -> float:
    """Linear warm-up, then a decay to a tenth of ``base`` at the run's end.

    The end is ``steps`` steps or ``budget`` seconds, whichever comes first: progress is the larger of
    ``step / steps`` and ``elapsed / budget`` (the time measured so far), so a time-limited run is
    annealed when its time is up. Warm-up lasts 5% of the steps or 5% of the budget, at most 100 steps.
    ``shape`` is ``cosine`` (decay over the whole run; with ``steps`` alone the schedule of earlier
    versions, step for step) or ``wsd`` (the peak held, the decay in the run's last fifth).
    """
    if shape not in SCHEDULES:
        raise ValueError(f"unknown schedule {shape!r} (known: {', '.join(SCHEDULES)})")
    warmup = max(1, min(100, steps // 20)) if steps else 100
    ramp = (step + 1) / warmup
    progress = step / max(1, steps) if steps else 0.0
    if budget:
        progress = max(progress, elapsed / budget)
        ramp = max(ramp, elapsed / (0.05 * budget))
    ramp, progress = min(1.0, ramp), min(1.0, progress)
    if shape == "wsd":
        progress = max(0.0, progress - (1.0 - WSD_DECAY)) / WSD_DECAY
    return base * ramp * (LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def forward_seed(seed: int, rank: int, step: int) -> int:
    """The seed of one step's own random numbers (dropout, noise), apart from its batch's."""
    return (step_seed(seed, rank, step) + 1) % (2**63 - 1)


@dataclass
class StepClock:
    """A run's time: seconds done before a resume plus this process's, and the expected end.

    ``clock`` is injectable (tests drive a run with a fake one). The expected number of steps is
    re-estimated from the recent step times, for the progress bar and its ETA.
    """

    budget: float | None
    steps: int | None
    elapsed_before: float = 0.0
    clock: Callable[[], float] = time.monotonic
    _began: float = 0.0
    _step_time: float | None = None
    _last: tuple[int, float] | None = None

    def start(self) -> None:
        """Start counting this process's time."""
        self._began = self.clock()

    def elapsed(self) -> float:
        """Seconds the run has taken so far, resumed parts included."""
        return self.elapsed_before + self.clock() - self._began

    def expected_steps(self, step: int, elapsed: float) -> int | None:
        """The step the run will end at: ``steps``, or sooner when the budget runs out first."""
        if self._last is not None and step > self._last[0]:
            latest = (elapsed - self._last[1]) / (step - self._last[0])
            self._step_time = latest if self._step_time is None else 0.9 * self._step_time + 0.1 * latest
        self._last = (step, elapsed)
        if self.budget is None or self._step_time is None:
            return self.steps
        by_time = step + max(0, math.ceil((self.budget - elapsed) / max(self._step_time, 1e-9)))
        return by_time if self.steps is None else min(self.steps, by_time)
