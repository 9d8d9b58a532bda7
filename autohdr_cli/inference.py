"""Running torch models on photos: one call on tensors, and the per-photo steps of the folder pipeline.

Kept apart from :mod:`autohdr_cli.pipeline` so that a run that only applies a ``.cube`` file never
imports torch (about two seconds of start-up on a small machine).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .fastlut import LEVELS, apply_table, expand_lut
from .imageio import BufferPool, Photo, pillow_image, quantize, read_photo, rgbx_buffer, to_float
from .models.lut import apply_lut, blend_lut, make_thumbnail
from .probe import DEFAULT_MAX_MEGAPIXELS
from .enhancer import DEFAULT_OVERLAP, DEFAULT_PRECISION, DEFAULT_TILE, Decoded, UsageError
from .tiling import enhance_tiled, precision_context, set_tf32


def is_global(model: nn.Module) -> bool:
    """True for models that turn each photo into one 3D LUT (applied by the pipeline at full size);
    a model that can do either says which it does now with ``carries_lut`` (localtone's ``lut_size``)."""
    return hasattr(model, "predict_lut") and getattr(model, "carries_lut", True)


def model_thumbnail(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The small copy a global model predicts its LUT from: the model's own ``make_thumbnail`` when it
    has one (ip2p keeps the aspect ratio), else a ``thumbnail_size`` square."""
    own = getattr(model, "make_thumbnail", None)
    return own(images) if own is not None else make_thumbnail(images, model.thumbnail_size)


def predict_luts(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Ask a global model for one LUT per image (``B x 3 x S x S x S``), from a thumbnail if it wants one."""
    size = getattr(model, "thumbnail_size", 0)
    thumbnails = model_thumbnail(model, images) if size else images[:, :, :1, :1]
    return model.predict_lut(thumbnails)


def global_edit(model: nn.Module, images: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """A global (LUT) model's edit of whole float images (``B x 3 x H x W``): one LUT per image, predicted
    from its thumbnail and applied at full size. Not clipped: LUT values lie in the model's range."""
    normalize = getattr(model, "normalize_input", None)
    luts = blend_lut(predict_luts(model, images), strength)
    return apply_lut(normalize(images) if normalize else images, luts)


def base_edit(base: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A base model's edit of whole float images (``B x 3 x H x W``), clipped to [0, 1]: a global model's
    LUT (:func:`global_edit`), or the model's own whole-photo pass (localtone)."""
    edited = global_edit(base, images) if is_global(base) else base(images)
    return edited.clamp(0.0, 1.0)


def base_of(model: nn.Module) -> nn.Module | None:
    """The global model a local model's checkpoint applies to the whole photo first (``train --base``)."""
    return getattr(model, "base", None)


def enhance_tensor(
    model: nn.Module,
    images: torch.Tensor,
    *,
    strength: float = 1.0,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Enhance float images in [0, 1] (``3 x H x W`` or ``B x 3 x H x W``) with any autohdr model.

    ``strength`` blends the result with the input (0 = input unchanged, 1 = full effect). The result is
    on the input's device, clipped to [0, 1], same shape as the input.
    """
    single = images.dim() == 3
    batch = images.unsqueeze(0) if single else images
    source_device = batch.device
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batch = batch.to(device, torch.float32)
    with torch.inference_mode():
        if is_global(model):
            result = global_edit(model, batch, strength)
        else:
            base = base_of(model)
            result = model(batch if base is None else base_edit(base, batch))
            if strength != 1.0:
                result = batch + (result - batch) * strength
        result = result.clamp(0.0, 1.0).to(source_device)
    return result[0] if single else result



def resolve_device(name: str) -> torch.device:
    """``--device`` for enhancing (see :mod:`autohdr_cli.devices`); raises UsageError if unusable here."""
    from .devices import DeviceError, resolve_device as resolve

    try:
        return resolve(name)
    except DeviceError as e:
        raise UsageError(str(e)) from None



def pixels_to_device(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """``H x W x 3`` samples (uint8, uint16 or float32) as a ``1 x 3 x H x W`` float32 tensor in [0, 1].

    On CUDA the samples travel as stored (8-bit ones in their RGBX buffer: a third of float32's
    bytes), from pinned memory with a non-blocking copy, and become floats on the GPU.
    """
    if device.type != "cuda":
        return torch.from_numpy(np.ascontiguousarray(to_float(pixels).transpose(2, 0, 1))).unsqueeze(0)
    buffer = rgbx_buffer(pixels)
    if buffer is not None:
        samples = np.ascontiguousarray(buffer)
    elif pixels.dtype == np.uint16:
        samples = pixels.astype(np.int32)  # torch has few uint16 kernels
    else:
        samples = np.ascontiguousarray(pixels)
    host = torch.from_numpy(samples).pin_memory()
    images = host.to(device, non_blocking=True)[:, :, :3].permute(2, 0, 1).unsqueeze(0).float()
    if pixels.dtype == np.uint8:
        return images / 255.0
    if pixels.dtype == np.uint16:
        return images / 65535.0
    return images.clamp(0.0, 1.0)


def pixels_from_device(result: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """A ``1 x 3 x H x W`` result as ``H x W x 3`` samples for :func:`autohdr_cli.imageio.quantize`.

    On CUDA, 8- and 16-bit results are rounded on the GPU, so a quarter (half) of float32's bytes
    come back; elsewhere the float pixels are returned as they are.
    """
    image = result[0].clamp(0.0, 1.0).permute(1, 2, 0).float()
    dtype = np.dtype(dtype)
    if image.device.type != "cuda" or dtype not in (np.uint8, np.uint16):
        return image.cpu().numpy()
    if dtype == np.uint8:
        return (image * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
    return (image * 65535.0 + 0.5).to(torch.int32).cpu().numpy().astype(np.uint16)


class ModelEnhancer:
    """Runs one model over photos: the per-photo steps the folder pipeline spreads over threads.

    Global (LUT) models: the decode thread also makes the thumbnail, the model thread predicts a LUT
    (milliseconds), and the encode thread applies it at full size: for 8-bit photos on the CPU through
    a table of all 256³ colours (:mod:`autohdr_cli.fastlut`; expanding a LUT costs ~35 ms, a tenth of
    Pillow's direct trilinear lookup on a 12 MP photo), which runs without the GIL, so threads scale.
    Other models run on the model thread. On CUDA, the network (a LUT model's predictor, a
    convolutional model's layers) computes in ``precision`` (:data:`autohdr_cli.enhancer.PRECISIONS`);
    LUT lookups, blending and rounding stay float32.
    """

    #: Photos whose header declares more megapixels are refused before decoding (set by the pipeline).
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        strength: float = 1.0,
        tile: int = DEFAULT_TILE,
        tile_overlap: int = DEFAULT_OVERLAP,
        pool: BufferPool | None = None,
        precision: str = DEFAULT_PRECISION,
    ):
        if precision != DEFAULT_PRECISION and device.type != "cuda":
            raise UsageError(f"--precision {precision} is for CUDA devices only: on {device} models compute in fp32")
        if device.type == "cuda":
            set_tf32(precision)
        self.precision = precision
        self.model = model.to(device).eval()
        self.pool = pool
        self.device = device
        self.strength = strength
        self.tile, self.tile_overlap = tile, tile_overlap
        self.global_model = is_global(model)
        self.thumbnail_size = getattr(model, "thumbnail_size", 0) if self.global_model else 0
        self._shared_lut: torch.Tensor | None = None
        self._shared_table: np.ndarray | None = None
        self._table_lock = threading.Lock()
        # Per-photo LUT tables (64 MiB each) get a pool of their own: in the photo pool, which keeps a
        # few buffers only, they pushed photo buffers out, which then had to be faulted in afresh.
        self._tables = BufferPool()
        config = getattr(model, "config", None)
        self.custom_domain = bool(
            config is not None
            and (
                tuple(getattr(config, "domain_min", (0, 0, 0))) != (0, 0, 0)
                or tuple(getattr(config, "domain_max", (1, 1, 1))) != (1, 1, 1)
            )
        )

    def decode(self, path: Path) -> Decoded:
        """Read a photo (worker thread) and make the model's thumbnail if it needs one."""
        started = time.perf_counter()
        photo = read_photo(path, self.pool, max_megapixels=self.max_megapixels)
        thumbnail = None
        if self.thumbnail_size:
            thumbnail = self._thumbnail(photo.pixels)
        return Decoded(photo, thumbnail, started)

    def _thumbnail(self, pixels: np.ndarray) -> torch.Tensor:
        # A box reduction in Pillow (C, no GIL) first, so the float conversion touches few pixels. It
        # reads every third row or so only: reading all of them was most of the thumbnail's cost, and
        # the predicted LUT moves by ~0.1 of an 8-bit level for it (measured on 12 MP photos).
        size = self.thumbnail_size
        factor = max(1, min(pixels.shape[0], pixels.shape[1]) // (2 * size))
        if pixels.dtype == np.uint8 and factor > 1:
            row_step = max(1, factor // 3)
            small = np.asarray(pillow_image(pixels, row_step).reduce((factor, max(1, factor // row_step))))
        else:
            small = pixels[:: max(1, factor), :: max(1, factor)]
        tensor = torch.from_numpy(np.ascontiguousarray(to_float(small).transpose(2, 0, 1))).unsqueeze(0)
        return model_thumbnail(self.model, tensor)

    def infer(self, decoded: Decoded) -> Callable[[], Photo]:
        """Run the model (model thread); returns the rest of the work, to run in an encode thread."""
        photo = decoded.photo
        with torch.inference_mode():
            if self.global_model:
                if self.thumbnail_size == 0:  # the same LUT for every photo: predict and expand it once
                    if self._shared_lut is None:
                        self._shared_lut = self._predict(torch.zeros(1, 3, 1, 1))
                    lut = self._shared_lut
                else:
                    lut = self._predict(decoded.thumbnail)
                return lambda: photo.with_pixels(self._apply_lut(photo, lut))
            images = pixels_to_device(photo.pixels, self.device)
            base = base_of(self.model)
            # The base sees the whole photo (its LUT comes from the whole photo's thumbnail), before any tiling.
            edited = images if base is None else base_edit(base, images)
            if getattr(self.model, "tileable", False):
                result = enhance_tiled(self.model, edited, self.tile, self.tile_overlap, precision=self.precision)
            else:
                with precision_context(self.device, self.precision):
                    result = self.model(edited).float()
            if self.strength != 1.0:
                result = images + (result - images) * self.strength
            pixels = pixels_from_device(result, photo.pixels.dtype)
        return lambda: photo.with_pixels(quantize(pixels, photo.pixels.dtype))

    def _predict(self, thumbnail: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cpu" or getattr(self.model, "heavy_predictor", False):
            with precision_context(self.device, self.precision):
                lut = self.model.predict_lut(thumbnail.to(self.device)).float()
            return blend_lut(lut, self.strength)[0]
        # One torch thread: the predictor is a few milliseconds of small ops, and torch's idle worker
        # threads spin for a while after each parallel region, taking cores from the decode and encode
        # threads beside it.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return blend_lut(self.model.predict_lut(thumbnail), self.strength)[0]
        finally:
            torch.set_num_threads(threads)

    def _shared_table_for(self, lut: torch.Tensor) -> np.ndarray:
        with self._table_lock:  # encode threads share one expansion of the shared LUT
            if self._shared_table is None:
                self._shared_table = expand_lut(lut)
            return self._shared_table

    def _apply_lut(self, photo: Photo, lut: torch.Tensor) -> np.ndarray:
        pixels = photo.pixels
        if pixels.dtype == np.uint8 and self.device.type == "cpu" and not self.custom_domain:
            out = self.pool.take(photo.height, photo.width) if self.pool else None
            if lut is self._shared_lut:
                return apply_table(pixels, self._shared_table_for(lut), out)
            # A per-photo table, in a reused buffer (first touch of fresh memory is ~30% of the
            # expansion's time).
            table_buffer = self._tables.take(LEVELS * LEVELS, LEVELS)  # 256³ words
            try:
                return apply_table(pixels, expand_lut(lut, table_buffer.reshape(-1)), out)
            finally:
                self._tables.give(table_buffer)
        with torch.inference_mode():
            images = pixels_to_device(pixels, self.device)
            normalize = getattr(self.model, "normalize_input", None)
            result = apply_lut(normalize(images) if normalize else images, lut.to(self.device))
            return quantize(pixels_from_device(result, pixels.dtype), pixels.dtype)
