"""Applying a 3D LUT to 8-bit photos fast: expand it once to every 8-bit colour, then one lookup a pixel.

An 8-bit RGB pixel can take 256³ values, so the trilinear result for each can be computed ahead into a
table of 16.7 M entries. Trilinear interpolation on a regular grid is separable, so the expansion is
three passes of linear interpolation, one per axis (~33 ms on one core, table and work memory reused).

The table holds one 32-bit word per colour, the bytes R, G, B, 255: the layout Pillow keeps RGB images
in. A photo decoded straight into such a buffer (:func:`autohdr_cli.imageio.read_photo` does) is then
already a list of table indices: the word of pixel (r, g, b, 255) read as a signed little-endian int32
is ``r + 256 g + 65536 b - 2²⁴``, which numpy's ``take`` in ``wrap`` mode brings back to row
``r + 256 g + 65536 b`` (and does so whatever the fourth byte holds). So applying the look is a single gather, with no
arithmetic per channel, and its result is again a buffer Pillow can encode without a copy.

Only numpy is used, and it releases the GIL in ``take``, so photos in several threads scale, and a run
that applies a ``.cube`` file never has to import torch (about two seconds of start-up).
"""

from __future__ import annotations

import threading

import numpy as np

from .imageio import rgbx_buffer

LEVELS = 256
#: Table and pixel words are read as little-endian whatever the machine, so the bytes stay R, G, B, X.
WORD = np.dtype("<u4")
INDEX = np.dtype("<i4")
#: Pixels looked up per ``take`` call: numpy converts each chunk's indices to intp, so a chunk that
#: fits in cache keeps that temporary cheap (measured: 64 Ki pixels ~3x faster than 4 Mi). ``wrap``
#: mode is also the fastest mode here (no bounds error path).
_CHUNK_PIXELS = 1 << 16


def _as_numpy(lut) -> np.ndarray:
    # Accept torch tensors without importing torch here.
    if hasattr(lut, "detach"):
        lut = lut.detach().float().cpu().numpy()
    return np.asarray(lut, dtype=np.float32)


#: Columns of the last (blue) pass done at a time: the running plane and its increment (512 KiB
#: each) stay in cache; with the whole 1 MiB row, two threads expanding at once ran no faster than one.
_BLUE_COLUMNS = LEVELS * LEVELS * 2


def _upsample(grid: np.ndarray, out: np.ndarray) -> None:
    """Linear interpolation along the first axis, from S grid points to 256 levels: ``out[level]``.

    Levels step evenly through each grid cell, so within a cell a level is the previous one plus a
    fixed increment: one addition and one store per level, on small arrays, with no matrix product
    (numpy's BLAS threads, started from our worker threads, cost more than they gave). A uint8
    ``out`` gets a truncating cast.
    """
    size = grid.shape[0]
    position = np.arange(LEVELS, dtype=np.float64) * (size - 1) / (LEVELS - 1)
    step = np.float32((size - 1) / (LEVELS - 1))
    plane = np.empty(grid.shape[1:], dtype=np.float32)
    increment = np.empty_like(plane)
    cell = -1
    for level in range(LEVELS):
        lower = min(int(position[level]), size - 2)
        if lower != cell:  # entering a cell: start exactly from its two grid planes
            cell = lower
            np.subtract(grid[lower + 1], grid[lower], out=increment)
            np.multiply(increment, np.float32(position[level] - lower), out=plane)
            plane += grid[lower]
            increment *= step
        else:
            plane += increment
        np.copyto(out[level], plane, casting="unsafe")


_local = threading.local()


def _scratch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 work array of ``shape``, kept per thread: the intermediate planes of an expansion are
    ~35 MB, and faulting in fresh memory for them was a sixth of the expansion's time."""
    array = getattr(_local, name, None)
    if array is None or array.shape != shape:
        array = np.empty(shape, dtype=np.float32)
        setattr(_local, name, array)
    return array


def expand_lut(lut, out: np.ndarray | None = None) -> np.ndarray:
    """Expand a ``3 x S x S x S`` LUT (``[c, b, g, r]``, numpy or torch) into a 256³-word table.

    Word ``r + 256 g + 65536 b`` holds the bytes (R, G, B, 255) of the rounded trilinear result for the
    8-bit colour (r, g, b). LUT values are clipped to [0, 1] first; interpolation is a convex mix, so
    results stay in range and rounding is a truncation after adding one half. ``out``, if given, is
    any contiguous uint8 buffer of 64 MiB to write the table into (a reused one saves its page faults).
    """
    grid = _as_numpy(lut)
    size = grid.shape[-1]
    if out is None:
        out = np.empty(LEVELS**3 * 4, dtype=np.uint8)
    elif out.dtype != np.uint8 or out.nbytes != LEVELS**3 * 4 or not out.flags.c_contiguous:
        raise ValueError("out must be a contiguous uint8 buffer of 256³ x 4 bytes")
    # A fourth channel that interpolates to 255 makes each table entry a whole word, so the last
    # pass writes contiguous memory (a strided write of three bytes in four was 5x slower).
    channels = np.empty((size, size, size, 4), dtype=np.float32)  # [r, b, g, c]
    channels[..., :3] = np.clip(grid, 0.0, 1.0).transpose(3, 1, 2, 0) * np.float32(255.0) + np.float32(0.5)
    channels[..., 3] = 255.5
    red = _scratch("red", (size, size, LEVELS, 4))  # [b, g, x, c]
    _upsample(channels, red.transpose(2, 0, 1, 3))
    green = _scratch("green", (size, LEVELS, LEVELS * 4))  # [b, y, x·c]
    _upsample(red.reshape(size, size, LEVELS * 4).transpose(1, 0, 2), green.transpose(1, 0, 2))
    green, table = green.reshape(size, -1), out.reshape(LEVELS, -1)
    for start in range(0, green.shape[1], _BLUE_COLUMNS):  # in halves, so a plane stays in cache
        _upsample(green[:, start : start + _BLUE_COLUMNS], table[:, start : start + _BLUE_COLUMNS])
    return out.reshape(-1).view(WORD)


def apply_table(rgb: np.ndarray, table: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Map 8-bit ``H x W x 3`` pixels through an expanded table (see :func:`expand_lut`).

    Returns ``H x W x 3`` pixels that are the first three bytes of ``out`` (a contiguous ``H x W x 4``
    uint8 buffer, fresh if not given), which :func:`autohdr_cli.imageio.write_photo` hands to the
    encoder without a copy.
    """
    height, width, _ = rgb.shape
    if out is None:
        out = np.empty((height, width, 4), dtype=np.uint8)
    elif out.shape != (height, width, 4) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous {height} x {width} x 4 uint8 buffer")
    out_words = out.reshape(-1).view(WORD)
    packed = rgbx_buffer(rgb)
    if packed is not None:
        words = packed.reshape(-1).view(INDEX)
        for start in range(0, words.shape[0], _CHUNK_PIXELS):
            stop = start + _CHUNK_PIXELS
            np.take(table, words[start:stop], out=out_words[start:stop], mode="wrap")
        return out[:, :, :3]
    # A plain 3-byte array: pack a band of rows at a time into words with a fourth byte of 255.
    rows = max(1, _CHUNK_PIXELS // max(width, 1))
    band = np.full((rows, width, 4), 255, dtype=np.uint8)
    for top in range(0, height, rows):
        block = rgb[top : top + rows]
        count = block.shape[0]
        band[:count, :, :3] = block
        words = band[:count].reshape(-1).view(INDEX)
        np.take(table, words, out=out_words[top * width : (top + count) * width], mode="wrap")
    return out[:, :, :3]
