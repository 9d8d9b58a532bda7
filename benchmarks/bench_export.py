"""Exported file sizes, and ONNX Runtime CPU speed against PyTorch CPU, for every registered backend.

Usage:

    python benchmarks/bench_export.py                    # every backend, default configs, 1024x1024
    python benchmarks/bench_export.py --tiny             # the small test configs (quick)
    python benchmarks/bench_export.py --models lut nilut --size 2048 --repeats 5
    python benchmarks/bench_export.py --weights autohdr_cli/weights/nafnet-default.safetensors  # trained files

For each backend in ``autohdr_cli.models.MODELS`` it builds the model (default config, or ``--tiny``),
exports it the way ``autohdr export`` does (one trace, then pt2 and ONNX, each reloaded and checked
against PyTorch), and prints the sizes of the checkpoint, ``.cube`` (global models only), ``.pt2`` and
``.onnx`` files. Then it times one ``1 x 3 x SIZE x SIZE`` image through the PyTorch model (its
``forward``, inference mode) and through an ONNX Runtime CPU session, alternating the two so that load
from other processes hits both alike, and prints the median times and their ratio (ORT / PyTorch: below
1 means ONNX Runtime is faster). Both use every core (torch's and ORT's default thread counts).
Weights are untrained: speed does not depend on them. ``--weights FILE...`` times checkpoints instead
(the shipped defaults, whose configs differ from the registered defaults: NAFNet and DiffIR read
neighbourhood maps, measured inside the exported graph).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autohdr_cli.checkpoint import checkpoint_bytes, load_model
from autohdr_cli.cube import format_cube
from autohdr_cli.export import (
    ExportFailed, cube_from_model, human_size, needs_image, onnx_bytes, pt2_bytes, trace_program,
)
from autohdr_cli.models import MODELS, build
from autohdr_cli.inference import is_global

#: Small configs for a quick run (the same as the tests use).
TINY_CONFIGS = {
    "cube": {"size": 9},
    "lut": {"lut_size": 9, "num_basis": 2, "thumbnail_size": 16, "widths": [4, 8], "histogram_bins": 4, "hidden": 8},
    "nilut": {"width": 8, "depth": 2, "num_styles": 2, "style_names": ["warm", "cool"], "grid_size": 9},
    "nafnet": {"width": 4, "enc_blocks": [0], "middle_blocks": 1, "dec_blocks": [0]},
    "diffir": {"width": 4, "enc_blocks": [1], "middle_blocks": 1, "dec_blocks": [1], "heads": [1, 2], "prior_dim": 16,
               "cpen_width": 4, "cpen_blocks": 1, "prior_size": 32, "denoiser_blocks": 1},
    "localtone": {"hidden": 8, "depth": 1, "context_size": 32},
}


def cube_size_bytes(model: torch.nn.Module, folder: Path) -> int | None:
    """Size of the model's default ``.cube`` export (None for models that cannot be a LUT)."""
    if not is_global(model):
        return None
    image = None
    if needs_image(model):
        image = folder / "photo.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    return len(format_cube(cube_from_model(model, image=image)).encode())


def time_pair(model: torch.nn.Module, session, images: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median seconds of PyTorch and ONNX Runtime on ``images``, runs interleaved, after one warm-up each."""
    feed = {session.get_inputs()[0].name: images.numpy()}
    torch_times, ort_times = [], []
    with torch.inference_mode():
        model(images)
        session.run(None, feed)
        for _ in range(repeats):
            started = time.perf_counter()
            model(images)
            torch_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            session.run(None, feed)
            ort_times.append(time.perf_counter() - started)
    return statistics.median(torch_times), statistics.median(ort_times)


def bench_backend(name: str, tiny: bool, size: int, repeats: int, folder: Path, weights: Path | None = None) -> dict:
    """Sizes, export time and speeds of one backend (or of the checkpoint ``weights``, named ``name``)."""
    import onnxruntime

    if weights is not None:
        model = load_model(weights).eval()
    else:
        model = build(name, TINY_CONFIGS.get(name) if tiny else None).eval()
    row = {"model": name, "parameters": sum(p.numel() for p in model.parameters())}
    row["safetensors"] = len(checkpoint_bytes(model))
    row["cube"] = cube_size_bytes(model, folder)
    started = time.perf_counter()
    try:
        program = trace_program(model)
        pt2, pt2_diff = pt2_bytes(model, program)
        onnx_data, onnx_diff = onnx_bytes(model, program)
    except ExportFailed as e:
        row["error"] = str(e)
        return row
    row.update(export_seconds=time.perf_counter() - started, pt2=len(pt2), onnx=len(onnx_data))
    row.update(pt2_diff=pt2_diff, onnx_diff=onnx_diff)
    session = onnxruntime.InferenceSession(onnx_data, providers=["CPUExecutionProvider"])
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    row["torch_s"], row["ort_s"] = time_pair(model, session, images, repeats)
    row["ratio"] = row["ort_s"] / row["torch_s"]
    return row


def _size(value: int | None) -> str:
    return human_size(value) if value is not None else "-"


def main() -> int:
    """Run the benchmark and print one table row per backend."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=sorted(MODELS), help="backends (default: all registered)")
    parser.add_argument("--tiny", action="store_true", help="small configs instead of the defaults")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (median reported)")
    parser.add_argument("--weights", nargs="*", type=Path, default=[], help="checkpoints to time instead of --models")
    args = parser.parse_args()
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)} (registered: {', '.join(sorted(MODELS))})")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {'tiny' if args.tiny else 'default'} configs, "
        f"{args.size}x{args.size}, median of {args.repeats}" + (", trained checkpoints" if args.weights else "")
    )
    header = f"{'model':8} {'params':>9} {'safetensors':>11} {'cube':>9} {'pt2':>9} {'onnx':>9} {'export':>7} "
    header += f"{'max diff':>9} {'torch ms':>9} {'ort ms':>9} {'ort/torch':>9}"
    print(header)
    failed = False
    with tempfile.TemporaryDirectory() as folder:
        runs = [(path.stem, path) for path in args.weights] or [(name, None) for name in args.models]
        for name, weights in runs:
            row = bench_backend(name, args.tiny, args.size, args.repeats, Path(folder), weights)
            if "error" in row:
                failed = True
                print(f"{name:8} {row['parameters']:>9,} {_size(row['safetensors']):>11}  export failed: {row['error']}")
                continue
            print(
                f"{name:8} {row['parameters']:>9,} {_size(row['safetensors']):>11} {_size(row['cube']):>9} "
                f"{_size(row['pt2']):>9} {_size(row['onnx']):>9} {row['export_seconds']:>6.1f}s "
                f"{max(row['pt2_diff'], row['onnx_diff']):>9.1e} {row['torch_s'] * 1e3:>9.1f} "
                f"{row['ort_s'] * 1e3:>9.1f} {row['ratio']:>9.2f}",
                flush=True,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
