"""Full-resolution inference of convolutional models on overlapping tiles, blended without seams.

A 24 MP photo does not fit through a U-Net in one piece on an ordinary machine (NAFNet's first level
alone holds tens of feature maps of the photo's size), so it goes through in tiles of ``tile`` pixels that
overlap by at least ``overlap``; each output pixel is a weighted mean of the tiles that cover it, the
weights falling linearly to zero across each overlap (feathering), so no tile edge shows.

Two details make tiles agree with an untiled run, not just with each other:

* Whole-image statistics. A model that averages over the whole image (NAFNet's channel attention) would
  see a different average in every tile. Such a model offers ``image_context(images)``: the tiler computes
  it once per photo, on a copy at most ``context_size`` pixels long (the photo itself when it is that
  small, which makes the result match the untiled one), and passes it to every tile as
  ``model(tiles, context)``.
* Surroundings. A model that reads how bright the photo is around each pixel (a NAFNet with
  ``neighbourhoods``) offers ``neighbourhood_maps(images)``: measured once on the whole photo, each tile
  gets its window as ``model(tiles, context, maps=...)``.
* Alignment. Tiles start at multiples of the model's ``multiple`` (its total downsampling), so every
  stride-2 layer samples the same pixel grid as in the untiled run; the photo is padded the way the model
  pads (edge pixels repeated), so border tiles see what the untiled model sees.

Memory: the input, the output, one batch of tiles and the context pass. Nothing else grows with the photo.
Tiles of several photos of one size (a ``B x 3 x H x W`` batch) are batched together.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .enhancer import DEFAULT_OVERLAP, DEFAULT_PRECISION, DEFAULT_TILE  # enhance's defaults
from .edits import window_of
from .resize import resize_long_side

#: Tiles per model call on a GPU (where batching fills the device). On a CPU one tile a call is fastest:
#: measured 2606 ms/MP for one 256 px tile against 3027 for two, because a tile's feature maps then stay
#: in cache and below the allocator's mmap threshold (no page faults on every layer).
GPU_BATCH = 8
#: Long side of the copy that whole-image statistics are computed on (about 0.8 MP at 3:2).
DEFAULT_CONTEXT_SIZE = 1024


@dataclass(frozen=True)
class TileLayout:
    """Where the tiles of one axis start, their common length, and each one's blending weights."""

    starts: tuple[int, ...]
    length: int
    padded: int  # the axis length rounded up to the model's multiple (tiles may reach into the padding)
    weights: tuple[torch.Tensor, ...]  # per tile, ``length`` weights; summed over tiles they are 1 everywhere


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _ramp(distance: torch.Tensor, shared: int) -> torch.Tensor:
    """Weight by distance from a tile edge, across ``shared`` pixels of overlap: zero over the outer
    quarter (the pixels nearest the edge see the convolutions' zero padding), then linear up to 1."""
    dead = shared / 4
    return ((distance - dead) / max(shared - 2 * dead, 1e-9)).clamp(0.0, 1.0)


