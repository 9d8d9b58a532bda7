"""Write a large synthetic pairs folder for the training-scale benchmark: COUNT pairs of ~12 MP JPEGs.

Each pair is a random crop (50-100% of the area) of one of the development photos, scaled to 4000 x 3000
(or 3000 x 4000), flipped at random; its target is the same picture through a fixed warm, brightening
tone curve per channel (a stand-in for an editor's look: the benchmark measures loading, not quality).
Written once, outside the repository::

    python benchmarks/make_scale_pairs.py "$AUTOHDR_DATA/photos" scale-pairs --count 577

Encoding takes about 1.5 s of CPU a pair; ``--distinct N`` encodes N pairs and writes the rest as byte
copies of them under their own names (a loader still decodes and caches each file on its own).
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SIZE = (4000, 3000)


def look_curves() -> np.ndarray:
    """Three 256-entry curves (R, G, B): lifted shadows, a gentle S, a slightly warm balance."""
    x = np.linspace(0.0, 1.0, 256)
    lifted = x ** 0.8
    s_curve = lifted + 0.08 * np.sin(2 * np.pi * lifted) * (1 - lifted)
    gains = (1.03, 1.0, 0.95)
    return np.stack([np.clip(s_curve * g, 0, 1) * 255 + 0.5 for g in gains]).astype(np.uint8)


def synthetic_pair(photo: Image.Image, rng: random.Random, curves: np.ndarray) -> tuple[Image.Image, Image.Image]:
    """One (source, target) pair cut from ``photo``."""
    width, height = photo.size
    area = rng.uniform(0.5, 1.0)
    portrait = rng.random() < 0.25
    ratio = SIZE[1] / SIZE[0] if portrait else SIZE[0] / SIZE[1]
    crop_w = min(width, round((area * width * height * ratio) ** 0.5))
    crop_h = min(height, round(crop_w / ratio))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    size = (SIZE[1], SIZE[0]) if portrait else SIZE
    source = photo.crop((left, top, left + crop_w, top + crop_h)).resize(size, Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        source = ImageOps.mirror(source)
    pixels = np.asarray(source)
    target = np.stack([curves[c][pixels[..., c]] for c in range(3)], axis=-1)
    return source, Image.fromarray(target)


def main() -> None:
    """Write COUNT pairs into OUTPUT/source and OUTPUT/target (existing files are kept)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="folder of photos to cut the pairs from")
    parser.add_argument("output", type=Path, help="pairs folder to write (outside the repository)")
    parser.add_argument("--count", type=int, default=577)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distinct", type=int, default=None, help="encode this many pairs, copy the rest")
    args = parser.parse_args()
    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    curves = look_curves()
    for folder in ("source", "target"):
        (args.output / folder).mkdir(parents=True, exist_ok=True)
    for index in range(args.count):
        name = f"pair{index:04d}.jpg"
        if (args.output / "target" / name).exists():
            continue
        if args.distinct and index >= args.distinct:
            original = f"pair{index % args.distinct:04d}.jpg"
            for folder in ("source", "target"):
                shutil.copyfile(args.output / folder / original, args.output / folder / name)
            continue
        rng = random.Random(args.seed * 100_003 + index)
        with Image.open(files[index % len(files)]) as opened:
            photo = ImageOps.exif_transpose(opened).convert("RGB")
        source, target = synthetic_pair(photo, rng, curves)
        source.save(args.output / "source" / name, quality=92)
        target.save(args.output / "target" / ("." + name), format="JPEG", quality=92)
        (args.output / "target" / ("." + name)).rename(args.output / "target" / name)  # target last: pair complete
        if index % 50 == 0:
            print(f"{index + 1}/{args.count}", flush=True)


if __name__ == "__main__":
    main()
