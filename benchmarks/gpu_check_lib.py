"""Shared pieces of ``benchmarks/gpu_check.py``: the results file, the deadline, test photos, tables.

Kept free of torch at import time, so the check can say which dependencies are missing before it
touches any of them.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "photos"
LOOK = ROOT / "samples" / "looks" / "realestate.cube"

#: Our dependencies (pyproject.toml) by the module each is imported as.
DEPENDENCIES = {
    "torch": "torch", "numpy": "numpy", "pillow": "PIL", "tifffile": "tifffile", "imagecodecs": "imagecodecs",
    "safetensors": "safetensors", "kornia": "kornia", "typer": "typer", "rich": "rich",
}


def missing_dependencies() -> dict[str, str]:
    """Each dependency that does not import here, with the reason (absent, or broken beside this torch)."""
    missing = {}
    for name, module in DEPENDENCIES.items():
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - any failure to import is "missing" for the check
            missing[name] = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    return missing


# ------------------------------------------------------------------------------------------ deadline


class DeadlineReached(KeyboardInterrupt):
    """Raised in the main thread when the run's time is up.

    A KeyboardInterrupt, so ``enhance`` and ``train`` stop the way they stop on Ctrl-C: cleanly.
    """


@dataclass
class Budget:
    """The run's remaining time; each measurement runs under :meth:`guard`."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        """Seconds until the deadline."""
        return self.seconds - (time.monotonic() - self.started)

    @contextmanager
    def guard(self, limit: float | None = None):
        """Raise :class:`DeadlineReached` in the block at the deadline (or after ``limit`` seconds),
        and again every second after, in case the code in the block swallows the first one."""
        seconds = self.left() if limit is None else min(limit, self.left())
        if seconds <= 0:
            raise DeadlineReached(f"no time left ({self.left():.0f} s)")

        def ring(_signum, _frame):
            raise DeadlineReached(f"ran past its {seconds:.0f} s")

        previous = signal.signal(signal.SIGALRM, ring)
        signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------------------------------- results


