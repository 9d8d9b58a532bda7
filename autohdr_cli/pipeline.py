"""The streaming folder pipeline: list, decode, enhance, encode and report, never losing a photo.

The pipeline orchestrates; the per-photo work is an :class:`autohdr_cli.enhancer.Enhancer`: a
:class:`autohdr_cli.table_enhancer.TableEnhancer` for a ``.cube`` look (numpy only) or an
:class:`autohdr_cli.inference.ModelEnhancer` for torch models, imported only when a model is given,
so a ``.cube`` run never imports torch.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from typing import TYPE_CHECKING


from .cube import CubeLUT
from .enhancer import DEFAULT_OVERLAP, DEFAULT_PRECISION, DEFAULT_TILE, Decoded, Enhancer, UsageError
from .table_enhancer import TableEnhancer, has_unit_domain
from .imageio import (
    FORMAT_EXTENSION,
    TEMP_MARKER,
    BufferPool,
    Photo,
    PhotoError,
    format_of,
    rgbx_buffer,
    write_photo,
)

if TYPE_CHECKING:
    from torch import nn

# ------------------------------------------------------------------------------------ folder pipeline

OUTPUT_FORMATS = ("same", "jpg", "png", "tiff", "webp")
_FORMAT_NAMES = {"jpg": "jpeg", "png": "png", "tiff": "tiff", "webp": "webp"}


@dataclass
class EnhanceOptions:
    """Everything ``autohdr enhance`` can be told, besides the model and the folders."""

    output_format: str = "same"
    suffix: str = ""
    quality: int = 95
    overwrite: bool = False
    strip_metadata: bool = False
    workers: int = 0  # 0 = one per CPU core
    device: str = "auto"
    strength: float = 1.0
    dry_run: bool = False
    shard: tuple[int, int] | None = None  # (K, N), K counted from 1
    report: Path | None = None
    tile: int = DEFAULT_TILE  # convolutional models run on tiles of this many pixels...
    tile_overlap: int = DEFAULT_OVERLAP  # ...overlapping by at least this many
    precision: str = DEFAULT_PRECISION  # how networks compute on CUDA (fp32, tf32, bf16, fp16)


@dataclass
class Job:
    """One photo to enhance: where it is read from and where its result goes."""

    source: Path
    output: Path
    error: str | None = None  # set when the job is known to fail before any decoding


@dataclass
class FileResult:
    """What happened to one photo; one row of ``--report``."""

    input: str
    output: str
    status: str  # done | skipped | failed | planned
    seconds: float = 0.0
    megapixels: float = 0.0
    error: str = ""


@dataclass
class Summary:
    """Counts and timing of a whole run."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    planned: int = 0
    seconds: float = 0.0
    megapixels: float = 0.0
    interrupted: bool = False
    results: list[FileResult] = field(default_factory=list)

    @property
    def mp_per_second(self) -> float:
        """Megapixels enhanced per second of wall time."""
        return self.megapixels / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        head = "interrupted: " if self.interrupted else ""
        if self.planned:
            return f"{head}planned {self.planned}, skipped {self.skipped}, failed {self.failed}"
        return (
            f"{head}done {self.done}, skipped {self.skipped}, failed {self.failed} "
            f"in {self.seconds:.1f} s ({self.mp_per_second:.1f} MP/s)"
        )


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``K/N`` (K from 1 to N) for ``--shard``; raises ValueError with the reason."""
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise ValueError(f"--shard must look like K/N (e.g. 1/4), got {text!r}") from None
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"--shard K/N needs 1 <= K <= N, got {text!r}")
    return k, n


def in_shard(relative: str, shard: tuple[int, int] | None) -> bool:
    """Whether a file (by its path relative to the input folder) belongs to shard K of N.

    A checksum of the path, not the listing order, decides: every machine agrees without sharing
    state, even if their listings differ.
    """
    if shard is None:
        return True
    k, n = shard
    return zlib.crc32(relative.encode("utf-8")) % n == k - 1


def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_folders(source: Path, output: Path) -> None:
    """Refuse folder layouts that could read our own outputs or write over inputs."""
    if not source.exists():
        raise UsageError(f"{source}: no such file or folder")
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output}: exists and is not a folder")
    real_source, real_output = source.resolve(), output.resolve()
    if source.is_dir():
        if _is_inside(real_output, real_source):
            raise UsageError(f"{output}: the output folder must not be inside the input folder {source}")
        if _is_inside(real_source, real_output):
            raise UsageError(f"{output}: the output folder must not contain the input folder {source}")
    elif real_source.parent == real_output:
        raise UsageError(f"{output}: the output folder must not be the input photo's own folder")


def output_path(relative: Path, output: Path, options: EnhanceOptions) -> Path:
    """Where the result for an input (relative to the input folder) is written."""
    if options.output_format == "same":
        extension = relative.suffix
    else:
        extension = FORMAT_EXTENSION[_FORMAT_NAMES[options.output_format]]
    return output / relative.parent / f"{relative.stem}{options.suffix}{extension}"


def _photos_in(folder: Path) -> Iterator[tuple[Path, list[Path]]]:
    """Each folder under ``folder`` (sorted, recursive) with the photo files directly in it."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        photos = [
            Path(dirpath) / name
            for name in sorted(filenames)
            if not name.startswith(TEMP_MARKER) and format_of(name) is not None
        ]
        yield Path(dirpath), photos


