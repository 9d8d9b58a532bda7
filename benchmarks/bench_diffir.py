"""DiffIR beside NAFNet: quality on the held-out pairs, speed per megapixel, tile agreement, memory.

Usage (``$AUTOHDR_DATA`` built by ``../shared/data/make_pairs.sh``), from the repository root:

    python benchmarks/bench_diffir.py --sections quality,speed,agreement,memory \\
        --lut runs/pairs-lut.safetensors --ablation runs/diffir-t0.safetensors

1. **quality**: the held-out pairs (the default split of ``autohdr train``/``evaluate``) at full size,
   8-bit results: identity, ``--lut`` (an image-adaptive LUT trained on the same pairs), the per-pair
   oracle 33^3 LUT, NAFNet and DiffIR through the tiler as ``autohdr enhance`` runs them, the
   ``--ablation`` checkpoint (DiffIR trained with ``timesteps 0``: CPEN-S2's output used directly), and
   the stage-1 model given the prior read from the *target* (the ceiling the diffused prior aims at).
   Scoring and the oracle are ``benchmarks/quality_global.py``'s.
2. **speed**: ms per megapixel at full resolution (``--megapixels`` photo made from a real one, 512 px
   tiles) for DiffIR and NAFNet, runs alternating, medians compared; then one 1024 x 1024 image.
3. **agreement** and 4. **memory**: as ``bench_nafnet.py`` measures them, for DiffIR.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nafnet import bench_agreement, bench_memory, largest_photo, photo_of  # noqa: E402
from quality_global import fit_lut, held_out, pixels_of, quantize, run_model, score, table  # noqa: E402

from autohdr_cli.checkpoint import default_weights_path, load_checkpoint  # noqa: E402
from autohdr_cli.imageio import load_image  # noqa: E402
from autohdr_cli.models.lut import apply_lut  # noqa: E402
from autohdr_cli.tiling import enhance_tiled  # noqa: E402
from autohdr_cli.train import stage1_path  # noqa: E402
from autohdr_cli.devdata import data_option  # noqa: E402


def tiled(model, image: torch.Tensor) -> torch.Tensor:
    """``enhance``'s way: 512 px tiles, 32 px overlap, whole-photo context; one ``3 x H x W`` image."""
    return enhance_tiled(model, image[None])[0]


def bench_quality(diffir, nafnet, pairs_folder: Path, lut: Path | None, ablation: Path | None, stage1: Path | None) -> None:
    """Mean PSNR / SSIM / ΔE2000 on the held-out pairs for every method."""
    _train, pairs = held_out(pairs_folder)
    extra = {}
    if lut:
        extra["lut"] = load_checkpoint(lut).model.eval()
    ablation_model = load_checkpoint(ablation).model.eval() if ablation else None
    stage1_model = load_checkpoint(stage1).model.eval() if stage1 and stage1.exists() else None
    results: dict[str, list[dict[str, float]]] = {}
    for pair in pairs:
        source = torch.from_numpy(load_image(pair.source))
        target = torch.from_numpy(load_image(pair.target))
        row = {"identity": score(source, target)}
        for name, model in extra.items():
            row[name] = score(run_model(model, source), target)
        oracle = fit_lut(pixels_of(source), pixels_of(target))
        row["oracle 33³ LUT (per pair)"] = score(quantize(apply_lut(source[None], oracle)[0]), target)
        row["nafnet (tiled)"] = score(quantize(tiled(nafnet, source)), target)
        row["diffir (tiled, 4 steps)"] = score(quantize(tiled(diffir, source)), target)
        if ablation_model is not None:
            row["diffir, CPEN-S2 direct (no diffusion)"] = score(quantize(tiled(ablation_model, source)), target)
        if stage1_model is not None:
            with torch.inference_mode():
                ceiling = stage1_model.validation_forward(source[None], target[None])[0]
            row["diffir stage 1, prior from the target"] = score(quantize(ceiling), target)
        for name, values in row.items():
            results.setdefault(name, []).append(values)
        print(f"  {pair.stem}: " + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in row.items()), flush=True)
    means = {name: {key: float(np.mean([r[key] for r in rows])) for key in rows[0]} for name, rows in results.items()}
    print(table(f"{len(pairs)} held-out pairs of {pairs_folder} (full size, 8-bit results)", means), flush=True)


