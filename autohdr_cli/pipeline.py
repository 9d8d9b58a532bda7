"""The streaming folder pipeline: list, decode, enhance, encode and report, never losing a photo.

The pipeline orchestrates; the per-photo work is an :class:`autohdr_cli.enhancer.Enhancer`: a
:class:`autohdr_cli.table_enhancer.TableEnhancer` for a ``.cube`` look (numpy only) or an
:class:`autohdr_cli.inference.ModelEnhancer` for torch models, imported only when a model is given,
so a ``.cube`` run never imports torch. Writes go through :mod:`autohdr_cli.outputs` (never outside the
output folder; a manifest of how each output was made), headers are checked by :mod:`autohdr_cli.probe`
before decoding, and :mod:`autohdr_cli.results` holds the per-photo results, summary and ``--report``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterator

from .cube import CubeLUT
from .enhancer import DEFAULT_OVERLAP, DEFAULT_PRECISION, DEFAULT_TILE, Decoded, Enhancer, UsageError
from .table_enhancer import TableEnhancer, has_unit_domain
from .imageio import (
    FORMAT_EXTENSION,
    TEMP_MARKER,
    BufferPool,
    Photo,
    PhotoError,
    encode_for,
    format_of,
    rgbx_buffer,
)
from .results import FileResult, Listing, ReportWriter, Summary
from .outputs import (
    MANIFEST_FOLDER,
    Manifest,
    OutputError,
    OutputFolder,
    check_suffix,
    differences,
    display,
    recipe_id,
    safe_relative,
)
from .inputfile import special_kind
from .probe import DEFAULT_MAX_MEGAPIXELS

if TYPE_CHECKING:
    from torch import nn

# ------------------------------------------------------------------------------------ folder pipeline

OUTPUT_FORMATS = ("same", "jpg", "png", "tiff", "webp")
_FORMAT_NAMES = {"jpg": "jpeg", "png": "png", "tiff": "tiff", "webp": "webp"}
#: Photo files we cannot read (camera RAW, HEIC/HEIF and other formats): counted and named, not failed.
UNREAD_PHOTO_EXTENSIONS = frozenset(
    ".3fr .ari .arw .bay .bmp .cr2 .cr3 .crw .dcr .dng .erf .fff .gif .heic .heif .hif .avif .iiq .jp2 .jxl "
    ".k25 .kdc .mef .mos .mrw .nef .nrw .orf .pef .psd .raf .raw .rw2 .rwl .sr2 .srf .srw .x3f".split()
)


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
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    model_file: Path | None = None  # its hash goes into each output's recipe (else the model's content)
    style: str | None = None
    seed: int = 0


@dataclass
class Job:
    """One photo to enhance: where it is read from and where its result goes."""

    source: Path
    output: Path
    error: str | None = None  # set when the job is known to fail before any decoding
    relative: PurePosixPath | None = None  # the output, relative to the output folder


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``K/N`` (K from 1 to N) for ``--shard``; raises ValueError with the reason."""
    text = text.strip()
    if not text.isascii():
        raise ValueError(f"--shard must look like K/N with digits 0-9 (e.g. 1/4), got {display(text)!r}")
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

    A checksum of the path's bytes (its UTF-8 for UTF-8 names), not the listing order, decides: every
    machine agrees without sharing state, even if their listings differ.
    """
    if shard is None:
        return True
    k, n = shard
    return zlib.crc32(os.fsencode(relative)) % n == k - 1


def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_folders(source: Path, output: Path) -> None:
    """Refuse folder layouts that could read our own outputs or write over inputs."""
    if not os.path.lexists(source):
        raise UsageError(f"{display(source)}: no such file or folder")
    if not source.exists():
        raise UsageError(f"{display(source)}: a symlink to nothing")
    if output.exists() and not output.is_dir():
        raise UsageError(f"{display(output)}: exists and is not a folder")
    real_source, real_output = source.resolve(), output.resolve()
    if source.is_dir():
        if _is_inside(real_output, real_source):
            raise UsageError(
                f"{display(output)}: the output folder must not be inside the input folder {display(source)}"
            )
        if _is_inside(real_source, real_output):
            raise UsageError(
                f"{display(output)}: the output folder must not contain the input folder {display(source)}"
            )
    elif real_source.parent == real_output:
        raise UsageError(f"{display(output)}: the output folder must not be the input photo's own folder")


def output_relative(relative: Path, options: EnhanceOptions) -> PurePosixPath:
    """Where the result for an input (relative to the input folder) goes, relative to the output folder."""
    if options.output_format == "same":
        extension = relative.suffix
    else:
        extension = FORMAT_EXTENSION[_FORMAT_NAMES[options.output_format]]
    return safe_relative(PurePosixPath(relative.parent.as_posix(), f"{relative.stem}{options.suffix}{extension}"))


def _photos_in(folder: Path, listing: Listing | None = None) -> Iterator[tuple[Path, list[Path]]]:
    """Each folder under ``folder`` (sorted, recursive) with the photo files directly in it.

    Symlinked sub-folders are not followed and RAW/HEIC files are not read: both go to ``listing``.
    """
    listing = listing if listing is not None else Listing()
    def unlisted(error: OSError) -> None:
        listing.unlisted.append(f"{display(error.filename or folder)} ({error.strerror or error})")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlisted):
        for name in sorted(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):
                listing.symlinked_folders.append(display(Path(dirpath, name)))
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        photos = []
        for name in sorted(filenames):
            if name.startswith(TEMP_MARKER):
                continue
            if format_of(name) is not None:
                photos.append(Path(dirpath) / name)
            elif os.path.splitext(name)[1].lower() in UNREAD_PHOTO_EXTENSIONS:
                listing.unread.append(display(Path(dirpath, name)))
        listing.photos += len(photos)
        yield Path(dirpath), photos


def _special(path: Path) -> str | None:
    """Why a listed file must not be opened (a FIFO, socket or device), or None."""
    try:
        kind = special_kind(os.stat(path).st_mode)
    except OSError:
        return None  # gone or unreadable: reading it says why
    return None if kind is None else f"is a {kind}, not a photo file: skipped, never opened"


def list_jobs(source: Path, output: Path, options: EnhanceOptions, listing: Listing | None = None) -> Iterator[Job]:
    """Every photo to enhance, in a stable order, streamed folder by folder.

    Two inputs that would write the same output (``a.png`` and ``a.jpg`` with ``--format jpg``) are
    caught here: the second becomes a failed job instead of overwriting the first one's result.
    """
    listing = listing if listing is not None else Listing()
    if source.is_file() or not source.is_dir():
        if format_of(source) is None:
            yield Job(source, output / source.name, "not a JPEG, PNG, TIFF or WebP file name")
            return
        listing.photos += 1
        if in_shard(source.name, options.shard):
            yield _job(source, Path(source.name), output, options)
        return
    for _folder, photos in _photos_in(source, listing):
        claimed: dict[PurePosixPath, Path] = {}
        for photo in photos:
            relative = photo.relative_to(source)
            job = _job(photo, relative, output, options)
            first = claimed.setdefault(job.relative, photo) if job.relative else photo
            if not in_shard(str(relative), options.shard):
                continue
            if first is not photo:
                job.error = f"its output {display(job.relative.name)} is also the output of {display(first)}"
            yield job


def _job(photo: Path, relative: Path, output: Path, options: EnhanceOptions) -> Job:
    """The job for one listed photo; a name that cannot make a safe output fails it, not the run."""
    try:
        target = output_relative(relative, options)
    except OutputError as error:
        return Job(photo, output / display(relative.name), str(error))
    return Job(photo, output / target, _special(photo), target)


def make_enhancer(model: "nn.Module | CubeLUT", options: EnhanceOptions, pool: BufferPool | None = None) -> Enhancer:
    """The per-photo worker for a model or a ``.cube`` LUT (a torch-free one where it can be)."""
    if isinstance(model, CubeLUT) and options.device in ("auto", "cpu") and has_unit_domain(model):
        if options.precision != DEFAULT_PRECISION:
            raise UsageError(f"--precision {options.precision} is for CUDA devices only: a .cube on the CPU is exact")
        enhancer = TableEnhancer(model, options.strength, pool)
    else:
        from .inference import ModelEnhancer, resolve_device

        device = resolve_device(options.device)
        if isinstance(model, CubeLUT):
            from .models.lut import StaticLUT

            model = StaticLUT.from_cube(model)
        enhancer = ModelEnhancer(
            model, device, options.strength, options.tile, options.tile_overlap, pool, precision=options.precision
        )
    enhancer.max_megapixels = options.max_megapixels
    return enhancer


def recipe_of(model: "nn.Module | CubeLUT", options: EnhanceOptions) -> dict:
    """What makes an output's pixels and bytes: the model (its file's hash) and the options that matter."""
    digest = hashlib.sha256()
    if options.model_file is not None:
        with open(options.model_file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    elif isinstance(model, CubeLUT):
        digest.update(model.table.tobytes() + repr((model.domain_min, model.domain_max)).encode())
    else:
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    recipe = {
        "model": digest.hexdigest(),
        "strength": options.strength,
        "style": options.style,
        "format": options.output_format,
        "quality": options.quality,
        "tile": [options.tile, options.tile_overlap],
        "seed": options.seed,
        "strip_metadata": options.strip_metadata,
    }
    # Settings given at load time (ip2p's sampling, localtone's --lut-size) change the pixels but not
    # the file: they are part of the recipe (only for models that take any, so other recipes keep their ids).
    fields = getattr(model, "runtime_settings", ())
    if fields:
        recipe["settings"] = {field: getattr(model.config, field, None) for field in fields}
    return recipe


def _reason(error: BaseException) -> str:
    if isinstance(error, (PhotoError, UsageError, OutputError)):
        return str(error)
    if isinstance(error, MemoryError):
        return "out of memory"
    if isinstance(error, OSError):
        return f"cannot write: {error.strerror or error}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else 'unexpected error'}"


def _lstat(folder: OutputFolder, job: Job) -> os.stat_result | None:
    """The job's existing output, or None (none there, or not reachable safely: writing it will say why)."""
    try:
        return folder.lstat(job.relative)
    except (OutputError, OSError):
        return None


