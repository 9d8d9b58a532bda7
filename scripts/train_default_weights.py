"""Re-train the shipped default ``lut`` weights from scratch: ``autohdr_cli/weights/lut-default.safetensors``.

The default look is an auto-fix: it learns to undo random exposure, white-balance, contrast and
saturation errors made to real photos (the originals are the targets). Usage, from the repository root:

    nice -n 10 python scripts/train_default_weights.py --photos $AUTOHDR_DATA/photos --pairs $AUTOHDR_DATA/pairs

Held out (never trained on): the pairs folder's validation split at the defaults of ``autohdr train``
and ``autohdr evaluate`` (``--val-split 0.2 --seed 0``), by stem, for both the photos and the pairs, so
``benchmarks/quality_global.py`` measures on photos this model has not seen. ``--tune`` instead holds
out 5 of the training photos (for choosing the recipe without looking at the held-out set).

Decoding 20 MP photos is slow, so each photo is decoded once and cached at ``--cache-size`` long side
(PNG) under ``--cache``; the cache is rebuilt from the raw folder whenever it is missing.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from autohdr_cli.imageio import load_image
from autohdr_cli.pairs import find_pairs, split_pairs
from autohdr_cli.train import TrainOptions, parse_duration, train
from autohdr_cli.train_data import (
    DegradationRanges,
    DegradedPhotos,
    MixedData,
    PairData,
    degrade,
    load_pairs,
    random_degradations,
    resize_long_side,
)
from autohdr_cli.devdata import data_option

#: The recipe of the shipped weights (see autohdr_cli/weights/README.md); --config overrides keys. Thumbnails of
#: the training crops, as the shipped file was trained: whole-photo thumbnails (which help on the
#: pairs) made no difference here (21.97 against 21.98 dB on the held-out degraded photos).
DEFAULT_CONFIG = {"lut_size": 33, "num_basis": 3, "thumbnail_size": 128, "curves": "before", "photo_thumbnail": False}
#: Seed of the fixed degradations of the validation photos (training draws fresh ones every step).
VALIDATION_SEED = 1234


def held_out_stems(pairs_folder: Path, val_split: float = 0.2, seed: int = 0) -> list[str]:
    """The stems the benchmark measures on: the pairs' validation split at autohdr's defaults."""
    return [p.stem for p in split_pairs(find_pairs(pairs_folder).pairs, val_split, seed)[1]]


def photo_files(folder: Path) -> dict[str, Path]:
    """The photos of a folder by stem (JPEG and PNG; the licence table is skipped)."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")}