class Results:
    """The JSON results file: ``meta`` and ``rows``, rewritten (atomically) after every section.

    A rerun with ``--sections`` replaces the rows of those sections and keeps the others.
    """

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.rows: list[dict] = []
        if path.exists():
            try:
                self.rows = json.loads(path.read_text())["rows"]
            except (ValueError, KeyError, TypeError):
                self.rows = []
        self.meta = meta

    def replace_section(self, section: str, rows: list[dict]) -> None:
        """Put ``rows`` in place of the section's earlier rows and write the file."""
        self.rows = [row for row in self.rows if row.get("section") != section] + [
            {"section": section, **row} for row in rows
        ]
        self.write()

    def write(self) -> None:
        """Write the file whole through a temporary name, so a reader never sees half of it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=1, default=str) + "\n")
        os.replace(temporary, self.path)


def attempt(rows: list[dict], budget: Budget, fields: dict, work: Callable[[], dict], needs: float = 0.0,
            limit: float | None = None) -> None:
    """Run one measurement and append its row: ``fields`` plus what ``work`` returns (a dict, or a
    list of dicts for several rows).

    It is skipped with a row saying so when fewer than ``needs`` seconds are left, cut at the deadline
    (or after ``limit`` seconds), and an error becomes a row with its first line; the section goes on.
    """
    if budget.left() < max(needs, 0.5):
        rows.append({**fields, "status": "skipped", "note": f"deadline: {budget.left():.0f} s left, needs ~{needs:.0f} s"})
        return
    started = time.monotonic()
    allowed = budget.left() if limit is None else min(limit, budget.left())
    cut = f"cut after {allowed:.0f} s" + (" (its limit)" if limit is not None and limit < budget.left() else " (the deadline)")
    try:
        with budget.guard(limit):
            measured = work()
    except DeadlineReached:
        rows.append({**fields, "status": "skipped", "note": cut})
        return
    except Exception as error:  # noqa: BLE001 - one failed measurement must not stop the check
        if time.monotonic() - started >= allowed:  # e.g. enhance stopped by the deadline as by Ctrl-C
            rows.append({**fields, "status": "skipped", "note": cut})
            return
        text = str(error).strip().splitlines()
        rows.append({**fields, "status": "error", "note": f"{type(error).__name__}: {text[0][:200] if text else ''}"})
        return
    if time.monotonic() - started >= allowed:  # the block swallowed the deadline and returned
        rows.append({**fields, "status": "skipped", "note": cut})
        return
    for part in measured if isinstance(measured, list) else [measured]:
        rows.append({**fields, **part})


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of ``run`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# -------------------------------------------------------------------------------------- test photos


def sample_crops(count: int, width: int, height: int, seed: int = 0):
    """``count`` 8-bit RGB arrays ``height x width x 3`` cut from the sample photos at random places
    and scales (a crop of 40-100% of a photo, resized), so each is a real, different photo."""
    import numpy as np
    from PIL import Image

    random = np.random.default_rng(seed)
    originals = [Image.open(path).convert("RGB") for path in sorted(SAMPLES.glob("*.jpg"))]
    crops = []
    for index in range(count):
        image = originals[index % len(originals)]
        scale = random.uniform(0.4, 1.0)
        aspect = width / height
        crop_w = min(image.width, int(image.width * scale), int(image.height * scale * aspect))
        crop_h = max(1, int(crop_w / aspect))
        left = int(random.integers(0, image.width - crop_w + 1))
        top = int(random.integers(0, image.height - crop_h + 1))
        piece = image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.BICUBIC)
        crops.append(np.asarray(piece))
    return crops


def write_photo_kinds(folder: Path, width: int, height: int) -> dict[str, Path]:
    """An 8-bit PNG, a 16-bit TIFF (all 16 bits used) and an RGBA PNG (alpha gradient) in ``folder``."""
    import numpy as np
    import tifffile
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    first, second, third = sample_crops(3, width, height, seed=1)
    noise = np.random.default_rng(2).integers(-128, 129, first.shape)
    sixteen = np.clip(second.astype(np.int32) * 257 + noise, 0, 65535).astype(np.uint16)
    alpha = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0).astype(np.uint8)
    paths = {"8-bit": folder / "rgb8.png", "16-bit": folder / "rgb16.tif", "RGBA": folder / "rgba.png"}
    Image.fromarray(first).save(paths["8-bit"])
    tifffile.imwrite(paths["16-bit"], sixteen, photometric="rgb")
    Image.fromarray(np.dstack([third, alpha]), "RGBA").save(paths["RGBA"])
    return paths


def write_jpegs(folder: Path, count: int, width: int, height: int, threads: int) -> float:
    """``count`` JPEGs (quality 92, 4:4:4) made from the sample photos; returns their megapixels.

    Encoded by our writer (libjpeg-turbo, which releases the GIL; Pillow's encoder does not), in threads.
    """
    import numpy as np

    from autohdr_cli.imageio import Photo, encode_photo

    folder.mkdir(parents=True, exist_ok=True)
    base = sample_crops(min(count, 8), width, height, seed=3)

    def make(index: int) -> None:
        pixels = base[index % len(base)]
        if index >= len(base):  # mirrored: other bytes for the same content and size
            pixels = np.ascontiguousarray(pixels[:, ::-1] if index % 2 else pixels[::-1])
        (folder / f"photo_{index:04d}.jpg").write_bytes(encode_photo(Photo(pixels), "jpeg", quality=92))

    run_in_threads(make, range(count), threads)
    return count * width * height / 1e6


def run_in_threads(work: Callable, items, threads: int) -> None:
    """``work(item)`` for every item in a thread pool; if cut short (the deadline), the rest is dropped."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(threads)
    try:
        list(pool.map(work, items))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------------------------- table


def markdown_tables(rows: list[dict]) -> str:
    """One markdown table per section, columns in order of first appearance, numbers rounded."""
    out = []
    for section in dict.fromkeys(row["section"] for row in rows):
        part = [row for row in rows if row["section"] == section]
        columns = list(dict.fromkeys(key for row in part for key in row if key not in ("section", "status", "note")))
        columns += ["status", "note"]  # last, whatever row came first
        out += [f"### {section}", "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        out += ["| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in part]
        out.append("")
    return "\n".join(out)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value).replace("|", "/")
