"""Build a pairs folder whose sources are normalised for exposure and white point (issue 17's lever).

Each source photo gets one exponent per channel (or one for all, ``--exposure-only``) that brings the channel's mean to ``--target``: a
gray-world white balance and an exposure correction in one curve, ``y = x ** gamma``, which never clips
and keeps 0 and 1 in place (so nothing is lost that the network could use). The targets are copied
unchanged: a network trained on the new folder learns the look from normalised photos. Comparing it with
the same run on the original folder measures the lever (``autohdr_cli/weights/README.md``, session 10)::

    python benchmarks/normalized_pairs.py "$AUTOHDR_DATA/pairs" pairs-normalized
    autohdr train pairs-normalized --model nafnet --val-list holdout-small.txt -o nafnet-norm.safetensors
    autohdr evaluate pairs-normalized --val-list holdout-small.txt -w nafnet-norm.safetensors
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

#: Exponents are kept within these bounds: a photo that is nearly black or white in one channel is not
#: pushed to extremes.
GAMMA_RANGE = (1 / 3, 3.0)


#: Rec. 709 weights: the brightness an exposure correction aims at.
LUMA = np.array([0.2126, 0.7152, 0.0722])


def normalizing_gammas(image: np.ndarray, target: float, per_channel: bool = True) -> np.ndarray:
    """Exponents that bring each channel's mean of ``image`` (``H x W x 3`` in [0, 1]) to ``target``
    (``log(target) / log(mean)``, bounded by ``GAMMA_RANGE``); with ``per_channel`` off, one exponent
    that brings the mean brightness there (exposure only, colours kept)."""
    means = image.reshape(-1, 3).mean(axis=0)
    means = means if per_channel else np.full(3, means @ LUMA)
    return np.clip(np.log(target) / np.log(np.clip(means, 1e-3, 1 - 1e-3)), *GAMMA_RANGE)


def normalize_photo(image: np.ndarray, target: float, per_channel: bool = True) -> np.ndarray:
    """``image`` (``H x W x 3`` in [0, 1]) with each channel's (or its brightness's) mean brought to ``target``."""
    return np.clip(image, 0.0, 1.0) ** normalizing_gammas(image, target, per_channel)


def main() -> None:
    """Write PAIRS_OUT/source (normalised sources, 16-bit TIFF) and PAIRS_OUT/target (copies)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=Path, help="pairs folder with source/ and target/")
    parser.add_argument("out", type=Path, help="new pairs folder")
    parser.add_argument("--target", type=float, default=0.45, help="each channel's mean after normalising")
    parser.add_argument("--exposure-only", action="store_true", help="one exponent for all channels: colours kept")
    args = parser.parse_args()
    per_channel = not args.exposure_only
    (args.out / "source").mkdir(parents=True, exist_ok=True)
    shutil.copytree(args.pairs / "target", args.out / "target", dirs_exist_ok=True)
    for path in sorted((args.pairs / "source").iterdir()):
        with Image.open(path) as opened:
            image = np.asarray(opened.convert("RGB"), dtype=np.float64) / 255.0
        result = np.round(normalize_photo(image, args.target, per_channel) * 65535.0).astype(np.uint16)
        tifffile.imwrite(args.out / "source" / (path.stem + ".tif"), result, photometric="rgb")
        print(path.stem, np.round(normalizing_gammas(image, args.target, per_channel), 3).tolist())


if __name__ == "__main__":
    main()