def _check_recipes(jobs: list[Job], folder: OutputFolder, manifest: Manifest, recipe: dict, summary: Summary) -> None:
    """Refuse to skip outputs that another recipe made (unless --overwrite); count unrecorded ones."""
    current = recipe_id(recipe)
    stale = []
    for job in jobs:
        found = None if job.error else _lstat(folder, job)
        if found is None:
            continue
        made_by = manifest.recipe_of(job.relative, found)
        if made_by is None:
            summary.unrecorded += 1
        elif made_by != current:
            stale.append((job, made_by))
    if stale:
        job, made_by = stale[0]
        raise UsageError(
            f"{display(folder.root)}: {len(stale)} existing output(s) were made differently "
            f"(e.g. {display(job.relative)}: {differences(manifest.recipes.get(made_by), recipe)}); "
            "rerun with --overwrite to redo them, or choose another output folder"
        )


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
    written stay, nothing half-written is left, and the summary says ``interrupted``. An existing
    output is skipped only when the manifest says the same recipe made it (see :mod:`autohdr_cli.outputs`).
    """
    source, output = Path(source), Path(output)
    check_suffix(options.suffix)
    check_folders(source, output)
    summary = Summary()
    jobs = list(list_jobs(source, output, options, summary.listing))
    folder = OutputFolder(output)
    recipe = recipe_of(model, options)
    try:
        manifest = Manifest(folder, options.shard)
    except (OutputError, OSError) as e:
        reason = getattr(e, "strerror", None) or e
        raise UsageError(f"{display(output)}: cannot read its {MANIFEST_FOLDER}: {reason}") from None
    if not options.overwrite:
        _check_recipes(jobs, folder, manifest, recipe, summary)
    report = ReportWriter(options.report)
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
            on_start(len(jobs))
        if options.dry_run:
            for job in jobs:
                source_text, output_text = display(job.source), display(job.output)
                try:
                    exists = job.error is None and folder.exists(job.relative)
                except (OutputError, OSError) as error:
                    job.error = _reason(error)
                if job.error:
                    record(FileResult(source_text, output_text, "failed", error=job.error))
                elif exists and not options.overwrite:
                    record(FileResult(source_text, output_text, "skipped", error="output exists"))
                else:
                    record(FileResult(source_text, output_text, "planned"))
            return summary
        workers = options.workers or os.cpu_count() or 1
        # Spare buffers kept: one per worker is enough for the steady state (measured: more only adds
        # to peak memory, 80 MB each at 20 MP).
        pool = BufferPool(keep=workers)
        enhancer = make_enhancer(model, options, pool)
        writer = _Writer(folder, manifest, recipe, options)
        _run_jobs(enhancer, iter(jobs), options, record, summary, pool, writer)
    finally:
        summary.seconds = time.perf_counter() - started
        report.close()
        summary.report_error = report.error
        summary.stale_temps_removed = folder.stale_removed
    return summary


@dataclass
class _Writer:
    """Encodes a result, writes it inside the output folder and records its recipe."""

    folder: OutputFolder
    manifest: Manifest
    recipe: dict
    options: EnhanceOptions

    def write(self, job: Job, photo: Photo) -> list[str]:
        """Write one photo; returns the warnings (metadata dropped...)."""
        fmt = None if self.options.output_format == "same" else _FORMAT_NAMES[self.options.output_format]
        notes: list[str] = []
        data = encode_for(
            job.relative, photo, fmt=fmt, quality=self.options.quality,
            strip_metadata=self.options.strip_metadata, notes=notes,
        )
        written = self.folder.write(job.relative, data)
        self.manifest.record(job.relative, self.recipe, written)
        return notes


@contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Hold SIGINT for the enclosed lines (main thread, POSIX); Ctrl-C lands right after them."""
    hold = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if hold:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if hold:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _run_jobs(
    enhancer, jobs: Iterator[Job], options: EnhanceOptions, record, summary: Summary, pool: BufferPool, writer: _Writer
) -> None:
    workers = options.workers or os.cpu_count() or 1
    stop = threading.Event()

    def finish(job: Job, decoded: Decoded, render: Callable[[], Photo]) -> FileResult:
        if stop.is_set():
            raise InterruptedError("interrupted before writing")
        photo = render()
        notes = writer.write(job, photo)
        # Both photos are done with: their buffers serve the next ones (a failed photo's are just freed).
        pool.give(rgbx_buffer(decoded.photo.pixels))
        pool.give(rgbx_buffer(photo.pixels))
        return FileResult(
            display(job.source), display(job.output), "done", time.perf_counter() - decoded.started,
            photo.megapixels, warning="; ".join(notes),
        )

    def failed(job: Job, reason: str) -> FileResult:
        return FileResult(display(job.source), display(job.output), "failed", error=reason)

    decoding: deque[tuple[Job, Future]] = deque()
    encoding: deque[tuple[Job, Future]] = deque()

    def collect_encoded() -> None:
        job, future = encoding[0]  # left in the queue until recorded: Ctrl-C while waiting still counts it
        try:
            result = future.result()
        except InterruptedError:
            result = None
        except BaseException as error:  # noqa: BLE001 - one photo's failure must not stop the batch
            if isinstance(error, KeyboardInterrupt):
                raise
            result = failed(job, _reason(error))
        with _ctrl_c_deferred():  # taken off the queue and counted together, never one without the other
            encoding.popleft()
            if result is not None:
                record(result)

    def run_model_on_next() -> None:
        job, future = decoding.popleft()
        try:
            decoded = future.result()
            render = enhancer.infer(decoded)
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001
            record(failed(job, _reason(error)))
            return
        encoding.append((job, encode_pool.submit(finish, job, decoded, render)))
        while len(encoding) > workers:  # bounded: memory stays flat on a folder of any size
            collect_encoded()

    decode_pool = ThreadPoolExecutor(workers, thread_name_prefix="autohdr-decode")
    encode_pool = ThreadPoolExecutor(workers, thread_name_prefix="autohdr-encode")
    try:
        for job in jobs:
            if job.error:
                record(failed(job, job.error))
                continue
            try:
                exists = not options.overwrite and writer.folder.exists(job.relative)
            except (OutputError, OSError) as error:
                record(failed(job, _reason(error)))
                continue
            if exists:
                record(FileResult(display(job.source), display(job.output), "skipped", error="output exists"))
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
        # Writes already under way finish (each is atomic) and are counted; the rest stop before writing.
        for job, future in encoding:
            try:
                record(future.result())
            except BaseException:  # noqa: BLE001
                pass
    finally:
        decode_pool.shutdown(wait=True, cancel_futures=True)
        encode_pool.shutdown(wait=True, cancel_futures=True)
