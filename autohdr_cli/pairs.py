"""Before/after pairs: two sub-folders of one folder, matched by file stem."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from .imageio import TEMP_MARKER, format_of

#: Accepted (before, after) sub-folder names, in order of preference.
PAIR_FOLDERS = [
    ("source", "target"),
    ("input", "output"),
    ("before", "after"),
    ("src", "tgt"),
    ("lq", "gt"),
    ("raw", "edited"),
]


class PairsError(Exception):
    """A pairs folder cannot be used at all (no known sub-folders, or no pairs)."""


@dataclass
class Pair:
    """One before/after pair; ``stem`` is the file name without its extension, relative to the folder."""

    stem: str
    source: Path
    target: Path


@dataclass
class PairSet:
    """The pairs found in a folder, and one line per file that could not be paired."""

    root: Path
    source_dir: Path
    target_dir: Path
    pairs: list[Pair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def photos_by_stem(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Photos under ``folder`` by relative stem (``sub/name`` without extension), and ambiguous ones."""
    found: dict[str, Path] = {}
    problems: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for filename in sorted(filenames):
            if filename.startswith(TEMP_MARKER) or format_of(filename) is None:
                continue
            path = Path(dirpath) / filename
            if not path.is_file():  # never opened: reading a FIFO would wait forever
                problems.append(f"{path}: not a regular file (a FIFO, socket, device or broken link)")
                continue
            stem = path.relative_to(folder).with_suffix("").as_posix()
            if stem in found:
                problems.append(f"{path}: same name as {found[stem]} (ambiguous pair)")
                continue
            found[stem] = path
    return found, problems


def find_pair_folders(root: str | os.PathLike) -> tuple[Path, Path]:
    """The (before, after) sub-folders of ``root``; raises :class:`PairsError` if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise PairsError(f"{root}: not a folder")
    for before, after in PAIR_FOLDERS:
        if (root / before).is_dir() and (root / after).is_dir():
            return root / before, root / after
    names = ", ".join(f"{a}/{b}" for a, b in PAIR_FOLDERS)
    raise PairsError(f"{root}: no before/after sub-folders (expected one of: {names})")


def find_pairs(root: str | os.PathLike, check_sizes: bool = True) -> PairSet:
    """Match the before and after photos of a pairs folder by stem.

    Unmatched files and pairs whose sizes differ go to ``problems`` (one line each) and are left out.
    Sizes are read from the file headers only, so this is quick on large folders.
    """
    source_dir, target_dir = find_pair_folders(root)
    sources, problems = photos_by_stem(source_dir)
    targets, target_problems = photos_by_stem(target_dir)
    problems += target_problems
    result = PairSet(Path(root), source_dir, target_dir, problems=problems)
    for stem in sorted(set(sources) | set(targets)):
        if stem not in targets:
            result.problems.append(f"{sources[stem]}: no matching file in {target_dir}")
            continue
        if stem not in sources:
            result.problems.append(f"{targets[stem]}: no matching file in {source_dir}")
            continue
        if check_sizes:
            source_size, target_size = image_size(sources[stem]), image_size(targets[stem])
            if source_size is None or target_size is None:
                bad = sources[stem] if source_size is None else targets[stem]
                result.problems.append(f"{bad}: cannot read the image size (damaged or not an image)")
                continue
            if source_size != target_size:
                result.problems.append(
                    f"{sources[stem]}: size {source_size[0]}x{source_size[1]} differs from "
                    f"{targets[stem]} ({target_size[0]}x{target_size[1]})"
                )
                continue
        result.pairs.append(Pair(stem, sources[stem], targets[stem]))
    return result


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as displayed (EXIF orientation applied), read from the header; None if unreadable."""
    try:
        if format_of(path) == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                width, height = page.imagewidth, page.imagelength
                tag = page.tags.get("Orientation")
                orientation = int(tag.value) if tag is not None else 1
        else:
            from PIL import Image

            with Image.open(path) as image:
                width, height = image.size
                orientation = int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - any failure means "cannot be used", reported by the caller
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def split_pairs(pairs: list[Pair], val_fraction: float, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """Split pairs into (train, validation) deterministically: the same seed gives the same split.

    The split depends on the pairs' stems only, not on the order they were listed in. At least one
    pair goes to validation when ``val_fraction`` > 0 and there are two pairs or more.
    """
    ordered = sorted(pairs, key=lambda p: p.stem)
    if val_fraction <= 0 or len(ordered) < 2:
        return ordered, []
    count = min(len(ordered) - 1, max(1, round(len(ordered) * val_fraction)))
    shuffled = ordered[:]
    random.Random(seed).shuffle(shuffled)
    validation = {p.stem for p in shuffled[:count]}
    return [p for p in ordered if p.stem not in validation], [p for p in ordered if p.stem in validation]


def read_stem_list(path: str | os.PathLike) -> set[str]:
    """The pair stems a hold-out list names: one per line, ``#`` starts a comment, blank lines skipped.

    A line may be a bare stem or a file name (``sub/a.jpg``): the extension is dropped, so a list made
    with ``ls`` works. Raises PairsError when the file cannot be read or names nothing.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise PairsError(f"{path}: cannot read the hold-out list: {e.strerror or e}") from None
    stems = set()
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            name = Path(entry)
            stems.add(name.with_suffix("").as_posix() if format_of(name.name) else name.as_posix())
    if not stems:
        raise PairsError(f"{path}: the hold-out list names no pairs")
    return stems


def split_by_stems(pairs: list[Pair], stems: set[str]) -> tuple[list[Pair], list[Pair]]:
    """Split pairs into (train, validation): validation is exactly the pairs whose stem is listed."""
    ordered = sorted(pairs, key=lambda p: p.stem)
    return [p for p in ordered if p.stem not in stems], [p for p in ordered if p.stem in stems]


def check_stems_found(stems: set[str], pairs: list[Pair], list_path: str | os.PathLike) -> None:
    """Raise PairsError when a hold-out list names stems that none of the pairs has (a typo holds out nothing)."""
    missing = sorted(stems - {p.stem for p in pairs})
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise PairsError(f"{list_path}: {len(missing)} listed pair(s) not found: {shown}")
