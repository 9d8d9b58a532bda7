"""Applying a 3D LUT to 8-bit photos fast: expand it once to every 8-bit colour, then one lookup a pixel.

An 8-bit RGB pixel can take 256³ values, so the trilinear result for each can be computed ahead into a
table of 16.7 M entries. Trilinear interpolation on a regular grid is separable, so the expansion is
three passes of two-tap linear interpolation, one per axis (tens of milliseconds).

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


def interpolation_matrix(size: int) -> np.ndarray:
    """The ``256 x S`` float32 matrix of linear-interpolation weights from an S-point grid to 256 levels."""
    position = np.arange(LEVELS, dtype=np.float64) * (size - 1) / (LEVELS - 1)
    lower = np.minimum(np.floor(position), size - 2).astype(np.int64)
    upper_weight = position - lower
    matrix = np.zeros((LEVELS, size), dtype=np.float64)
    rows = np.arange(LEVELS)
    matrix[rows, lower] = 1.0 - upper_weight
    matrix[rows, lower + 1] += upper_weight
    return matrix.astype(np.float32)


def _as_numpy(lut) -> np.ndarray:
    # Accept torch tensors without importing torch here.
    if hasattr(lut, "detach"):
        lut = lut.detach().float().cpu().numpy()
    return np.asarray(lut, dtype=np.float32)


def expand_lut(lut) -> np.ndarray:
    """Expand a ``3 x S x S x S`` LUT (``[c, b, g, r]``, numpy or torch) into a 256³-word table.

    Word ``r + 256 g + 65536 b`` holds the bytes (R, G, B, 255) of the rounded trilinear result for the
    8-bit colour (r, g, b). LUT values are clipped to [0, 1] first; interpolation is a convex mix, so
    results stay in range and rounding is a truncation after adding one half.
    """
    grid = _as_numpy(lut)
    size = grid.shape[-1]
    weights = interpolation_matrix(size)
    channels = np.clip(grid, 0.0, 1.0).transpose(1, 2, 3, 0) * np.float32(255.0) + np.float32(0.5)
    # A fourth channel that interpolates to 255 makes each table row a whole word, so the last pass
    # writes contiguous memory (a strided write of three bytes in four was 5x slower).
    grid = np.empty((size, size, size, 4), dtype=np.float32)  # [b, g, r, c]
    grid[..., :3] = channels
    grid[..., 3] = 255.5
    grid = np.matmul(weights, grid)  # red to 256 levels: [b, g, x, c]
    grid = np.matmul(weights, grid.reshape(size, size, LEVELS * 4)).reshape(size, -1)  # green: [b, y·x·c]
    # Blue: a dense matmul would spend S multiplies per entry where two are needed.
    table = np.empty((LEVELS, LEVELS * LEVELS * 4), dtype=np.uint8)
    position = np.arange(LEVELS, dtype=np.float64) * (size - 1) / (LEVELS - 1)
    plane = np.empty((LEVELS * LEVELS * 4,), dtype=np.float32)
    upper = np.empty_like(plane)
    for blue in range(LEVELS):
        lower = min(int(position[blue]), size - 2)
        upper_weight = np.float32(position[blue] - lower)
        np.multiply(grid[lower], np.float32(1.0) - upper_weight, out=plane)
        np.multiply(grid[lower + 1], upper_weight, out=upper)
        plane += upper
        np.copyto(table[blue], plane, casting="unsafe")  # truncating cast: the 0.5 was added up front
    return table.reshape(-1).view(WORD)


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
