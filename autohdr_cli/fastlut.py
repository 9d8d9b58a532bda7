"""Applying a 3D LUT to 8-bit photos fast: expand it once to every 8-bit colour, then one lookup a pixel.

An 8-bit RGB pixel can take 256³ values, so the trilinear result for each can be computed ahead into a
table of 16.7 M entries (48 MiB). Trilinear interpolation on a regular grid is separable, so the
expansion is three passes of two-tap linear interpolation, one per axis: about 0.1 s. Applying the
table is then an integer gather, about three times cheaper than Pillow's per-pixel trilinear
``Color3DLUT`` on a 20 MP photo, and torch runs it without the GIL, so photos in several threads scale.
"""

from __future__ import annotations

import numpy as np
import torch

LEVELS = 256
#: Expansion works on this many blue levels at a time, to bound the float temporaries (~25 MiB).
_BLUE_CHUNK = 32


def interpolation_matrix(size: int) -> torch.Tensor:
    """The ``256 x S`` matrix of linear-interpolation weights from an S-point grid to 256 levels."""
    position = torch.arange(LEVELS, dtype=torch.float64) * (size - 1) / (LEVELS - 1)
    lower = position.floor().clamp(max=size - 2).long()
    upper_weight = position - lower
    matrix = torch.zeros(LEVELS, size, dtype=torch.float64)
    rows = torch.arange(LEVELS)
    matrix[rows, lower] = 1.0 - upper_weight
    matrix[rows, lower + 1] += upper_weight
    return matrix.float()


def expand_lut(lut: torch.Tensor) -> torch.Tensor:
    """Expand a ``3 x S x S x S`` LUT (``[c, b, g, r]``) into a ``256³ x 3`` uint8 table.

    Row ``r + 256 g + 65536 b`` holds the rounded trilinear result for the 8-bit colour (r, g, b).
    LUT values are clipped to [0, 1] before interpolating; interpolation is a convex mix, so the result
    stays in range and rounding is a plain truncation after adding one half.
    """
    size = lut.shape[-1]
    weights = interpolation_matrix(size)
    grid = lut.detach().float().cpu().clamp(0.0, 1.0).permute(1, 2, 3, 0) * 255.0 + 0.5  # [b, g, r, c]
    grid = torch.einsum("bgrc,xr->bgxc", grid, weights)  # red to 256 levels
    grid = torch.einsum("bgxc,yg->byxc", grid, weights).reshape(size, -1)  # green: S x (256·256·3)
    table = torch.empty(LEVELS, grid.shape[1], dtype=torch.uint8)
    for start in range(0, LEVELS, _BLUE_CHUNK):
        table[start : start + _BLUE_CHUNK] = (weights[start : start + _BLUE_CHUNK] @ grid).to(torch.uint8)
    return table.reshape(-1, 3)


#: Pixels converted per step in :func:`apply_table`: keeps its temporaries small and in cache.
_ROWS_PIXELS = 1 << 21


def apply_table(rgb: np.ndarray, table: torch.Tensor) -> np.ndarray:
    """Map 8-bit ``H x W x 3`` pixels through an expanded table (see :func:`expand_lut`)."""
    height, width, _ = rgb.shape
    out = np.empty((height, width, 3), dtype=np.uint8)
    flat_out = torch.from_numpy(out.reshape(-1, 3))
    rows = max(1, _ROWS_PIXELS // max(width, 1))
    packed = np.zeros((rows, width, 4), dtype=np.uint8)
    for top in range(0, height, rows):
        block = rgb[top : top + rows]
        count = block.shape[0]
        # One 32-bit word per pixel with a zero fourth byte is the table index r + 256 g + 65536 b
        # (little-endian), with no arithmetic per channel.
        packed[:count, :, :3] = block
        index = torch.from_numpy(packed[:count].view("<i4").reshape(-1))
        torch.index_select(table, 0, index, out=flat_out[top * width : (top + count) * width])
    return out
