"""The reports of an evaluation: terminal table, JSON, CSV, HTML page and contact sheet.

The HTML report's thumbnails are written while photos are scored (:class:`ReportImages`, kept on disk
so memory stays flat) and assembled at the end.
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
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import __version__
from .imageio import TEMP_MARKER, atomic_write_bytes
from .resize import resize_long_side
from .scores import IDENTITY, METRICS, EvaluateError, Evaluation, PhotoScores, Score, metric_named, summarize

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

# --------------------------------------------------------------------------------------- report images


def thumbnail(image: torch.Tensor, size: int = THUMBNAIL_SIZE) -> torch.Tensor:
    """Shrink ``C x H x W`` so its long side is at most ``size`` (antialiased; never enlarged)."""
    return resize_long_side(image.float(), size)


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
        caption="worst: lowest PSNR and SSIM, highest ΔE00 and LPIPS",
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
        "sorted_by": f"{evaluation.primary}.{evaluation.sort_key}",
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
                       f"worst first by {html.escape(metric_named(evaluation.sort_key).label)} of "
                       f"<b>{html.escape(evaluation.primary)}</b>. "
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
                        f"PSNR {format_number(primary.psnr, 2)} dB, SSIM {primary.ssim:.3f}, "
                        f"LPIPS {format_number(primary.lpips, 3)}")
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
