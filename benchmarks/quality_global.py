"""Quality of the global looks (``lut``, ``nilut``) against baselines, on data they never trained on.

Two tables, printed as Markdown (and written as JSON with ``--json``):

1. **Auto-fix** (the shipped default ``lut``): held-out photos, each degraded ``--per-photo`` times with
   the training degradations (fixed seed), restored by: identity (nothing), ImageMagick
   ``-auto-level -auto-gamma`` (a classical auto-fix), the default weights, and an oracle 33^3 LUT
   fitted to each degraded/original pair itself (the best any global colour transform can do).
2. **Pairs** (a look learned from before/after pairs): the held-out pairs, for identity, ``lut`` and
   ``nilut`` checkpoints trained with ``autohdr train`` on the other pairs, the per-pair oracle 33^3
   LUT, and one static 33^3 LUT fitted on all training pairs together (what an exported preset does).

Held out = the pairs folder's validation split at ``--val-split 0.2 --seed 0`` (the defaults of
``autohdr train`` and ``autohdr evaluate``), by stem, for the photos too. Every result is quantised to
8 bits, as a written JPEG/PNG would be, before scoring. Usage, from the repository root:

    python benchmarks/quality_global.py --photos $AUTOHDR_DATA/photos --pairs $AUTOHDR_DATA/pairs \\
        --default-weights autohdr_cli/weights/lut-default.safetensors --lut runs/pairs-lut.safetensors \\
        --nilut runs/pairs-nilut.safetensors

Oracle and static LUTs are least-squares fits (trilinear interpolation is linear in the table), solved by
conjugate gradients on the normal equations with a weak smoothness prior that fills cells no pixel
reaches; see :func:`fit_lut`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autohdr_cli import metrics
from autohdr_cli.checkpoint import load_checkpoint
from autohdr_cli.imageio import load_image
from autohdr_cli.models.lut import apply_lut, identity_lut, trilinear_corners
from autohdr_cli.pairs import find_pairs, read_stem_list, split_by_stems, split_pairs
from autohdr_cli.inference import enhance_tensor
from autohdr_cli.train_data import DegradationRanges, degrade, random_degradations, resize_long_side
from autohdr_cli.devdata import ENVIRONMENT_VARIABLE, data_option

#: Seed of the benchmark's degradations (distinct from training's and the validation's).
BENCHMARK_SEED = 2024
_OFFSETS = [(db, dg, dr) for db in (-1, 0, 1) for dg in (-1, 0, 1) for dr in (-1, 0, 1)]


# ------------------------------------------------------------------------------------ least-squares LUT


#: For ``N x 3`` pixels: the 8 trilinear corners as (flat node index, weight, (b, g, r) step).
_corners = trilinear_corners


def _stencil_apply(stencil: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Multiply the 27-point stencil matrix (``27 x S x S x S``, one grid per offset) with ``3 x S x S x S``."""
    size = values.shape[-1]
    padded = torch.nn.functional.pad(values, (1, 1, 1, 1, 1, 1))
    result = torch.zeros_like(values)
    for code, (db, dg, dr) in enumerate(_OFFSETS):
        shifted = padded[:, 1 + db : 1 + db + size, 1 + dg : 1 + dg + size, 1 + dr : 1 + dr + size]
        result.addcmul_(stencil[code], shifted)
    return result


def fit_lut(
    sources: torch.Tensor, targets: torch.Tensor, size: int = 33, smoothness: float = 1e-3, iterations: int = 1500
) -> torch.Tensor:
    """The ``3 x S x S x S`` LUT minimising the squared error of ``apply_lut(sources)`` against ``targets``.

    ``sources``/``targets`` are ``N x 3`` pixel lists. The normal equations ``(MᵀM + μL + λI) x = Mᵀy + λ·id``
    are kept as a 27-point stencil (MᵀM couples only neighbouring nodes), with a graph-Laplacian
    smoothness ``μ`` (relative to the pixels per node) that extends the fit into unreached cells, and a
    tiny ridge ``λ`` towards the identity; solved by Jacobi-preconditioned conjugate gradients.
    """
    threads = torch.get_num_threads()
    # Thousands of small grid operations: threads only add hand-over costs (and stall on a busy machine).
    torch.set_num_threads(1)
    try:
        return _fit_lut(sources, targets, size, smoothness, iterations)
    finally:
        torch.set_num_threads(threads)


