"""Adobe / DaVinci Resolve ``.cube`` 3D LUT files: reading and writing.

In a ``.cube`` file the red index varies fastest, then green, then blue. We hold a table as a float32
array ``table[b, g, r, c]`` (``S x S x S x 3``), which is that order read straight into memory.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .inputfile import InputFileError, open_regular_file

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


#: The longest line read (a title or comment); a longer one is refused, not read into memory whole.
MAX_LINE_CHARS = 4096
#: Table rows are gathered in blocks of this many, so memory follows the rows actually read.
_BLOCK_ROWS = 65536
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _numbers(text: str, count: int) -> list[float]:
    """``count`` finite numbers separated by spaces; ValueError saying what is wrong otherwise."""
    parts = text.split()
    if len(parts) != count:
        raise ValueError(f"expected {count} numbers, got {len(parts)}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError("not a number") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError("a value that is not finite (NaN or infinity)")
    return values


class _CubeReader:
    """Streaming parser: keywords first, then ``LUT_3D_SIZE``³ rows of three finite numbers.

    Memory follows the file's declared size: rows are stored in float32 blocks as they come, a row
    beyond the declared count stops the reading at once, and no line is read past
    :data:`MAX_LINE_CHARS`.
    """

    def __init__(self, name: str):
        self.name = name
        self.title = ""
        self.size: int | None = None
        self.domain_min = [0.0, 0.0, 0.0]
        self.domain_max = [1.0, 1.0, 1.0]
        self.comments: list[str] = []
        self.blocks: list[np.ndarray] = []
        self.rows = 0
        self.first_data_line = 0

    def fail(self, number: int, reason: str) -> CubeError:
        return CubeError(f"{self.name}: line {number}: {reason}")

    def feed(self, number: int, raw: str) -> None:
        """Take one line of the file (1-based ``number``)."""
        line = raw.strip()
        if not line:
            return
        if line.startswith("#"):
            self.comments.append(line[1:].strip())
            return
        keyword = line.split(None, 1)[0]
        if keyword[0].isalpha():
            self.keyword(number, keyword, line[len(keyword):].strip())
        else:
            self.row(number, line)

    def keyword(self, number: int, keyword: str, rest: str) -> None:
        if self.rows:
            raise self.fail(number, f"keyword {keyword} after the table data began")
        if keyword == "TITLE":
            self.title = rest.strip('"')
        elif keyword == "LUT_3D_SIZE":
            if self.size is not None:
                raise self.fail(number, "a second LUT_3D_SIZE line")
            try:
                size = int(rest)
            except ValueError:
                raise self.fail(number, f"LUT_3D_SIZE needs a whole number, got {rest!r}") from None
            if not MIN_SIZE <= size <= MAX_SIZE:
                raise self.fail(number, f"LUT_3D_SIZE {size} is outside {MIN_SIZE}..{MAX_SIZE}")
            self.size = size
        elif keyword == "LUT_1D_SIZE":
            raise self.fail(number, "1D LUTs are not supported (only LUT_3D_SIZE)")
        elif keyword in ("DOMAIN_MIN", "DOMAIN_MAX"):
            try:
                triple = _numbers(rest, 3)
            except ValueError as e:
                raise self.fail(number, f"{keyword} needs three finite numbers: {e} in {rest[:80]!r}") from None
            (self.domain_min if keyword == "DOMAIN_MIN" else self.domain_max)[:] = triple
        elif keyword in ("LUT_3D_INPUT_RANGE", "LUT_1D_INPUT_RANGE"):
            try:
                pair = _numbers(rest, 2)
            except ValueError as e:
                raise self.fail(number, f"{keyword} needs two finite numbers: {e} in {rest[:80]!r}") from None
            self.domain_min[:] = [pair[0]] * 3
            self.domain_max[:] = [pair[1]] * 3
        else:
            raise self.fail(number, f"unknown keyword {keyword}")

    def row(self, number: int, line: str) -> None:
        if self.size is None:
            raise self.fail(number, "table data before the LUT_3D_SIZE line (no LUT_3D_SIZE line: not a 3D .cube file?)")
        expected = self.size**3
        if self.rows >= expected:
            raise self.fail(number, f"more table rows than LUT_3D_SIZE {self.size} declares ({expected})")
        try:
            values = _numbers(line, 3)
        except ValueError as e:
            raise self.fail(number, f"{e} in {line[:80]!r}") from None
        if max(abs(v) for v in values) > _FLOAT32_MAX:
            raise self.fail(number, f"a value beyond float32's range in {line[:80]!r}")
        at = self.rows % _BLOCK_ROWS
        if at == 0:
            self.blocks.append(np.empty((min(_BLOCK_ROWS, expected - self.rows), 3), dtype=np.float32))
            if not self.rows:
                self.first_data_line = number
        self.blocks[-1][at] = values
        self.rows += 1

    def finish(self) -> CubeLUT:
        """The LUT, once every line has been fed."""
        if self.size is None:
            raise CubeError(f"{self.name}: no LUT_3D_SIZE line (not a 3D .cube file?)")
        expected = self.size**3
        if self.rows != expected:
            raise CubeError(
                f"{self.name}: LUT_3D_SIZE {self.size} needs {expected} table rows, found {self.rows}"
                + (f" (table starts on line {self.first_data_line})" if self.rows else "")
            )
        if any(high <= low for low, high in zip(self.domain_min, self.domain_max)):
            raise CubeError(f"{self.name}: DOMAIN_MAX must be above DOMAIN_MIN on every channel")
        table = np.concatenate(self.blocks) if len(self.blocks) > 1 else self.blocks[0]
        self.blocks = []
        table = table.reshape(self.size, self.size, self.size, 3)
        return CubeLUT(table, self.title, tuple(self.domain_min), tuple(self.domain_max), self.comments)


def parse_cube(text: str, name: str = "<cube>") -> CubeLUT:
    """Parse the text of a ``.cube`` file; ``name`` is used in error messages."""
    reader = _CubeReader(name)
    for number, line in enumerate(text.splitlines(), start=1):
        reader.feed(number, line)
    return reader.finish()


def read_cube(path: str | os.PathLike) -> CubeLUT:
    """Read a ``.cube`` file line by line; raises :class:`CubeError` naming the file, line and reason.

    Only a regular file is opened (a FIFO is refused, not waited on); see :class:`_CubeReader` for
    the memory bounds.
    """
    path = Path(path)
    reader = _CubeReader(str(path))
    number = 0
    try:
        with open_regular_file(path) as binary, io.TextIOWrapper(binary, encoding="utf-8", errors="strict") as text:
            while True:
                line = text.readline(MAX_LINE_CHARS + 1)
                if not line:
                    break
                number += 1
                if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
                    raise reader.fail(number, f"line longer than {MAX_LINE_CHARS} characters")
                reader.feed(number, line)
    except InputFileError as e:
        raise CubeError(str(e)) from None
    except UnicodeDecodeError:
        raise CubeError(f"{path}: not a text file") from None
    except OSError as e:
        raise CubeError(f"{path}: cannot read: {e.strerror or e}") from None
    return reader.finish()


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