def milliseconds_per_megapixel(model, image: torch.Tensor) -> float:
    """One tiled run of ``model`` on ``image`` (``1 x 3 x H x W``), ms per megapixel."""
    started = time.perf_counter()
    enhance_tiled(model, image)
    return (time.perf_counter() - started) * 1000 / (image.shape[-2] * image.shape[-1] / 1e6)


def bench_speed(diffir, nafnet, image: torch.Tensor, repeats: int) -> None:
    """Alternate DiffIR and NAFNet on the same photo; print medians and the ratio; then 1024 x 1024."""
    megapixels = image.shape[-2] * image.shape[-1] / 1e6
    print(f"speed: {megapixels:.1f} MP photo, 512 px tiles, {torch.get_num_threads()} thread(s)", flush=True)
    times = {"diffir": [], "nafnet": []}
    for _ in range(repeats):
        for name, model in (("diffir", diffir), ("nafnet", nafnet)):
            times[name].append(milliseconds_per_megapixel(model, image))
        print(f"  diffir {times['diffir'][-1]:.0f} ms/MP   nafnet {times['nafnet'][-1]:.0f} ms/MP", flush=True)
    ours, theirs = statistics.median(times["diffir"]), statistics.median(times["nafnet"])
    print(f"speed: diffir {ours:.0f} ms/MP, nafnet {theirs:.0f} ms/MP (medians of {repeats}): "
          f"diffir costs {ours / theirs:.2f}x nafnet per megapixel", flush=True)
    square = image[..., :1024, :1024].contiguous()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        enhance_tiled(diffir, square, tile=1024)
        runs.append((time.perf_counter() - started) * 1000)
    print(f"speed: diffir on one 1024x1024 image (untiled, 4 diffusion steps): {statistics.median(runs):.0f} ms", flush=True)


def main() -> None:
    """Parse the options and run the sections asked for."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", **data_option("photos"))
    parser.add_argument("--pairs", **data_option("pairs"))
    parser.add_argument("--weights", type=Path, default=default_weights_path("diffir"), help="a DiffIR checkpoint")
    parser.add_argument("--nafnet", type=Path, default=default_weights_path("nafnet"), help="a NAFNet checkpoint")
    parser.add_argument("--lut", type=Path, default=None, help="quality: an adaptive lut checkpoint trained on the pairs")
    parser.add_argument("--ablation", type=Path, default=None, help="quality: DiffIR trained with timesteps 0")
    parser.add_argument("--stage1", type=Path, default=None, help="quality: the stage-1 checkpoint (default: beside --weights)")
    parser.add_argument("--megapixels", type=float, default=4.0)
    parser.add_argument("--memory-megapixels", type=float, default=24.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--sections", default="quality,speed", help="any of quality,speed,agreement,memory")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    diffir = load_checkpoint(args.weights).model.eval()
    nafnet = load_checkpoint(args.nafnet).model.eval()
    print(f"diffir: {args.weights}; nafnet: {args.nafnet}", flush=True)
    sections = set(args.sections.split(","))
    photo = largest_photo(args.photos)
    if "quality" in sections:
        bench_quality(diffir, nafnet, args.pairs, args.lut, args.ablation, args.stage1 or stage1_path(args.weights))
    if "speed" in sections:
        bench_speed(diffir, nafnet, photo_of(photo, args.megapixels), args.repeats)
    if "agreement" in sections:
        bench_agreement(diffir, args.pairs, 512, 32, [1024])
    if "memory" in sections:
        bench_memory(diffir, photo, args.memory_megapixels, 512, 32)


if __name__ == "__main__":
    main()