def _fit_lut(
    sources: torch.Tensor, targets: torch.Tensor, size: int, smoothness: float, iterations: int
) -> torch.Tensor:
    cells = size**3
    stencil = torch.zeros(27, cells, dtype=torch.float64)
    rhs = torch.zeros(3, cells, dtype=torch.float64)
    corners = _corners(sources.double(), size)
    targets = targets.double()
    for node, weight, step in corners:
        rhs.index_add_(1, node, (weight[:, None] * targets).t())
        for other_node, other_weight, other_step in corners:
            code = _OFFSETS.index(tuple(o - s for o, s in zip(other_step, step)))
            stencil[code].index_add_(0, node, weight * other_weight)
    per_node = len(sources) / cells
    mu, ridge = smoothness * per_node, 1e-6 * per_node
    stencil = stencil.view(27, size, size, size)
    centre = _OFFSETS.index((0, 0, 0))
    for code, offset in enumerate(_OFFSETS):
        if sum(abs(o) for o in offset) != 1:
            continue
        # A neighbour in this direction exists except on the grid's face.
        exists = torch.ones(size, size, size, dtype=torch.float64)
        for axis, o in enumerate(offset):
            if o:
                index = [slice(None)] * 3
                index[axis] = size - 1 if o > 0 else 0
                exists[tuple(index)] = 0
        stencil[code] -= mu * exists
        stencil[centre] += mu * exists
    stencil[centre] += ridge
    identity = identity_lut(size, torch.float64)
    rhs = rhs.view(3, size, size, size) + ridge * identity
    inverse_diagonal = 1.0 / stencil[centre]
    solution = identity.clone()
    residual = rhs - _stencil_apply(stencil, solution)
    preconditioned = residual * inverse_diagonal
    direction = preconditioned.clone()
    product_rz = (residual * preconditioned).sum()
    tolerance = 1e-8 * rhs.norm()
    for _ in range(iterations):
        product = _stencil_apply(stencil, direction)
        alpha = product_rz / (direction * product).sum()
        solution += alpha * direction
        residual -= alpha * product
        if residual.norm() < tolerance:
            break
        preconditioned = residual * inverse_diagonal
        new_rz = (residual * preconditioned).sum()
        direction = preconditioned + (new_rz / product_rz) * direction
        product_rz = new_rz
    return solution.float().contiguous()


