"""Adobe / DaVinci Resolve ``.cube`` 3D LUT files: reading and writing.

In a ``.cube`` file the red index varies fastest, then green, then blue. We hold a table as a float32
array ``table[b, g, r, c]`` (``S x S x S x 3``), which is that order read straight into memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MIN_SIZE, MAX_SIZE = 2, 256


class CubeError(ValueError):
    """A ``.cube`` file is malformed; the message names the file, the line and the reason."""


@dataclass
class CubeLUT:
    """A 3D LUT: ``table[b, g, r]`` is the RGB output for input (r, g, b) on the grid over the domain."""

    table: np.ndarray
    title: str = ""
    domain_min: tuple[float, float, float] = (0.0, 0.0, 0.0)
    domain_max: tuple[float, float, float] = (1.0, 1.0, 1.0)
    comments: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Grid points along each axis."""
        return self.table.shape[0]


def identity_table(size: int) -> np.ndarray:
    """The ``S x S x S x 3`` table that maps every colour to itself."""
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    b, g, r = np.meshgrid(ramp, ramp, ramp, indexing="ij")
    return np.stack([r, g, b], axis=-1)


def parse_cube(text: str, name: str = "<cube>") -> CubeLUT:
    """Parse the text of a ``.cube`` file; ``name`` is used in error messages."""
    title = ""
    size = None
    domain_min = [0.0, 0.0, 0.0]
    domain_max = [1.0, 1.0, 1.0]
    comments: list[str] = []
    values: list[tuple[float, float, float]] = []
    first_data_line = 0

    def fail(line_number: int, reason: str) -> CubeError:
        return CubeError(f"{name}: line {line_number}: {reason}")

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            comments.append(line[1:].strip())
            continue
        keyword = line.split(None, 1)[0]
        if keyword[0].isalpha():
            if values:
                raise fail(number, f"keyword {keyword} after the table data began")
            rest = line[len(keyword):].strip()
            if keyword == "TITLE":
                title = rest.strip('"')
            elif keyword == "LUT_3D_SIZE":
                try:
                    size = int(rest)
                except ValueError:
                    raise fail(number, f"LUT_3D_SIZE needs a whole number, got {rest!r}") from None
                if not MIN_SIZE <= size <= MAX_SIZE:
                    raise fail(number, f"LUT_3D_SIZE {size} is outside {MIN_SIZE}..{MAX_SIZE}")
            elif keyword == "LUT_1D_SIZE":
                raise fail(number, "1D LUTs are not supported (only LUT_3D_SIZE)")
            elif keyword in ("DOMAIN_MIN", "DOMAIN_MAX"):
                parts = rest.split()
                try:
                    triple = [float(p) for p in parts]
                except ValueError:
                    triple = []
                if len(triple) != 3:
                    raise fail(number, f"{keyword} needs three numbers, got {rest!r}")
                (domain_min if keyword == "DOMAIN_MIN" else domain_max)[:] = triple
            elif keyword in ("LUT_3D_INPUT_RANGE", "LUT_1D_INPUT_RANGE"):
                parts = rest.split()
                try:
                    low, high = (float(p) for p in parts)
                except ValueError:
                    raise fail(number, f"{keyword} needs two numbers, got {rest!r}") from None
                domain_min[:] = [low] * 3
                domain_max[:] = [high] * 3
            else:
                raise fail(number, f"unknown keyword {keyword}")
            continue
        parts = line.split()
        if len(parts) != 3:
            raise fail(number, f"expected three numbers, got {len(parts)}")
        try:
            values.append((float(parts[0]), float(parts[1]), float(parts[2])))
        except ValueError:
            raise fail(number, f"not a number in {line!r}") from None
        if len(values) == 1:
            first_data_line = number
    if size is None:
        raise CubeError(f"{name}: no LUT_3D_SIZE line (not a 3D .cube file?)")
    expected = size**3
    if len(values) != expected:
        raise CubeError(
            f"{name}: LUT_3D_SIZE {size} needs {expected} table rows, found {len(values)}"
            + (f" (table starts on line {first_data_line})" if values else "")
        )
    if any(high <= low for low, high in zip(domain_min, domain_max)):
        raise CubeError(f"{name}: DOMAIN_MAX must be above DOMAIN_MIN on every channel")
    table = np.asarray(values, dtype=np.float32).reshape(size, size, size, 3)
    if not np.isfinite(table).all():
        raise CubeError(f"{name}: the table holds a value that is not a finite number")
    return CubeLUT(table, title, tuple(domain_min), tuple(domain_max), comments)


def read_cube(path: str | os.PathLike) -> CubeLUT:
    """Read a ``.cube`` file; raises :class:`CubeError` naming the file, line and reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise CubeError(f"{path}: not a text file") from None
    except OSError as e:
        raise CubeError(f"{path}: cannot read: {e.strerror or e}") from None
    return parse_cube(text, str(path))


def format_cube(lut: CubeLUT) -> str:
    """The text of a ``.cube`` file for ``lut`` (red fastest, six decimals)."""
    lines = [f"# {c}" for c in lut.comments]
    if lut.title:
        lines.append(f'TITLE "{lut.title}"')
    lines.append(f"LUT_3D_SIZE {lut.size}")
    if tuple(lut.domain_min) != (0.0, 0.0, 0.0) or tuple(lut.domain_max) != (1.0, 1.0, 1.0):
        lines.append("DOMAIN_MIN " + " ".join(f"{v:.6f}" for v in lut.domain_min))
        lines.append("DOMAIN_MAX " + " ".join(f"{v:.6f}" for v in lut.domain_max))
    rows = np.asarray(lut.table, dtype=np.float64).reshape(-1, 3)
    body = "\n".join(f"{r:.6f} {g:.6f} {b:.6f}" for r, g, b in rows)
    return "\n".join(lines) + "\n" + body + "\n"


def write_cube(path: str | os.PathLike, lut: CubeLUT) -> None:
    """Write ``lut`` as a ``.cube`` file, atomically."""
    from .imageio import atomic_write_bytes

    atomic_write_bytes(path, format_cube(lut).encode("utf-8"))
