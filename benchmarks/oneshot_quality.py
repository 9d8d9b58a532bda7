"""Quality of one-shot looks: a look learned from ONE before/after pair, applied to other photos.

For each training pair of the default split (``--val-split 0.2 --seed 0``, as ``autohdr train`` and
``autohdr evaluate`` use), alone:

- ``oneshot``: :func:`autohdr_cli.models.oneshot.fit_oneshot` on that pair (what ``autohdr train
  BEFORE AFTER`` does);
- ``one-pair 33³ LUT``: the plain baseline, a least-squares 33³ LUT fitted to that pair with the weak
  smoothness prior of ``quality_global.fit_lut`` (the regularised LUT an exported preset would be);

each applied to (1) the held-out pairs and (2) every pair from another source (Debian package, from
``photos.tsv``). References on the held-out pairs: identity (doing nothing), and one static 33³ LUT
fitted on all training pairs together. Results are rounded to 8 bits before scoring.

Printed as Markdown: per method the distribution over looks (each look's mean over its photos) of PSNR
and ΔE2000 (median, 10th percentile, best, worst), the share of (look, photo) cells that beat identity,
and the worst pixel: each photo's largest ΔE2000, as median and maximum over cells, and how many cells
have a worst pixel more than 10 ΔE above identity's on that photo (a colour the example did not show
blowing up). Usage, from the repository root:

    python benchmarks/oneshot_quality.py --pairs $AUTOHDR_DATA/pairs --sources PATH/photos.tsv --size 512

(``--pairs`` defaults to ``$AUTOHDR_DATA/pairs``; without ``--sources`` the by-source table is skipped.)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_global import fit_lut, pixels_of, quantize  # noqa: E402

from autohdr_cli import metrics  # noqa: E402
from autohdr_cli.devdata import data_option  # noqa: E402
from autohdr_cli.imageio import load_image  # noqa: E402
from autohdr_cli.inference import enhance_tensor  # noqa: E402
from autohdr_cli.models.lut import apply_lut  # noqa: E402
from autohdr_cli.models.oneshot import OneShotConfig, fit_oneshot  # noqa: E402
from autohdr_cli.pairs import find_pairs, split_pairs  # noqa: E402
from autohdr_cli.train_data import resize_long_side  # noqa: E402

#: A worst pixel this much (ΔE2000) above identity's on the same photo counts as a blow-up.
BLOW_UP = 10.0


def score(result: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR, mean ΔE2000 and the worst pixel's ΔE2000 of one ``3 x H x W`` 8-bit-rounded result."""
    result, target = quantize(result)[None], target[None]
    error = metrics.delta_e2000_map(result, target)
    return {"psnr": float(metrics.psnr(result, target)), "delta_e": float(error.mean()), "worst": float(error.max())}


def sources_of(table: Path | None) -> dict[str, str]:
    """File stem -> Debian package, from ``photos.tsv`` (empty without one)."""
    if table is None:
        return {}
    with open(table, newline="") as f:
        return {Path(row["file"]).stem: row["debian_package"] for row in csv.DictReader(f, delimiter="\t")}


def distribution(values: list[float]) -> str:
    """``median / 10th percentile / best / worst`` of per-look means (higher is better for PSNR)."""
    v = np.array(values)
    return f"{np.median(v):.2f} | {np.percentile(v, 10):.2f} | {v.max():.2f} | {v.min():.2f}"


