"""Build a pairs folder whose sources are normalised for exposure and white point (issue 17's lever).

Each source photo gets one exponent per channel (or one for all, ``--exposure-only``) that brings the
channel's mean to ``--target``: a gray-world white balance and an exposure correction in one curve,
``y = x ** gamma``, which never clips and keeps 0 and 1 in place. Two ways to use it:

* sources only (targets copied): the network learns the look from normalised photos. This throws away
  what the look depends on (how bright and how tinted the original was): measured, it fails;
* ``--normalize-targets``: each target goes under its source's curve too, the network learns the look in
  normalised space, and ``--denormalize`` undoes each source's curve on its results before scoring::

    python benchmarks/normalized_pairs.py "$AUTOHDR_DATA/pairs" pairs-n --normalize-targets
    autohdr train pairs-n --model nafnet --val-list holdout-small.txt -o nafnet-n.safetensors
    autohdr enhance HELD_OUT_NORMALISED_SOURCES results/ -w nafnet-n.safetensors --format tiff
    python benchmarks/normalized_pairs.py "$AUTOHDR_DATA/pairs" back/ --denormalize results/
    autohdr evaluate back/ HELD_OUT_TARGETS

Results in ``autohdr_cli/weights/README.md`` (sessions 10-11).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import tifffile

from autohdr_cli.imageio import load_image

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


def _read_rgb(path: Path) -> np.ndarray:
    """A photo as the CLI reads it (8- or 16-bit, oriented), ``H x W x 3`` floats in [0, 1]."""
    return load_image(path).transpose(1, 2, 0).astype(np.float64)


def _write_tiff16(path: Path, image: np.ndarray) -> None:
    tifffile.imwrite(path, np.round(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16), photometric="rgb")


def main() -> None:
    """Write OUT/source (normalised sources, 16-bit TIFF) and OUT/target (copies, or with
    ``--normalize-targets`` the targets under their source's curve); or, with ``--denormalize RESULTS``,
    undo each source's curve on the model's results (matched by stem) into OUT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=Path, help="pairs folder with source/ and target/ (the originals)")
    parser.add_argument("out", type=Path, help="new pairs folder (or, with --denormalize, the results' folder)")
    parser.add_argument("--target", type=float, default=0.45, help="each channel's mean after normalising")
    parser.add_argument("--exposure-only", action="store_true", help="one exponent for all channels: colours kept")
    parser.add_argument("--normalize-targets", action="store_true",
                        help="put each target under its source's curve too (the model then learns the look in "
                             "normalised space, and --denormalize brings its results back)")
    parser.add_argument("--denormalize", type=Path, metavar="RESULTS",
                        help="a folder of the model's results on the normalised sources: write them back in the "
                             "originals' space")
    args = parser.parse_args()
    per_channel = not args.exposure_only
    sources = sorted((args.pairs / "source").iterdir())
    if args.denormalize is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        originals = {path.stem: path for path in sources}
        for result in sorted(args.denormalize.iterdir()):
            if result.name.startswith("."):
                continue  # enhance's manifest of the run
            gammas = normalizing_gammas(_read_rgb(originals[result.stem]), args.target, per_channel)
            _write_tiff16(args.out / (result.stem + ".tif"), _read_rgb(result) ** (1.0 / gammas))
        return
    (args.out / "source").mkdir(parents=True, exist_ok=True)
    if not args.normalize_targets:
        shutil.copytree(args.pairs / "target", args.out / "target", dirs_exist_ok=True)
    else:
        (args.out / "target").mkdir(parents=True, exist_ok=True)
    targets = {path.stem: path for path in (args.pairs / "target").iterdir()}
    for path in sources:
        image = _read_rgb(path)
        gammas = normalizing_gammas(image, args.target, per_channel)
        _write_tiff16(args.out / "source" / (path.stem + ".tif"), np.clip(image, 0.0, 1.0) ** gammas)
        if args.normalize_targets:
            _write_tiff16(args.out / "target" / (path.stem + ".tif"), _read_rgb(targets[path.stem]) ** gammas)
        print(path.stem, np.round(gammas, 3).tolist())


if __name__ == "__main__":
    main()
