"""Training data: before/after pairs decoded and cropped, degraded photos, and the split into train/validation.

What the loop in :mod:`autohdr_cli.train` draws its batches from. Each source offers ``batch(size,
crop, generator)``; crops are paired (the same window of source and target), augmentation is
geometric only, and photos of any size batch together through their whole-photo thumbnails.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .edits import LocalEditRanges, local_edits, random_local_edits, window_of
from .imageio import PhotoError, atomic_write_bytes, load_image
from .resize import resize_long_side  # noqa: F401 - re-exported: scripts and tests use it from here
from .pairs import Pair, PairsError, check_stems_found, find_pairs, read_stem_list, split_by_stems, split_pairs


class TrainError(Exception):
    """Training cannot start or go on: bad data, options that do not fit, or an unreadable resume file."""


# --------------------------------------------------------------------------------------------- pairs


@functools.lru_cache(maxsize=None)
def paired_augmentation() -> Callable[[torch.Tensor], torch.Tensor]:
    """Kornia geometric augmentation for a stack of aligned images ``B x C x H x W``: flips and
    90-degree turns. Source and target travel as channels of one tensor, so they always get the same
    geometry; there is never any colour jitter (the colours are what the model learns)."""
    import kornia.augmentation as K

    return K.AugmentationSequential(
        K.RandomHorizontalFlip(p=0.5),
        K.RandomVerticalFlip(p=0.5),
        K.RandomRotation90(times=(0, 3), p=0.75),
    )


@functools.lru_cache(maxsize=None)
def _cropper(crop: int) -> Callable[[torch.Tensor], torch.Tensor]:
    import kornia.augmentation as K

    return K.RandomResizedCrop((crop, crop), scale=(0.3, 1.0), ratio=(0.75, 1.333), p=1.0)


def random_crops(images: Sequence[torch.Tensor], crop: int) -> torch.Tensor:
    """One random resized crop (30-100% of the area, kornia) of each ``C x H x W`` image, ``B x C x crop x crop``.

    Taking most of the picture keeps a crop's thumbnail close to the whole-photo thumbnail the model
    gets at inference. Images of one size are cropped in one batched call.
    """
    if len({tuple(image.shape) for image in images}) == 1:
        return _cropper(crop)(torch.stack(list(images)))
    return torch.cat([_cropper(crop)(image[None]) for image in images])


class TrainingData(Protocol):
    """What the loop samples batches from. ``sample`` draws from torch's global generator only."""

    def __len__(self) -> int: ...

    def sample(self, count: int, crop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` (source, target) crops ``count x 3 x crop x crop`` and their look indices ``[count]``."""
        ...


@dataclass
class PairData:
    """Before/after pairs decoded once into memory (float32 ``3 x H x W``), with a look index each.

    With ``whole_size`` set (by the loop, for a model that reads whole photos, such as DiffIR's prior),
    :meth:`sample` adds a fourth tensor: each crop's whole source and target, squashed to
    ``whole_size`` square and stacked as 6 channels (``count x 6 x S x S``).
    """

    sources: list[torch.Tensor]
    targets: list[torch.Tensor]
    looks: list[int]
    names: list[str]
    whole_size: int = 0
    _wholes: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.sources)

    def whole(self, index: int) -> torch.Tensor:
        """Pair ``index``'s source and target squashed to ``whole_size`` square, ``6 x S x S`` (cached)."""
        # Keyed by size too: one data object can serve models that read wholes of different sizes.
        key = (index, self.whole_size)
        if key not in self._wholes:
            self._wholes[key] = squash_pair(*self.pair(index), self.whole_size)
        return self._wholes[key]

    def pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair ``index``'s source and target, ``3 x H x W`` each."""
        return self.sources[index], self.targets[index]

    def with_wholes(self, picks: Sequence[int], batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """``batch`` plus the whole photos of ``picks`` when ``whole_size`` asks for them."""
        if not self.whole_size:
            return batch
        return (*batch, torch.stack([self.whole(i) for i in picks]))

    def sample(self, count: int, crop: int) -> tuple[torch.Tensor, ...]:
        """Random pairs, each cropped and turned the same way on both sides."""
        picks = torch.randint(len(self.sources), (count,)).tolist()
        stacked = random_crops([torch.cat(self.pair(i)) for i in picks], crop)
        stacked = paired_augmentation()(stacked)
        batch = (stacked[:, :3].contiguous(), stacked[:, 3:].contiguous(), torch.tensor([self.looks[i] for i in picks]))
        return self.with_wholes(picks, batch)


#: Memory for the neighbourhood maps of training photos (about 1.7 MB each at 512 px): 150 photos' worth;
#: a larger set computes the rest as it draws them (a few ms a photo, a few percent of a NAFNet step).
MAPS_CACHE_BYTES = 256 * 1024**2


@dataclass
class NativeCrops:
    """Random crops of before/after pairs at their stored resolution, flipped and turned alike.

    For local models (NAFNet, DiffIR), which must learn an edit's local parts (sharpening, local
    contrast radius) at the scale they are used at, rather than from resized 30-100% crops. Batches
    come out channels-last (faster convolutions and LayerNorm on the CPU). Whole photos come with the
    batch as :class:`PairData` gives them.

    With ``source_maps`` set (by the loop, for a model that reads its surroundings: a NAFNet with
    ``neighbourhoods``), each source crop brings its window of maps measured on its whole photo as
    channels after its colour (``count x (3 + K) x crop x crop``); the maps are computed once per photo
    (up to :data:`MAPS_CACHE_BYTES`).
    """

    pairs: PairData
    source_maps: Callable[[torch.Tensor], torch.Tensor] | None = None
    _maps: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.pairs)

    def maps(self, index: int) -> torch.Tensor:
        """``source_maps`` of pair ``index``'s whole source, kept (in half precision: they are smooth)
        while all kept maps stay under :data:`MAPS_CACHE_BYTES`, computed again each time beyond."""
        if index in self._maps:
            return self._maps[index].float()
        maps = self.source_maps(self.pairs.pair(index)[0][None])[0].half()  # rounded alike, kept or not (resumes)
        kept = sum(entry.numel() * entry.element_size() for entry in self._maps.values())
        if kept + maps.numel() * maps.element_size() <= MAPS_CACHE_BYTES:
            self._maps[index] = maps
        return maps.float()

    def sample(self, count: int, crop: int) -> tuple[torch.Tensor, ...]:
        """``count`` aligned (source, target) crops of ``crop`` pixels, and their look indices."""
        picks = torch.randint(len(self.pairs), (count,)).tolist()
        looks = [self.pairs.looks[index] for index in picks]
        maps = [self.maps(index) for index in picks] if self.source_maps is not None else None
        stacked = paired_augmentation()(native_windows([torch.cat(self.pairs.pair(index)) for index in picks], crop, maps))
        source, target = stacked[:, :3], stacked[:, 3:6]
        if maps is not None:
            source = torch.cat([source, stacked[:, 6:]], dim=1)
        source, target = (half.contiguous(memory_format=torch.channels_last) for half in (source, target))
        return self.pairs.with_wholes(picks, (source, target, torch.tensor(looks)))

    @property
    def whole_size(self) -> int:
        """The pairs' ``whole_size`` (see :class:`PairData`)."""
        return self.pairs.whole_size

    @whole_size.setter
    def whole_size(self, size: int) -> None:
        self.pairs.whole_size = size


def native_windows(images: Sequence[torch.Tensor], crop: int, maps: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """One random ``crop`` x ``crop`` window of each ``C x H x W`` image at its own scale (stretched when
    the image is smaller), ``B x C x crop x crop``; with ``maps`` (one ``K x h x w`` per image, measured
    on the whole image), the same window of each enlarged to the image's size follows as ``K`` more
    channels."""
    pieces = []
    for number, image in enumerate(images):
        height, width = image.shape[-2:]
        top = int(torch.randint(max(1, height - crop + 1), ()))
        left = int(torch.randint(max(1, width - crop + 1), ()))
        piece = image[:, top : top + crop, left : left + crop]
        if maps is not None:
            rows, columns = piece.shape[-2:]
            piece = torch.cat([piece, window_of(maps[number][None], height, width, top, left, rows, columns)[0]])
        if piece.shape[-2:] != (crop, crop):
            piece = F.interpolate(piece[None], size=(crop, crop), mode="bilinear", align_corners=False)[0]
        pieces.append(piece)
    return torch.stack(pieces)


def squash_pair(source: torch.Tensor, target: torch.Tensor, size: int) -> torch.Tensor:
    """A pair's whole source and target squashed to ``size`` square and stacked, ``6 x size x size``."""
    both = torch.stack([source, target])
    squashed = F.interpolate(both, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return squashed.reshape(6, size, size)


def decode_for_training(path: Path, long_side: int) -> torch.Tensor:
    """One photo as training sees it: float32 ``3 x H x W``, downscaled to ``long_side``; TrainError if unreadable.

    A JPEG over twice ``long_side`` is decoded at a half, quarter or eighth by libjpeg first (3x faster
    for 12 MP photos at 1536 px; differences of 0.2 levels on average, in both the memory and disk paths).
    """
    try:
        return resize_long_side(torch.from_numpy(load_image(path, long_side)), long_side)
    except PhotoError as e:
        raise TrainError(f"{path}: {e}") from None


def load_pairs(pairs: Sequence[Pair], long_side: int, look: int = 0) -> PairData:
    """Decode pairs once, downscaled to ``long_side`` (training never decodes again).

    A photo that cannot be decoded (its header was fine when the pairs were listed) is a TrainError
    naming it: training on a pairs folder with a damaged photo would silently learn from fewer pairs.
    """
    sources, targets = [], []
    for pair in pairs:
        sources.append(decode_for_training(pair.source, long_side))
        targets.append(decode_for_training(pair.target, long_side))
    return PairData(sources, targets, [look] * len(pairs), [pair.stem for pair in pairs])


def merge_pairs(parts: Sequence[PairData]) -> PairData:
    """One :class:`PairData` holding all of ``parts``."""
    return PairData(
        [s for p in parts for s in p.sources],
        [t for p in parts for t in p.targets],
        [k for p in parts for k in p.looks],
        [n for p in parts for n in p.names],
    )


# ------------------------------------------------------------------------------- pairs from disk

#: Bumped whenever the cached form of a decoded photo changes, so that stale entries are never read.
CACHE_VERSION = 1

#: Pairs whose decoded size (float32, at most ``train_size`` square) stays under this are held in
#: memory; more are streamed from the disk cache (the default of ``--stream``).
IN_MEMORY_BYTES = 2 * 1024**3


def default_cache_dir() -> Path:
    """Where decoded pairs are cached: ``$XDG_CACHE_HOME/autohdr/pairs`` (``~/.cache/autohdr/pairs``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autohdr" / "pairs"


def decoded_bytes(pair_count: int, long_side: int) -> int:
    """An upper bound on the memory ``pair_count`` pairs take decoded at ``long_side`` (float32, square)."""
    return pair_count * 2 * 3 * long_side * long_side * 4


def _read_array(file: Path) -> np.ndarray | None:
    try:
        return np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # missing, or damaged by something other than us: decode again
        return None


def _write_array(file: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(file, buffer.getvalue())  # workers may race on one photo: last rename wins, both whole


@dataclass(frozen=True)
class DecodedCache:
    """Photos decoded at a training size, kept in ``folder`` as 16-bit ``.npy`` arrays.

    An entry is keyed by the photo's absolute path, size, modification time and ``long_side``: an
    edited photo is decoded again. Values are stored rounded to 1/65535 (a cached photo differs from
    the freshly decoded one by at most 7.7e-6) and whole-photo thumbnails as float32.
    """

    folder: Path
    long_side: int

    def _key(self, *paths: Path, extra: str = "") -> str:
        parts = [str(CACHE_VERSION), str(self.long_side), extra]
        for path in paths:
            stat = os.stat(path)
            parts += [str(Path(path).resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]

    def image(self, path: Path, edit: SourceEdit | None = None) -> torch.Tensor:
        """Photo ``path`` at ``long_side``, float32 ``3 x H x W``, through ``edit`` when given: decoded
        (and edited) and cached on first use."""
        file = self.folder / f"{self._key(path, extra=edit.key if edit else '')}.npy"
        array = _read_array(file)
        if array is None:
            decoded = decode_for_training(path, self.long_side)
            decoded = edit(decoded) if edit else decoded
            array = np.rint(decoded.numpy() * 65535.0).astype(np.uint16)
            _write_array(file, array)
        return torch.from_numpy(array.astype(np.float32) * np.float32(1.0 / 65535.0))

    def whole(self, source: Path, target: Path, size: int, edit: SourceEdit | None = None) -> torch.Tensor:
        """The pair's whole photos squashed to ``size`` square (see :func:`squash_pair`), cached once per pair."""
        extra = f"whole{size}" + (edit.key if edit else "")
        file = self.folder / f"{self._key(source, target, extra=extra)}.npy"
        array = _read_array(file)
        if array is None:
            array = squash_pair(self.image(source, edit), self.image(target), size).numpy()
            _write_array(file, array)
        return torch.from_numpy(array)


@dataclass
class SourceEdit:
    """A base model's edit of whole training sources (``train --base``): the local model learns what
    is left after it. ``key`` (the model's digest) tells cached edited photos apart; ``label`` names it
    in the checkpoint's record."""

    model: torch.nn.Module
    key: str
    label: str = ""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` (``3 x H x W``) as the model edits the whole photo, clipped to [0, 1]."""
        from .inference import base_edit

        with torch.no_grad():
            return base_edit(self.model, image[None].float())[0]


class CachedImages(Sequence):
    """A list of photos read from a :class:`DecodedCache` when indexed: nothing is held in memory."""

    def __init__(self, cache: DecodedCache, paths: Sequence[Path], edit: SourceEdit | None = None):
        self.cache, self.paths, self.edit = cache, list(paths), edit

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:  # type: ignore[override]
        return self.cache.image(self.paths[index], self.edit)


class DiskPairs(PairData):
    """Before/after pairs streamed from a :class:`DecodedCache`: memory does not grow with the pairs.

    It draws exactly the crops :class:`PairData` draws for the same generator state (the pixels differ
    by the cache's 16-bit rounding); whole-photo thumbnails are cached on disk once per pair. With
    ``edit``, the sources are the base model's edits of them (cached apart from the plain ones).
    """

    def __init__(self, pairs: Sequence[Pair], looks: Sequence[int], cache: DecodedCache,
                 edit: SourceEdit | None = None):
        super().__init__(
            CachedImages(cache, [p.source for p in pairs], edit), CachedImages(cache, [p.target for p in pairs]),
            list(looks), [p.stem for p in pairs],
        )
        self.cache, self.edit = cache, edit

    def whole(self, index: int) -> torch.Tensor:
        """Pair ``index``'s thumbnail (``6 x S x S``), from the disk cache."""
        return self.cache.whole(self.sources.paths[index], self.targets.paths[index], self.whole_size, self.edit)


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of one step on one process: a resumed run re-creates every step's random numbers."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1)


class StepBatches(torch.utils.data.Dataset):
    """Item ``step`` is that training step's batch, drawn after seeding torch from (seed, rank, step).

    The batch depends on the step alone, so it is the same whether the loop's process or a DataLoader
    worker draws it, and a resumed run draws it again exactly.
    """

    def __init__(self, data: TrainingData, batch: int, crop: int, seed: int, rank: int):
        self.data, self.batch, self.crop, self.seed, self.rank = data, batch, crop, seed, rank

    def __getitem__(self, step: int) -> tuple[torch.Tensor, ...]:
        torch.manual_seed(step_seed(self.seed, self.rank, step))
        return self.data.sample(self.batch, self.crop)


def step_batches(
    batches: StepBatches, start: int, stop: int | None, workers: int = 0, pin_memory: bool = False
) -> Iterator[tuple[torch.Tensor, ...]]:
    """The batches of steps ``start`` to ``stop`` (None: endless), drawn ahead by ``workers`` processes
    (0: drawn in this process when asked for)."""
    import itertools

    steps = range(start, stop) if stop is not None else itertools.count(start)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=steps, num_workers=workers, pin_memory=pin_memory,
        prefetch_factor=2 if workers else None, persistent_workers=False,
    )
    return iter(loader)


# ------------------------------------------------------------------------------ synthetic degradations


@dataclass
class DegradationRanges:
    """How far a synthetic "bad photo" strays from the original, per image, drawn uniformly.

    Exposure and white balance act in linear light (as a camera gets them wrong); contrast (around the
    photo's mean) and saturation (around each pixel's luma) act on the sRGB values, as a flat or
    over-punchy rendering does. White balance scales red and blue in opposite-ish random amounts.
    """

    exposure_stops: float = 1.2
    white_balance_stops: float = 0.35
    contrast: tuple[float, float] = (0.55, 1.25)
    saturation: tuple[float, float] = (0.4, 1.4)


def random_degradations(
    count: int, ranges: DegradationRanges, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``count x 5`` degradation parameters: exposure (stops), red and blue gains (stops),
    contrast factor, saturation factor."""
    u = torch.rand(count, 5, generator=generator)
    low = torch.tensor([-ranges.exposure_stops, -ranges.white_balance_stops, -ranges.white_balance_stops,
                        ranges.contrast[0], ranges.saturation[0]])
    high = torch.tensor([ranges.exposure_stops, ranges.white_balance_stops, ranges.white_balance_stops,
                         ranges.contrast[1], ranges.saturation[1]])
    return low + (high - low) * u


def degrade(images: torch.Tensor, parameters: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Apply degradation ``parameters`` (``B x 5``, from :func:`random_degradations`) to sRGB images.

    Contrast scales around the mean brightness of ``reference`` (the whole photos the images were cut
    from, any size) after the same exposure and white balance, as it does for a whole photo; without
    it, around each image's own.
    """
    import kornia

    exposure, red, blue, contrast, saturation = (parameters[:, i].view(-1, 1, 1, 1) for i in range(5))
    gains = torch.cat([red, torch.zeros_like(red), blue], dim=1).exp2() * exposure.exp2()

    def exposed(pictures: torch.Tensor) -> torch.Tensor:
        linear = kornia.color.rgb_to_linear_rgb(pictures.clamp(0.0, 1.0)) * gains
        return kornia.color.linear_rgb_to_rgb(linear.clamp(0.0, 1.0))

    srgb = exposed(images)
    luma_weights = torch.tensor([0.2126, 0.7152, 0.0722], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    base = srgb if reference is None else exposed(reference)
    mean = (base * luma_weights).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    srgb = (mean + (srgb - mean) * contrast).clamp(0.0, 1.0)
    luma = (srgb * luma_weights).sum(dim=1, keepdim=True)
    return (luma + (srgb - luma) * saturation).clamp(0.0, 1.0)


@dataclass
class DegradedPhotos:
    """Clean photos (``3 x H x W``) turned into (degraded, clean) pairs on the fly: endless variety from
    few photos. The model learns to undo exposure, white balance, contrast and saturation errors."""

    photos: list[torch.Tensor]
    ranges: DegradationRanges = field(default_factory=DegradationRanges)
    look: int = 0
    variation: DegradationRanges | None = None
    whole_size: int = 0
    local: LocalEditRanges | None = None  # random local edits on top of the global ones (pretraining)
    native: bool = False  # windows at the photos' own scale instead of resized 30-100% crops
    _wholes: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.photos)

    def _whole(self, index: int) -> torch.Tensor:
        """Photo ``index`` squashed to ``whole_size`` square (cached)."""
        key = (index, self.whole_size)  # by size too, as PairData.whole
        if key not in self._wholes:
            size = (self.whole_size, self.whole_size)
            self._wholes[key] = F.interpolate(
                self.photos[index][None], size=size, mode="bilinear", antialias=True, align_corners=False
            )[0]
        return self._wholes[key]

    def sample(self, count: int, crop: int) -> tuple[torch.Tensor, ...]:
        """Random photos, cropped and turned, each degraded by its own random parameters.

        With ``variation``, each clean photo is first shifted by a small random rendering change that
        becomes part of the target: a handful of photos is a narrow sample of what good photos look
        like, and this widens it, so the model learns to correct only what lies beyond normal variety
        instead of pulling every photo to the look of the training set.

        With ``whole_size`` (set by the loop for a model that reads whole photos) a fourth tensor holds
        each crop's whole photo, squashed, degraded the same way (``count x 6 x S x S``: degraded and
        clean); the crop's contrast then turns around the whole photo's mean, as it would for a photo
        degraded whole.
        """
        picks = torch.randint(len(self.photos), (count,)).tolist()
        chosen = [self.photos[i] for i in picks]
        crops = native_windows(chosen, crop) if self.native else random_crops(chosen, crop)
        clean = paired_augmentation()(crops).contiguous()
        wholes = torch.stack([self._whole(i) for i in picks]) if self.whole_size else None
        if self.variation is not None:
            shift = random_degradations(count, self.variation)
            clean = degrade(clean, shift, wholes)
            wholes = degrade(wholes, shift) if wholes is not None else None
        parameters = random_degradations(count, self.ranges)
        degraded = degrade(clean, parameters, wholes)
        local = random_local_edits(count, self.local) if self.local is not None else None
        if local is not None:
            degraded = local_edits(degraded, local)
        looks = torch.full((count,), self.look)
        if wholes is None:
            return degraded, clean, looks
        degraded_wholes = degrade(wholes, parameters)
        if local is not None:
            degraded_wholes = local_edits(degraded_wholes, local)
        return degraded, clean, looks, torch.cat([degraded_wholes, wholes], dim=1)


@dataclass
class MixedData:
    """Several data sources, each batch item drawn from one of them with the given probabilities."""

    parts: list[TrainingData]
    weights: list[float]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    @property
    def names(self) -> list[str]:
        """The names of the first part's pairs: the real pairs, which the other parts are drawn beside."""
        return list(getattr(self.parts[0], "names", []))

    @property
    def whole_size(self) -> int:
        """The parts' ``whole_size`` (all set together)."""
        return min(getattr(part, "whole_size", 0) for part in self.parts)

    @whole_size.setter
    def whole_size(self, size: int) -> None:
        for part in self.parts:
            part.whole_size = size

    def sample(self, count: int, crop: int) -> tuple[torch.Tensor, ...]:
        """Draw how many items come from each source, then sample each and concatenate."""
        choice = torch.multinomial(torch.tensor(self.weights, dtype=torch.float64), count, replacement=True)
        pieces = []
        for index, part in enumerate(self.parts):
            share = int((choice == index).sum())
            if share:
                pieces.append(part.sample(share, crop))
        return tuple(torch.cat(column) for column in zip(*pieces))


#: How far the photometric variations a teacher labels stray from the training photos (drawn uniformly per
#: photo): the spread of exposure, white balance, contrast and saturation between photographers' photos,
#: narrower than the degradations a pretrained start learns to undo.
VARIATION_RANGES = DegradationRanges(exposure_stops=1.0, white_balance_stops=0.3, contrast=(0.75, 1.25),
                                     saturation=(0.7, 1.3))


def teacher_variations(
    sources: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], teacher: SourceEdit, count: int, seed: int,
    ranges: DegradationRanges = VARIATION_RANGES, look: int = 0,
) -> PairData:
    """``count`` photometric variations of the training photos, each labelled with how a teacher says
    the edit changes.

    A model that recognises its few training photos (the lut's thumbnail predictor) learns from them
    which edit each one gets, not how the edit follows from the photo; a teacher that cannot recognise
    photos (the per-pixel localtone) turns every variation into a new pair, so the student also sees
    photos that differ in exposure, white balance, contrast and saturation, each with the edit the look
    gives it. The label of a variation ``v`` of pair ``(x, y)`` is ``y + T(v) - T(x)``: the photo's own
    target moved by what the teacher ``T`` changes between the photo and its variation. Where the
    teacher is wrong about the look by the same amount on both (its bias on that photo), the error
    cancels, so the labels keep the real targets' look and take only the teacher's sense of how an
    edit follows exposure, white balance, contrast and saturation. The photos take turns (each varied
    ``count / len(sources)`` times, give or take one), the parameters come from ``seed`` (a resumed run
    draws the same set), and the teacher edits each photo whole, so its neighbourhoods and mean are the
    photo's. Drawn once: the set is a few hundred pairs, and labelling them costs seconds, where
    labelling every step's crops anew would halve the student's steps.
    """
    generator = torch.Generator().manual_seed(seed)
    parameters = random_degradations(count, ranges, generator)
    varied: list[torch.Tensor] = [torch.empty(0)] * count
    labels: list[torch.Tensor] = [torch.empty(0)] * count
    # Photo by photo, so that only one photo's own edit T(x) is held at a time; rows keep their order.
    for index in range(min(count, len(sources))):
        own_edit = teacher(sources[index])
        for row in range(index, count, len(sources)):
            photo = degrade(sources[index][None], parameters[row : row + 1])[0]
            varied[row] = photo
            labels[row] = (targets[index] + teacher(photo) - own_edit).clamp(0.0, 1.0)
    names = [f"variation {row // len(sources) + 1} of photo {row % len(sources) + 1}" for row in range(count)]
    return PairData(varied, labels, [look] * count, names)


# ---------------------------------------------------------------------------------------------- split


@dataclass
class PairSplit:
    """The pairs of one or more folders split into training and validation, before any decoding.

    Each folder is one look (its index is the look of its pairs); ``problems`` are the files that could
    not be paired, one line each, for listing before work starts.
    """

    folders: list[Path]
    train: list[list[Pair]]
    validation: list[list[Pair]]
    problems: list[str]
    val_list: Path | None = None  # the hold-out list that chose the validation pairs, if one did

    def description(self, val_split: float, seed: int) -> dict:
        """Where the data came from, for the checkpoint's training record (``seed``: the split's)."""
        return {
            "pairs": [str(f) for f in self.folders],
            "train_pairs": sum(len(t) for t in self.train),
            "val_pairs": [p.stem for v in self.validation for p in v],
            "val_split": val_split,
            "split_seed": seed,
        } | ({"val_list": self.val_list.name} if self.val_list is not None else {})

    def check(self) -> None:
        """Raise TrainError if a folder has fewer than 2 usable pairs."""
        for folder, train_pairs, val_pairs in zip(self.folders, self.train, self.validation):
            count = len(train_pairs) + len(val_pairs)
            if count < 2:
                raise TrainError(
                    f"{folder}: {count} usable pair(s); training needs at least 2 "
                    "(one to learn from, one to validate on)"
                )
            if not train_pairs:
                raise TrainError(f"{folder}: the hold-out list names every pair; none is left to train on")

    def look_names(self) -> list[str]:
        """One name per look: the folder's own name."""
        return [Path(f).resolve().name for f in self.folders]


def split_folders(
    folders: Sequence[Path], val_split: float, seed: int, val_list: Path | None = None
) -> PairSplit:
    """Find and split the pairs of each folder; raises TrainError for a folder that is not a pairs folder.

    The validation pairs are a seeded random ``val_split`` of each folder, or, with ``val_list``, exactly
    the pairs that file names (:func:`autohdr_cli.pairs.read_stem_list`): a whole source held out.
    A folder with fewer than 2 usable pairs is accepted here (so its problems can be listed first) and
    refused by :meth:`PairSplit.check`.
    """
    split = PairSplit([Path(f) for f in folders], [], [], [], val_list)
    try:
        stems = read_stem_list(val_list) if val_list is not None else None
        found_all = []
        for folder in split.folders:
            found = find_pairs(folder)
            found_all += found.pairs
            split.problems += found.problems
            if stems is None:
                train_pairs, val_pairs = split_pairs(found.pairs, val_split, seed)
            else:
                train_pairs, val_pairs = split_by_stems(found.pairs, stems)
            split.train.append(train_pairs)
            split.validation.append(val_pairs)
        if stems is not None:
            check_stems_found(stems, found_all, val_list)
    except PairsError as e:
        raise TrainError(str(e)) from None
    return split


def stream_split(
    split: PairSplit, train_size: int, cache_dir: Path, edit: SourceEdit | None = None
) -> tuple[DiskPairs, DiskPairs]:
    """The training and validation pairs read from a disk cache in ``cache_dir`` (decoded on first use),
    their sources through ``edit`` when given."""
    cache = DecodedCache(Path(cache_dir), train_size)

    def pairs_of(groups: list[list[Pair]]) -> DiskPairs:
        looks = [look for look, g in enumerate(groups) for _ in g]
        return DiskPairs([p for g in groups for p in g], looks, cache, edit)

    return pairs_of(split.train), pairs_of(split.validation)


def decode_split(split: PairSplit, train_size: int, edit: SourceEdit | None = None) -> tuple[PairData, PairData]:
    """Decode the training and validation pairs into memory, downscaled to ``train_size``, their sources
    through ``edit`` when given."""
    train = merge_pairs([load_pairs(pairs, train_size, look) for look, pairs in enumerate(split.train)])
    validation = merge_pairs([load_pairs(pairs, train_size, look) for look, pairs in enumerate(split.validation)])
    if edit is not None:
        for data in (train, validation):
            data.sources = [edit(source) for source in data.sources]
    return train, validation