def summarise(title: str, cells: dict[str, dict[str, list[dict]]], identity: dict[str, dict], extra: dict) -> str:
    """The Markdown table of one experiment: ``cells[method][look]`` is that look's list of scores (one
    per photo, each with its ``photo``); ``identity[photo]`` the untouched photo's scores."""
    lines = [f"### {title}", "",
             "| method | PSNR median | p10 | best | worst | ΔE00 median | p10 | best | worst | cells > identity "
             "| worst-pixel ΔE median | max | blow-ups |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method, looks in cells.items():
        psnr = [np.mean([c["psnr"] for c in scores]) for scores in looks.values()]
        delta = [np.mean([c["delta_e"] for c in scores]) for scores in looks.values()]
        flat = [c for scores in looks.values() for c in scores]
        beats = np.mean([c["psnr"] > identity[c["photo"]]["psnr"] for c in flat])
        worst = [c["worst"] for c in flat]
        blow = sum(c["worst"] > identity[c["photo"]]["worst"] + BLOW_UP for c in flat)
        # ΔE: lower is better, so its "10th percentile" is the 90th of the values, best the minimum.
        d = np.array(delta)
        delta_text = f"{np.median(d):.2f} | {np.percentile(d, 90):.2f} | {d.min():.2f} | {d.max():.2f}"
        lines.append(f"| {method} ({len(looks)} looks) | {distribution(psnr)} | {delta_text} | {100 * beats:.0f}% | "
                     f"{np.median(worst):.1f} | {max(worst):.1f} | {blow}/{len(flat)} |")
    for name, values in extra.items():
        lines.append(f"| {name} | {values['psnr']:.2f} | | | | {values['delta_e']:.2f} | | | | | "
                     f"{values['worst_median']:.1f} | {values['worst_max']:.1f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the tables; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", **data_option("pairs"))
    parser.add_argument("--sources", type=Path, help="photos.tsv naming each photo's Debian package (column debian_package)")
    parser.add_argument("--size", type=int, default=0, help="long side the photos are measured at (0: as stored)")
    parser.add_argument("--config", default="{}", help="OneShotConfig fields as JSON, to compare settings")
    parser.add_argument("--skip-lut", action="store_true", help="leave out the one-pair LUT baseline (slow)")
    parser.add_argument("--iterations", type=int, default=500, help="conjugate-gradient iterations of the LUT fits")
    parser.add_argument("--json", type=Path, help="write every score here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = OneShotConfig(**json.loads(args.config))
    pairs = find_pairs(args.pairs).pairs
    train, held = split_pairs(pairs, 0.2, 0)
    source = sources_of(args.sources)

    def load(path: Path) -> torch.Tensor:
        image = torch.from_numpy(load_image(path))
        return resize_long_side(image, args.size) if args.size else image

    images = {p.stem: (load(p.source), load(p.target)) for p in pairs}
    held_stems = [p.stem for p in held]
    identity = {stem: score(*images[stem]) for stem in images}
    static = fit_lut(torch.cat([pixels_of(images[p.stem][0], 3) for p in train]),
                     torch.cat([pixels_of(images[p.stem][1], 3) for p in train]), iterations=args.iterations)
    static_scores = [score(apply_lut(images[s][0][None], static)[0], images[s][1]) for s in held_stems]

    def reference(rows: list[dict]) -> dict:
        return {"psnr": float(np.mean([r["psnr"] for r in rows])), "delta_e": float(np.mean([r["delta_e"] for r in rows])),
                "worst_median": float(np.median([r["worst"] for r in rows])), "worst_max": float(max(r["worst"] for r in rows))}

    methods = ["oneshot"] + ([] if args.skip_lut else ["one-pair 33³ LUT"])
    held_cells = {m: {} for m in methods}
    cross_cells = {m: {} for m in methods}
    fit_seconds = []
    for pair in train:
        before, after = images[pair.stem]
        started = time.perf_counter()
        look = fit_oneshot([before], [after], config)
        fit_seconds.append(time.perf_counter() - started)
        appliers = {"oneshot": lambda image, look=look: enhance_tensor(look, image)}
        if not args.skip_lut:
            plain = fit_lut(pixels_of(before, 2), pixels_of(after, 2), iterations=args.iterations)
            appliers["one-pair 33³ LUT"] = lambda image, plain=plain: apply_lut(image[None], plain)[0]
        others = [s for s in images if s != pair.stem and source and source.get(s) != source.get(pair.stem)]
        for method, apply in appliers.items():
            outputs = {}
            for stem in dict.fromkeys(held_stems + others):
                outputs[stem] = {"photo": stem, **score(apply(images[stem][0]), images[stem][1])}
            held_cells[method][pair.stem] = [outputs[s] for s in held_stems]
            if others:
                cross_cells[method][pair.stem] = [outputs[s] for s in others]
        shown = ", ".join(f"{m} {np.mean([c['psnr'] for c in held_cells[m][pair.stem]]):.2f}" for m in methods)
        print(f"{pair.stem}: {shown} dB on the held-out pairs", file=sys.stderr, flush=True)
    extra = {"identity (mean)": reference([identity[s] for s in held_stems]),
             "static 33³ LUT (all training pairs; mean)": reference(static_scores)}
    print(summarise(f"Each of {len(train)} training pairs alone -> the {len(held)} held-out pairs", held_cells,
                    identity, extra))
    if any(cross_cells.values()):
        print()
        print(summarise("Each training pair alone -> every pair from another source (Debian package)",
                        cross_cells, identity, {}))
        print(f"\nidentity on those pairs: {np.mean([identity[s]['psnr'] for s in images]):.2f} dB (all pairs)")
    print(f"\noneshot fit: median {np.median(fit_seconds):.2f} s per pair ({args.threads} thread(s)); config {config}")
    if args.json:
        args.json.write_text(json.dumps({"held_out": held_cells, "other_sources": cross_cells, "identity": identity,
                                         "references": extra}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