def list_jobs(source: Path, output: Path, options: EnhanceOptions) -> Iterator[Job]:
    """Every photo to enhance, in a stable order, streamed folder by folder.

    Two inputs that would write the same output (``a.png`` and ``a.jpg`` with ``--format jpg``) are
    caught here: the second becomes a failed job instead of overwriting the first one's result.
    """
    if source.is_file():
        if format_of(source) is None:
            yield Job(source, output / source.name, "not a JPEG, PNG, TIFF or WebP file name")
            return
        if in_shard(source.name, options.shard):
            yield Job(source, output_path(Path(source.name), output, options))
        return
    for _folder, photos in _photos_in(source):
        claimed: dict[Path, Path] = {}
        for photo in photos:
            relative = photo.relative_to(source)
            target = output_path(relative, output, options)
            first = claimed.setdefault(target, photo)
            if not in_shard(relative.as_posix(), options.shard):
                continue
            if first is not photo:
                yield Job(photo, target, f"its output {target.name} is also the output of {first}")
            else:
                yield Job(photo, target)


def count_jobs(source: Path, options: EnhanceOptions) -> int:
    """How many photos :func:`list_jobs` will yield (for the progress bar)."""
    if source.is_file():
        return 1
    return sum(
        in_shard(p.relative_to(source).as_posix(), options.shard) for _f, photos in _photos_in(source) for p in photos
    )


class ReportWriter:
    """Streams one record per file to ``--report`` (JSON lines or CSV), flushed as it goes."""

    FIELDS = ["input", "output", "status", "seconds", "megapixels", "error"]

    def __init__(self, path: Path | None):
        self.path = path
        self._file = None
        self._csv = None
        if path is None:
            return
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise UsageError(f"--report {path}: the file name must end in .jsonl or .csv")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w", newline="", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"--report {path}: cannot write: {e.strerror or e}") from None
        if suffix == ".csv":
            self._csv = csv.DictWriter(self._file, fieldnames=self.FIELDS)
            self._csv.writeheader()

    def write(self, result: FileResult) -> None:
        """Append one record."""
        if self._file is None:
            return
        record = {
            "input": result.input,
            "output": result.output,
            "status": result.status,
            "seconds": round(result.seconds, 4),
            "megapixels": round(result.megapixels, 6),  # exact: pixels / 1e6
            "error": result.error,
        }
        if self._csv is not None:
            self._csv.writerow(record)
        else:
            self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()


def make_enhancer(model: "nn.Module | CubeLUT", options: EnhanceOptions, pool: BufferPool | None = None) -> Enhancer:
    """The per-photo worker for a model or a ``.cube`` LUT (a torch-free one where it can be)."""
    if isinstance(model, CubeLUT) and options.device in ("auto", "cpu") and has_unit_domain(model):
        if options.precision != DEFAULT_PRECISION:
            raise UsageError(f"--precision {options.precision} is for CUDA devices only: a .cube on the CPU is exact")
        return TableEnhancer(model, options.strength, pool)
    from .inference import ModelEnhancer, resolve_device

    device = resolve_device(options.device)
    if isinstance(model, CubeLUT):
        from .models.lut import StaticLUT

        model = StaticLUT.from_cube(model)
    return ModelEnhancer(
        model, device, options.strength, options.tile, options.tile_overlap, pool, precision=options.precision
    )


def _reason(error: BaseException) -> str:
    if isinstance(error, (PhotoError, UsageError)):
        return str(error)
    if isinstance(error, MemoryError):
        return "out of memory"
    if isinstance(error, OSError):
        return f"cannot write: {error.strerror or error}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else 'unexpected error'}"