def pixels_of(image: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """``3 x H x W`` -> ``N x 3``, every ``stride``-th pixel along both axes."""
    return image[:, ::stride, ::stride].reshape(3, -1).t()


# ------------------------------------------------------------------------------------------- scoring


def quantize(image: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels, as writing a JPEG/PNG would."""
    return (image.clamp(0, 1) * 255).round() / 255


def score(prediction: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR, SSIM and ΔE2000 of one ``3 x H x W`` result."""
    prediction, target = prediction[None], target[None]
    return {
        "psnr": float(metrics.psnr(prediction, target)),
        "ssim": float(metrics.ssim(prediction, target)),
        "delta_e": float(metrics.delta_e2000(prediction, target)),
    }


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the rows."""
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def imagemagick_autofix(image: torch.Tensor, workdir: Path) -> torch.Tensor | None:
    """``convert -auto-level -auto-gamma`` on an 8-bit PNG of ``image``; None without ImageMagick."""
    convert = shutil.which("convert")
    if convert is None:
        return None
    version = subprocess.run([convert, "-version"], capture_output=True, text=True).stdout
    if "ImageMagick" not in version:
        return None
    source, result = workdir / "in.png", workdir / "out.png"
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(source)
    subprocess.run([convert, str(source), "-auto-level", "-auto-gamma", str(result)], check=True)
    pixels = np.asarray(Image.open(result).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1)


def run_model(model, image: torch.Tensor) -> torch.Tensor:
    """The model's result on one ``3 x H x W`` image, quantised to 8 bits."""
    return quantize(enhance_tensor(model, image))


def table(title: str, rows: dict[str, dict[str, float]], identity: str = "identity") -> str:
    """A Markdown table of mean PSNR/SSIM/ΔE per method, with the gain over identity."""
    base = rows[identity]
    lines = [
        f"### {title}", "",
        "| method | PSNR dB | Δ PSNR | SSIM | ΔE2000 | ΔE vs identity |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, values in rows.items():
        lines.append(
            f"| {name} | {values['psnr']:.2f} | {values['psnr'] - base['psnr']:+.2f} | {values['ssim']:.4f} | "
            f"{values['delta_e']:.2f} | {100 * (values['delta_e'] / base['delta_e'] - 1):+.0f}% |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- tables


def held_out(pairs_folder: Path, val_list: Path | None = None) -> tuple[list, list]:
    """(training pairs, held-out pairs): the pairs ``val_list`` names (a whole source), or autohdr's
    default random split."""
    pairs = find_pairs(pairs_folder).pairs
    if val_list is not None:
        return split_by_stems(pairs, read_stem_list(val_list))
    return split_pairs(pairs, 0.2, 0)


def autofix_table(args, held_out_stems: list[str]) -> tuple[str, dict]:
    """Table 1: degraded held-out photos."""
    photos = {p.stem: p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    model = load_checkpoint(args.default_weights).model
    generator = torch.Generator().manual_seed(BENCHMARK_SEED)
    results: dict[str, list[dict[str, float]]] = {"identity": [], "ImageMagick -auto-level -auto-gamma": [],
                                                  "lut (default weights)": [], "oracle 33³ LUT": []}
    cases = []
    with tempfile.TemporaryDirectory() as workdir:
        for stem in held_out_stems:
            clean = quantize(resize_long_side(torch.from_numpy(load_image(photos[stem])), args.size))
            parameters = random_degradations(args.per_photo, DegradationRanges(), generator)
            for index in range(args.per_photo):
                bad = quantize(degrade(clean[None], parameters[index : index + 1])[0])
                autofix = imagemagick_autofix(bad, Path(workdir))
                oracle = quantize(apply_lut(bad[None], fit_lut(pixels_of(bad), pixels_of(clean)))[0])
                row = {"identity": score(bad, clean), "lut (default weights)": score(run_model(model, bad), clean),
                       "oracle 33³ LUT": score(oracle, clean)}
                if autofix is not None:
                    row["ImageMagick -auto-level -auto-gamma"] = score(autofix, clean)
                for name, values in row.items():
                    results[name].append(values)
                cases.append({"photo": stem, "degradation": parameters[index].tolist(), **row})
                print(f"{stem} #{index}: " + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in row.items()), file=sys.stderr)
    means = {name: mean_scores(rows) for name, rows in results.items() if rows}
    title = (f"Auto-fix: {len(held_out_stems)} held-out photos x {args.per_photo} degradations "
             f"({len(cases)} cases, long side {args.size} px)")
    return table(title, means), {"means": means, "cases": cases}


def pairs_table(args) -> tuple[str, dict]:
    """Table 2: held-out before/after pairs."""
    train_pairs, val_pairs = held_out(args.pairs, args.val_list)
    print(f"fitting the static LUT on {len(train_pairs)} training pairs", file=sys.stderr)
    sources, targets = [], []
    for pair in train_pairs:
        source, target = torch.from_numpy(load_image(pair.source)), torch.from_numpy(load_image(pair.target))
        sources.append(pixels_of(source, 3))
        targets.append(pixels_of(target, 3))
    static = fit_lut(torch.cat(sources), torch.cat(targets))
    models = {}
    if args.lut:
        models["lut"] = load_checkpoint(args.lut).model
    if args.nilut:
        models["nilut"] = load_checkpoint(args.nilut).model
    names = ["identity", *models, "static 33³ LUT (all training pairs)", "oracle 33³ LUT (per pair)"]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    per_pair = []
    for pair in val_pairs:
        source = torch.from_numpy(load_image(pair.source))
        target = torch.from_numpy(load_image(pair.target))
        row = {"identity": score(source, target)}
        for name, model in models.items():
            row[name] = score(run_model(model, source), target)
        row["static 33³ LUT (all training pairs)"] = score(quantize(apply_lut(source[None], static)[0]), target)
        oracle = fit_lut(pixels_of(source), pixels_of(target))
        row["oracle 33³ LUT (per pair)"] = score(quantize(apply_lut(source[None], oracle)[0]), target)
        for name, values in row.items():
            results[name].append(values)
        per_pair.append({"pair": pair.stem, **row})
        print(f"{pair.stem}: " + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in row.items()), file=sys.stderr)
    means = {name: mean_scores(rows) for name, rows in results.items()}
    lines = [table(f"Pairs: {len(val_pairs)} held-out pairs of {args.pairs} (full size)", means), ""]
    lines.append("| pair | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for row in per_pair:
        lines.append(f"| {row['pair']} | " + " | ".join(f"{row[n]['psnr']:.2f}" for n in names) + " |")
    oracle_gain = means["oracle 33³ LUT (per pair)"]["psnr"] - means["identity"]["psnr"]
    for name in models:
        gain = means[name]["psnr"] - means["identity"]["psnr"]
        beats = sum(row[name]["psnr"] > row["identity"]["psnr"] for row in per_pair)
        lines.append("")
        lines.append(
            f"{name}: {100 * gain / oracle_gain:.0f}% of the oracle's PSNR gain; "
            f"{means[name]['psnr'] - means['static 33³ LUT (all training pairs)']['psnr']:+.2f} dB vs the static LUT; "
            f"beats identity on {beats}/{len(per_pair)} pairs"
        )
    return "\n".join(lines), {"means": means, "pairs": per_pair}


def main(argv: list[str] | None = None) -> int:
    """Print the tables; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Each folder is needed only by the table that reads it: --skip-photos runs without --photos.
    parser.add_argument("--photos", **{**data_option("photos"), "required": False})
    parser.add_argument("--pairs", **{**data_option("pairs"), "required": False})
    parser.add_argument("--default-weights", type=Path, default=Path("autohdr_cli/weights/lut-default.safetensors"))
    parser.add_argument("--lut", type=Path, help="lut checkpoint trained on the pairs (autohdr train)")
    parser.add_argument("--nilut", type=Path, help="nilut checkpoint trained on the pairs (autohdr train)")
    parser.add_argument("--val-list", type=Path, help="hold out the pairs this file names (a whole source) "
                        "instead of the default random split, as train/evaluate --val-list")
    parser.add_argument("--size", type=int, default=1024, help="long side the photos are measured at")
    parser.add_argument("--per-photo", type=int, default=4, help="degradations per held-out photo")
    parser.add_argument("--skip-photos", action="store_true")
    parser.add_argument("--skip-pairs", action="store_true")
    parser.add_argument("--json", type=Path, help="write all figures here")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no spinning on a busy machine)")
    args = parser.parse_args(argv)
    for folder, skipped in (("photos", args.skip_photos), ("pairs", False)):
        if getattr(args, folder) is None and not skipped:
            parser.error(f"--{folder} is required (or set ${ENVIRONMENT_VARIABLE})")
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    report: dict = {}
    stems = [p.stem for p in held_out(args.pairs, args.val_list)[1]]
    if not args.skip_photos:
        text, report["autofix"] = autofix_table(args, stems)
        print(text + "\n")
    if not args.skip_pairs:
        text, report["pairs"] = pairs_table(args)
        print(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
