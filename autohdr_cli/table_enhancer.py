"""Applying a ``.cube`` look to photos with numpy alone: the torch-free :class:`Enhancer`.

8-bit photos go through the 256³-colour table of :mod:`autohdr_cli.fastlut`; photos of other depths
through the trilinear torch path, imported only when such a photo comes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .cube import CubeLUT, identity_table
from .probe import DEFAULT_MAX_MEGAPIXELS
from .enhancer import Decoded
from .fastlut import apply_table, expand_lut
from .imageio import BufferPool, Photo, read_photo


class TableEnhancer:
    """Applies a ``.cube`` look to photos with numpy alone (see :mod:`autohdr_cli.fastlut`).

    The table of all 256³ colours is expanded once and shared by the encode threads. Photos that are
    not 8-bit (16-bit TIFF or PNG, float TIFF) go through the trilinear torch path instead, which is
    imported the first time such a photo comes.
    """

    #: Photos whose header declares more megapixels are refused before decoding (set by the pipeline).
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS

    def __init__(self, cube: CubeLUT, strength: float = 1.0, pool: BufferPool | None = None):
        self.cube = cube
        self.pool = pool
        self.strength = strength
        table = cube.table.astype(np.float32)
        if strength != 1.0:
            identity = identity_table(cube.size)
            table = identity + (table - identity) * np.float32(strength)
        self.table = expand_lut(table.transpose(3, 0, 1, 2))
        self._fallback = None
        self._fallback_lock = threading.Lock()

    def decode(self, path: Path) -> Decoded:
        """Read a photo (worker thread)."""
        started = time.perf_counter()
        return Decoded(read_photo(path, self.pool, max_megapixels=self.max_megapixels), None, started)

    def infer(self, decoded: Decoded) -> Callable[[], Photo]:
        """Nothing to run on a model thread: the whole lookup is left to the encode thread."""
        photo = decoded.photo
        if photo.pixels.dtype == np.uint8:
            return lambda: photo.with_pixels(apply_table(photo.pixels, self.table, self._output_buffer(photo)))
        return self._trilinear().infer(decoded)

    def _output_buffer(self, photo: Photo) -> np.ndarray | None:
        return self.pool.take(photo.height, photo.width) if self.pool else None

    def _trilinear(self):
        with self._fallback_lock:
            if self._fallback is None:
                from .inference import ModelEnhancer, resolve_device
                from .models.lut import StaticLUT

                model = StaticLUT.from_cube(self.cube)
                self._fallback = ModelEnhancer(model, resolve_device("cpu"), self.strength)
            return self._fallback


def has_unit_domain(cube: CubeLUT) -> bool:
    """Whether a ``.cube`` LUT covers inputs 0..1, the only domain the 8-bit table path handles."""
    return tuple(cube.domain_min) == (0.0, 0.0, 0.0) and tuple(cube.domain_max) == (1.0, 1.0, 1.0)