def cached_photo(path: Path, cache: Path, long_side: int) -> torch.Tensor:
    """A photo as float ``3 x H x W`` at ``long_side``, decoded once and kept as a PNG in ``cache``."""
    file = cache / f"{path.stem}-{long_side}.png"
    if not file.exists() or file.stat().st_mtime < path.stat().st_mtime:
        image = resize_long_side(torch.from_numpy(load_image(path)), long_side)
        cache.mkdir(parents=True, exist_ok=True)
        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        temporary = file.with_suffix(".tmp.png")
        Image.fromarray(pixels).save(temporary)
        temporary.replace(file)
    return torch.from_numpy(np.asarray(Image.open(file).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def scaled_ranges(ranges: DegradationRanges, fraction: float) -> DegradationRanges:
    """The ranges shrunk towards "no change" by ``fraction`` (0.3 = 30% as wide)."""
    def around_one(low_high: tuple[float, float]) -> tuple[float, float]:
        """Shrink a (low, high) factor range towards 1."""
        return (1 + (low_high[0] - 1) * fraction, 1 + (low_high[1] - 1) * fraction)

    return DegradationRanges(ranges.exposure_stops * fraction, ranges.white_balance_stops * fraction,
                             around_one(ranges.contrast), around_one(ranges.saturation))


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Squash a photo to ``size x size`` (antialiased). The model's thumbnail ignores the aspect ratio
    anyway, and a LUT acts pixel by pixel, so nothing is lost; equal sizes let crops run batched."""
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def degraded_validation(photos: list[torch.Tensor], names: list[str], ranges: DegradationRanges) -> PairData:
    """Fixed (degraded, original) pairs of the validation photos: the same every run."""
    parameters = random_degradations(len(photos), ranges, torch.Generator().manual_seed(VALIDATION_SEED))
    sources = [degrade(p[None], parameters[i : i + 1])[0] for i, p in enumerate(photos)]
    return PairData(sources, list(photos), [0] * len(photos), names)


def main(argv: list[str] | None = None) -> int:
    """Build the data, train, and write the checkpoint; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", **data_option("photos"))
    parser.add_argument("--pairs", **data_option("pairs"))
    parser.add_argument("--cache", type=Path, required=True, help="decoded-photo cache folder")
    parser.add_argument("--cache-size", type=int, default=1024, help="long side of the cached photos")
    parser.add_argument("--output", "-o", type=Path, default=Path("autohdr_cli/weights/lut-default.safetensors"))
    parser.add_argument("--config", default="{}", help="JSON overriding the model recipe")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--time-limit", default=None, help="e.g. 15m: stop early with a valid checkpoint")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--train-size", type=int, default=192, help="side of the (squashed) square training photos")
    parser.add_argument("--pairs-weight", type=float, default=0.0,
                        help="share of each batch drawn from the before/after pairs (0 = photos only)")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--variation", type=float, default=0.0,
                        help="widen the clean photos by this fraction of the degradation ranges (0 = off)")
    parser.add_argument("--more-photos", type=Path, default=None,
                        help="a folder of further real photos to train on (21 Debian wallpaper photos made the "
                             "held-out result worse: autohdr_cli/weights/README.md)")
    parser.add_argument("--edited-photos", action="store_true",
                        help="also use the pairs' edited targets (training stems only) as clean photos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune", action="store_true", help="validate on 5 training photos, not the held-out set")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a shared 2-core machine: no spinning)")
    parser.add_argument("--log", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    held_out = set(held_out_stems(args.pairs))
    files = photo_files(args.photos)
    train_stems = [s for s in files if s not in held_out]
    val_stems = sorted(held_out & set(files))
    if args.tune:
        shuffled = train_stems[:]
        random.Random(args.seed).shuffle(shuffled)
        val_stems, train_stems = sorted(shuffled[:5]), sorted(shuffled[5:])
    print(f"training photos: {len(train_stems)}; validation photos: {', '.join(val_stems)}", file=sys.stderr)

    ranges = DegradationRanges()
    train_photos = [square(cached_photo(files[s], args.cache, args.cache_size), args.train_size) for s in train_stems]
    val_photos = [resize_long_side(cached_photo(files[s], args.cache, args.cache_size), args.train_size)
                  for s in val_stems]
    more = sorted(photo_files(args.more_photos).items()) if args.more_photos else []
    train_photos += [square(cached_photo(path, args.cache, args.cache_size), args.train_size) for _, path in more]
    if args.edited_photos:
        targets = {p.stem: p.target for p in find_pairs(args.pairs).pairs}
        train_photos += [square(torch.from_numpy(load_image(targets[s])), args.train_size)
                         for s in train_stems if s in targets]
    variation = scaled_ranges(ranges, args.variation) if args.variation else None
    data = DegradedPhotos(train_photos, ranges, variation=variation)
    description = {
        "data": f"{len(train_stems)} photos of {args.photos} with random degradations {ranges}"
        + (f", plus {len(more)} photos of {args.more_photos}" if more else "")
        + (", plus their edited versions from the pairs" if args.edited_photos else ""),
        "train_photos": train_stems + [stem for stem, _ in more],
        "val_photos": val_stems,
        "recipe": "scripts/train_default_weights.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    if args.pairs_weight > 0:
        pairs = [p for p in find_pairs(args.pairs).pairs if p.stem in set(train_stems)]
        data = MixedData([data, load_pairs(pairs, args.train_size)], [1.0 - args.pairs_weight, args.pairs_weight])
        description["pairs"] = f"{len(pairs)} pairs of {args.pairs}, {args.pairs_weight:.0%} of each batch"

    config = dict(DEFAULT_CONFIG, **json.loads(args.config))
    options = TrainOptions(
        pairs=[], output=args.output, model="lut", config=config, steps=args.steps,
        time_limit=parse_duration(args.time_limit) if args.time_limit else None, batch=args.batch, lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed, device="cpu", crop=args.crop, train_size=args.train_size, val_every=200,
        checkpoint_every=200, log=args.log, progress=not args.quiet and sys.stderr.isatty(),
    )
    result = train(options, data=data, validation=degraded_validation(val_photos, val_stems, ranges),
                   description=description)
    print(json.dumps({"steps": result.steps, "seconds": round(result.seconds), "validation": result.validation}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
