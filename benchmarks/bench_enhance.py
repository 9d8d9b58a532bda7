"""Throughput of ``autohdr enhance --lut`` on large real photos, against plain Pillow loops.

Usage (``../data`` built by ``../shared/data/make_pairs.sh``):

    python benchmarks/bench_enhance.py ../data/photos --count 10 --megapixels 20

It makes a folder of large JPEGs from the development photos (upscaled to about ``--megapixels``),
then times, in one run and on the same files:

1. ``autohdr enhance IN OUT --lut LOOK`` as a user runs it (a subprocess; its start-up included),
2. a plain Python loop: Pillow decode + ``ImageFilter.Color3DLUT`` + save (JPEG q95 4:4:4),
3. the I/O floor: Pillow decode + save alone, single-threaded and in as many threads as autohdr uses.

It prints photos per second for each and the ratios, plus autohdr's peak memory (max RSS).

With ``--weights lut.safetensors`` it instead times an image-adaptive LUT model against the static
``.cube`` path (the same model's LUT for one photo, baked by ``autohdr export``), both run and start-up,
``--repeats`` times each, alternated, and reports medians. Absolute times drift on shared machines
(by 20% within minutes here); the ratios measured in one run are what to compare, and a long folder
(``--count 96``) with several repeats is what makes them steady.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOOK = ROOT / "samples" / "looks" / "realestate.cube"


def make_large_photos(source: Path, folder: Path, count: int, megapixels: float) -> list[Path]:
    """``count`` JPEGs of about ``megapixels`` each, made from the real photos in ``source``.

    They are made once into ``folder`` (kept between runs) and linked into ``folder-x{count}``, a
    folder holding exactly these photos, which is what autohdr is run on.
    """
    folder.mkdir(parents=True, exist_ok=True)
    chosen = folder.parent / f"{folder.name}-x{count}"
    shutil.rmtree(chosen, ignore_errors=True)
    chosen.mkdir()
    originals = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    made = []
    for index in range(count):
        original = originals[index % len(originals)]
        target = folder / f"{index:03d}_{original.stem}.jpg"
        if not target.exists():
            image = Image.open(original).convert("RGB")
            scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
            image.save(target, quality=92, subsampling=0)
        os.link(target, chosen / target.name)
        made.append(chosen / target.name)
    return made


def read_cube_table(path: Path) -> tuple[int, list[float]]:
    """The size and flat table of a ``.cube`` file, for Pillow's Color3DLUT."""
    from autohdr_cli.cube import read_cube

    cube = read_cube(path)
    return cube.size, cube.table.reshape(-1).tolist()


def pillow_loop(photos: list[Path], out: Path, lut: ImageFilter.Color3DLUT | None) -> float:
    """Decode, optionally apply the LUT, and save each photo in turn; returns seconds."""
    started = time.perf_counter()
    for photo in photos:
        _decode_filter_save(photo, out, lut)
    return time.perf_counter() - started


def _decode_filter_save(photo: Path, out: Path, lut: ImageFilter.Color3DLUT | None) -> None:
    image = Image.open(photo)
    image.load()
    if lut is not None:
        image = image.filter(lut)
    image.save(out / photo.name, quality=95, subsampling=0)