def enhance_folder(
    model: "nn.Module | CubeLUT",
    source: Path,
    output: Path,
    options: EnhanceOptions,
    *,
    on_result: Callable[[FileResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Summary:
    """Enhance every photo under ``source`` into ``output`` (mirroring the tree) and return the summary.

    ``model`` is any autohdr model or a parsed ``.cube`` file (:func:`autohdr_cli.cube.read_cube`).

    Decoding and encoding run in ``options.workers`` threads each while the model runs; at most a few
    photos per worker are in memory at any time, whatever the size of the folder. One bad photo never
    stops the batch: it becomes a failed :class:`FileResult`. Ctrl-C stops cleanly: photos already
    written stay, nothing half-written is left, and the summary says ``interrupted``.
    """
    source, output = Path(source), Path(output)
    check_folders(source, output)
    report = ReportWriter(options.report)
    summary = Summary()
    started = time.perf_counter()

    def record(result: FileResult) -> None:
        if result.status == "done":
            summary.done += 1
            summary.megapixels += result.megapixels
        else:
            setattr(summary, result.status, getattr(summary, result.status) + 1)
        report.write(result)
        if on_result is not None:
            on_result(result)

    try:
        if on_start is not None:
            on_start(count_jobs(source, options))
        if options.dry_run:
            for job in list_jobs(source, output, options):
                if job.error:
                    record(FileResult(str(job.source), str(job.output), "failed", error=job.error))
                elif job.output.exists() and not options.overwrite:
                    record(FileResult(str(job.source), str(job.output), "skipped", error="output exists"))
                else:
                    record(FileResult(str(job.source), str(job.output), "planned"))
            return summary
        workers = options.workers or os.cpu_count() or 1
        # Spare buffers kept: one per worker is enough for the steady state (measured: more only adds
        # to peak memory, 80 MB each at 20 MP).
        pool = BufferPool(keep=workers)
        enhancer = make_enhancer(model, options, pool)
        _run_jobs(enhancer, list_jobs(source, output, options), options, record, summary, pool)
    finally:
        summary.seconds = time.perf_counter() - started
        report.close()
    return summary


def _run_jobs(
    enhancer, jobs: Iterator[Job], options: EnhanceOptions, record, summary: Summary, pool: BufferPool
) -> None:
    workers = options.workers or os.cpu_count() or 1
    fmt = None if options.output_format == "same" else _FORMAT_NAMES[options.output_format]
    stop = threading.Event()

    def finish(job: Job, decoded: Decoded, render: Callable[[], Photo]) -> FileResult:
        if stop.is_set():
            raise InterruptedError("interrupted before writing")
        photo = render()
        job.output.parent.mkdir(parents=True, exist_ok=True)
        write_photo(job.output, photo, fmt=fmt, quality=options.quality, strip_metadata=options.strip_metadata)
        # Both photos are done with: their buffers serve the next ones (a failed photo's are just freed).
        pool.give(rgbx_buffer(decoded.photo.pixels))
        pool.give(rgbx_buffer(photo.pixels))
        return FileResult(
            str(job.source), str(job.output), "done", time.perf_counter() - decoded.started, photo.megapixels
        )

    decoding: deque[tuple[Job, Future]] = deque()
    encoding: deque[tuple[Job, Future]] = deque()

    def collect_encoded() -> None:
        job, future = encoding.popleft()
        try:
            record(future.result())
        except InterruptedError:
            pass
        except BaseException as error:  # noqa: BLE001 - one photo's failure must not stop the batch
            if isinstance(error, KeyboardInterrupt):
                raise
            record(FileResult(str(job.source), str(job.output), "failed", error=_reason(error)))

    def run_model_on_next() -> None:
        job, future = decoding.popleft()
        try:
            decoded = future.result()
            render = enhancer.infer(decoded)
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001
            record(FileResult(str(job.source), str(job.output), "failed", error=_reason(error)))
            return
        encoding.append((job, encode_pool.submit(finish, job, decoded, render)))
        while len(encoding) > workers:  # bounded: memory stays flat on a folder of any size
            collect_encoded()

    decode_pool = ThreadPoolExecutor(workers, thread_name_prefix="autohdr-decode")
    encode_pool = ThreadPoolExecutor(workers, thread_name_prefix="autohdr-encode")
    try:
        for job in jobs:
            if job.error:
                record(FileResult(str(job.source), str(job.output), "failed", error=job.error))
                continue
            if job.output.exists() and not options.overwrite:
                record(FileResult(str(job.source), str(job.output), "skipped", error="output exists"))
                continue
            decoding.append((job, decode_pool.submit(enhancer.decode, job.source)))
            while len(decoding) > workers:
                run_model_on_next()
        while decoding:
            run_model_on_next()
        while encoding:
            collect_encoded()
    except KeyboardInterrupt:
        summary.interrupted = True
        stop.set()
        for _job, future in decoding:
            future.cancel()
        # Writes already under way finish (each is atomic); the rest stop before writing.
        for job, future in encoding:
            try:
                record(future.result())
            except BaseException:  # noqa: BLE001
                pass
    finally:
        decode_pool.shutdown(wait=True, cancel_futures=True)
        encode_pool.shutdown(wait=True, cancel_futures=True)