def plan_axis(size: int, tile: int, overlap: int, multiple: int = 1) -> TileLayout:
    """Lay tiles of about ``tile`` pixels along an axis of ``size`` pixels, overlapping by >= ``overlap``.

    Starts and the tile length are multiples of ``multiple``; the last tile is moved back to end at the
    (padded) edge instead of hanging over it, so every tile has the same length and can be batched.
    Each tile's weight ramps linearly over the part it shares with a neighbour; the ramps of neighbours
    are normalised to sum to 1 at every pixel.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile (got tile={tile}, overlap={overlap})")
    padded = _round_up(size, multiple)
    length = min(max(multiple, tile // multiple * multiple), padded)
    span = padded - length  # where the last tile starts
    stride = max(multiple, (length - overlap) // multiple * multiple)
    pieces = -(-span // stride) + 1
    # Spread the tiles evenly (not a fixed stride and a last tile squeezed against the edge): every
    # overlap gets at least ``overlap`` pixels, most get more, for the same number of tiles.
    starts = [span * i // max(1, pieces - 1) // multiple * multiple for i in range(pieces - 1)] + [span]
    raw = []
    positions = torch.arange(length, dtype=torch.float64) + 0.5
    for index, start in enumerate(starts):
        ramp = torch.ones(length, dtype=torch.float64)
        if index > 0:
            ramp = ramp * _ramp(positions, starts[index - 1] + length - start)
        if index < len(starts) - 1:
            ramp = ramp * _ramp(length - positions, start + length - starts[index + 1])
        raw.append(ramp)
    total = torch.zeros(padded, dtype=torch.float64)
    for start, ramp in zip(starts, raw):
        total[start : start + length] += ramp
    weights = tuple((ramp / total[start : start + length]).float() for start, ramp in zip(starts, raw))
    return TileLayout(tuple(starts), length, padded, weights)


def precision_context(device: torch.device, precision: str = DEFAULT_PRECISION):
    """The autocast of ``precision`` (bf16 or fp16) on CUDA; nothing for fp32/tf32 or off CUDA.

    TF32 is a process-wide switch, not a context: :func:`set_tf32` sets it once per run.
    """
    if device.type != "cuda" or precision not in ("bf16", "fp16"):
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def set_tf32(precision: str) -> None:
    """Let CUDA convolutions and matmuls use TF32 for ``tf32`` only; ``fp32`` means float32 exactly.

    (torch's own default allows TF32 in cuDNN convolutions, which would make "fp32" on a GPU
    disagree with the CPU by more than float32 rounding.)
    """
    allowed = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed


def enhance_tiled(
    model: nn.Module,
    images: torch.Tensor,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch: int | None = None,
    *,
    context_size: int = DEFAULT_CONTEXT_SIZE,
    channels_last: bool = True,
    precision: str = DEFAULT_PRECISION,
) -> torch.Tensor:
    """Run an image-to-image ``model`` on ``images`` (``B x 3 x H x W``) tile by tile; same shape out.

    ``tile`` and ``overlap`` are in pixels (rounded to the model's ``multiple``); ``batch`` tiles go
    through the model at once, from any of the ``B`` images (default: 1 on the CPU, :data:`GPU_BATCH`
    on a GPU). Whole-image statistics come from
    ``model.image_context`` on a copy at most ``context_size`` long (see the module notes). The model runs
    where its parameters are, in inference mode, with channels-last tiles (faster convolutions and
    LayerNorm on the CPU) and, on CUDA, under ``precision``'s autocast (:func:`precision_context`; fp32 by
    default); the result is float32 on the input's device. The model is not modified: put it in eval mode first.
    """
    if images.dim() != 4:
        raise ValueError(f"expected a B x C x H x W batch, got shape {tuple(images.shape)}")
    count, _channels, height, width = images.shape
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else images.device
    if batch is None:
        batch = 1 if device.type == "cpu" else GPU_BATCH
    if batch < 1:
        raise ValueError(f"batch must be >= 1 (got {batch})")
    multiple = int(getattr(model, "multiple", 1))
    rows = plan_axis(height, tile, overlap, multiple)
    columns = plan_axis(width, tile, overlap, multiple)
    output = torch.zeros(count, 3, height, width, dtype=torch.float32, device=images.device)

    with torch.inference_mode(), precision_context(device, precision):
        if len(rows.starts) == 1 and len(columns.starts) == 1:
            # One tile covers the photo: run it whole (its own statistics are the exact ones).
            output.copy_(model(images.to(device, torch.float32)).float())
            return output
        whole = images.to(device, torch.float32)  # one copy on the device for both whole-photo measures
        context: Sequence[torch.Tensor] | None = None
        if hasattr(model, "image_context"):
            small = resize_long_side(whole, context_size)
            if channels_last:
                small = small.contiguous(memory_format=torch.channels_last)
            context = model.image_context(small)
        # Maps of the whole photo's surroundings (a NAFNet with neighbourhoods), measured once; each tile
        # gets its window, so tiles agree with each other and with an untiled run.
        coarse = model.neighbourhood_maps(whole) if hasattr(model, "neighbourhood_maps") else None
        del whole  # tiles are cut from the photo as given: free the device copy before they run

        placements = [
            (index, row, column)
            for index in range(count)
            for row in range(len(rows.starts))
            for column in range(len(columns.starts))
        ]
        for first in range(0, len(placements), batch):
            group = placements[first : first + batch]
            tiles = torch.stack([_cut(images, index, rows, columns, row, column) for index, row, column in group])
            tiles = tiles.to(device, torch.float32, non_blocking=True)
            if channels_last:
                tiles = tiles.contiguous(memory_format=torch.channels_last)
            extra = {}
            if coarse is not None:
                extra["maps"] = torch.cat([
                    window_of(coarse[index : index + 1], height, width, rows.starts[row], columns.starts[column],
                              rows.length, columns.length)
                    for index, row, column in group
                ])
            if context is not None:
                picked = torch.tensor([index for index, _r, _c in group], device=device)
                results = model(tiles, [statistic.index_select(0, picked) for statistic in context], **extra)
            else:
                results = model(tiles, **extra)
            results = results.float().to(images.device)
            for result, (index, row, column) in zip(results, group):
                _add(output, result, index, rows, columns, row, column)
    return output


def _cut(images: torch.Tensor, index: int, rows: TileLayout, columns: TileLayout, row: int, column: int) -> torch.Tensor:
    """Tile (row, column) of image ``index``, edge pixels repeated where it reaches past the photo."""
    height, width = images.shape[-2:]
    top, left = rows.starts[row], columns.starts[column]
    piece = images[index, :, top : top + rows.length, left : left + columns.length]
    missing_bottom = rows.length - piece.shape[-2]
    missing_right = columns.length - piece.shape[-1]
    if missing_bottom or missing_right:
        piece = F.pad(piece[None].float(), (0, missing_right, 0, missing_bottom), mode="replicate")[0]
    return piece


def _add(
    output: torch.Tensor,
    result: torch.Tensor,
    index: int,
    rows: TileLayout,
    columns: TileLayout,
    row: int,
    column: int,
) -> None:
    """Blend one tile's result into the output with its feathering weights (separable, pre-normalised)."""
    height, width = output.shape[-2:]
    top, left = rows.starts[row], columns.starts[column]
    keep_rows = min(rows.length, height - top)
    keep_columns = min(columns.length, width - left)
    if keep_rows <= 0 or keep_columns <= 0:
        return
    weight = (
        rows.weights[row][:keep_rows, None].to(result.device) * columns.weights[column][None, :keep_columns].to(result.device)
    )
    output[index, :, top : top + keep_rows, left : left + keep_columns].add_(result[:, :keep_rows, :keep_columns] * weight)