def pillow_threads(photos: list[Path], out: Path, lut, threads: int) -> float:
    """The same work spread over ``threads`` threads; returns seconds."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda p: _decode_filter_save(p, out, lut), photos))
    return time.perf_counter() - started


def run_autohdr(folder: Path, out: Path, workers: int, *model: str) -> tuple[float, float, str]:
    """Run the CLI as a user would; returns (seconds, peak RSS in MB, its summary line)."""
    command = [sys.executable, "-m", "autohdr_cli", "enhance", str(folder), str(out), *(model or ("--lut", str(LOOK))),
               "--workers", str(workers)]
    measured = run_measured(command)
    if measured.returncode != 0:
        raise SystemExit(f"autohdr failed ({measured.returncode}): {measured.stderr}")
    return measured.seconds, measured.peak_mb, measured.stderr.strip().splitlines()[-1]


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="folder of real photos (e.g. ../data/photos)")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--megapixels", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3, help="--weights: alternated runs of each, best kept")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "autohdr-bench")
    parser.add_argument(
        "--weights",
        type=Path,
        help="also time this image-adaptive LUT model against its own LUT baked to a static .cube "
        "(what the thumbnail predictor and a per-photo table cost); skips the Pillow comparisons",
    )
    args = parser.parse_args()
    if args.weights:
        compare_adaptive(args)
        return

    photos = make_large_photos(args.photos, args.work / f"in-{args.megapixels:g}mp", args.count, args.megapixels)
    total_mp = sum(np.prod(Image.open(p).size) for p in photos) / 1e6
    size, table = read_cube_table(LOOK)
    lut = ImageFilter.Color3DLUT(size, table)

    def fresh(name: str) -> Path:
        path = args.work / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    pillow_loop(photos[:1], fresh("warm"), lut)  # page cache warm-up
    results = {}
    seconds, peak_mb, summary = run_autohdr(photos[0].parent, fresh("autohdr") / "out", args.workers)
    results["autohdr enhance --lut"] = seconds
    results["Pillow loop (decode + Color3DLUT + save)"] = pillow_loop(photos, fresh("loop"), lut)
    results["I/O floor, 1 thread (decode + save)"] = pillow_loop(photos, fresh("io1"), None)
    results[f"I/O floor, {args.workers} threads"] = pillow_threads(photos, fresh("ioN"), None, args.workers)

    print(f"{len(photos)} photos, {total_mp / len(photos):.1f} MP each, {args.workers} workers, {os.cpu_count()} cores")
    for name, secs in results.items():
        print(f"  {name:45s} {secs:7.2f} s  {len(photos) / secs:6.2f} photos/s  {total_mp / secs:6.1f} MP/s")
    ours = results["autohdr enhance --lut"]
    print(f"  autohdr's own summary: {summary}")
    print(f"  autohdr peak memory (max RSS): {peak_mb:.0f} MB")
    print("ratios (throughput of autohdr / other; > 1 means autohdr is faster):")
    for name, secs in results.items():
        if name != "autohdr enhance --lut":
            print(f"  vs {name:42s} {secs / ours:5.2f}x")


def _seconds_in_run(summary: str, megapixels: float) -> float:
    """The run without start-up, from autohdr's summary line ("... in 2.0 s (95.9 MP/s)").

    Worked out from the rate, which has three significant figures where the seconds have two.
    """
    rate = float(summary.rsplit("(", 1)[1].split(" MP/s", 1)[0])
    return megapixels / rate


def compare_adaptive(args) -> None:
    """``--weights``: an image-adaptive model against the static ``.cube`` path on the same photos."""
    photos = make_large_photos(args.photos, args.work / f"in-{args.megapixels:g}mp", args.count, args.megapixels)
    cube = args.work / "baked.cube"
    subprocess.run(
        [sys.executable, "-m", "autohdr_cli", "export", str(args.weights), "--format", "cube", "-o", str(cube),
         "--image", str(photos[0])],
        check=True, capture_output=True,
    )
    megapixels = sum(np.prod(Image.open(photo).size) for photo in photos) / 1e6
    runs: dict[str, list[tuple[float, float, float]]] = {"static .cube": [], "adaptive": []}
    for _repeat in range(args.repeats):  # alternated; medians, because shared machines drift
        for name, model in (("static .cube", ("--lut", str(cube))), ("adaptive", ("--weights", str(args.weights)))):
            out = args.work / f"adaptive-{name[:6]}"
            shutil.rmtree(out, ignore_errors=True)
            seconds, peak_mb, summary = run_autohdr(photos[0].parent, out, args.workers, *model)
            runs[name].append((seconds, _seconds_in_run(summary, megapixels), peak_mb))
    print(f"{len(photos)} photos, {args.megapixels:g} MP each, {args.workers} workers, {os.cpu_count()} cores")
    middle = {}
    for name, measured in runs.items():
        wall, in_run = float(np.median([m[0] for m in measured])), float(np.median([m[1] for m in measured]))
        middle[name] = (wall, in_run)
        print(f"  {name:14s} wall {wall:6.2f} s   in run (no start-up) {in_run:6.3f} s   "
              f"peak {max(m[2] for m in measured):5.0f} MB   (medians of {len(measured)}; in run: "
              + ", ".join(f"{m[1]:.2f}" for m in measured) + ")")
    print(f"  adaptive / static: {middle['adaptive'][1] / middle['static .cube'][1]:.2f}x in run, "
          f"{middle['adaptive'][0] / middle['static .cube'][0]:.2f}x wall (start-up: torch and the model)")


if __name__ == "__main__":
    main()
