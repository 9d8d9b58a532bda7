"""NAFNet at full resolution on the CPU: speed against the plain reference, tile agreement, peak memory.

Usage (``../data`` built by ``../shared/data/make_pairs.sh``):

    python benchmarks/bench_nafnet.py --photos $AUTOHDR_DATA/photos --pairs $AUTOHDR_DATA/pairs

Three measurements, each printed as it finishes:

1. **speed**: ms per megapixel of the shipped preset (``autohdr_cli/weights/nafnet-default.safetensors``, else an
   untrained ``small``) on a ``--megapixels`` photo made from a real one, through
   :func:`autohdr_cli.tiling.enhance_tiled` (512 px tiles, 32 px overlap, 4 tiles a call, channels-last,
   inference mode), against the reference architecture written the plain way (the published
   LayerNorm2d formula and ``AdaptiveAvgPool2d`` attention, NCHW, ``no_grad``, one tile at a time over
   the same tile plan) holding the same weights. Runs alternate, medians are compared; the ratio is
   the figure to quote (absolute times drift on a shared machine).
2. **agreement**: on the held-out development pairs (1536 px, small enough to run untiled), the mean
   and the worst column/row mean of |tiled - untiled| in 8-bit levels, for whole-image statistics from
   a ``--context-size`` copy and for naive tiles (each with its own statistics).
3. **memory**: peak RSS of ``autohdr enhance --weights ...`` on one ``--memory-megapixels`` JPEG
   (decode, tiles, encode: what a user sees), and its time.
4. **quality** (``--sections quality``): the held-out pairs at full size, 8-bit results, beside the
   LUT issue's table (``benchmarks/quality_global.py``'s scoring and oracle): identity, ``--lut`` (an
   image-adaptive LUT checkpoint trained on the same pairs), the per-pair oracle 33^3 LUT, and NAFNet
   through the tiler, as ``autohdr enhance`` runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import run_measured  # noqa: E402

from autohdr_cli.checkpoint import default_weights_path, load_checkpoint, save_checkpoint
from autohdr_cli.imageio import load_image
from autohdr_cli.models.nafnet import NAFNet, NAFNetConfig, preset
from autohdr_cli.pairs import find_pairs, split_pairs
from autohdr_cli.tiling import enhance_tiled, plan_axis
from autohdr_cli.devdata import data_option

# ------------------------------------------------------------------ the reference, written the plain way


class PlainLayerNorm2d(nn.Module):
    """The published LayerNorm2d: mean and variance over channels, NCHW."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        """Normalise each pixel's channels."""
        mean = x.mean(1, keepdim=True)
        variance = (x - mean).pow(2).mean(1, keepdim=True)
        y = (x - mean) / (variance + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class PlainGate(nn.Module):
    """SimpleGate as a module."""

    def forward(self, x):
        """Multiply the two halves of the channels."""
        a, b = x.chunk(2, dim=1)
        return a * b


class PlainBlock(nn.Module):
    """The published NAFBlock, attention as ``Sequential(AdaptiveAvgPool2d(1), Conv2d)``."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2):
        super().__init__()
        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = PlainGate()
        ffn = c * ffn_expand
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1 = PlainLayerNorm2d(c)
        self.norm2 = PlainLayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp):
        """The block, as published."""
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + x * self.gamma


class PlainNAFNet(nn.Module):
    """The published NAFNet shell (zero padding to a multiple of 2^levels, as published)."""

    def __init__(self, config: NAFNetConfig):
        super().__init__()
        width = config.width
        self.intro = nn.Conv2d(3, width, 3, padding=1)
        self.ending = nn.Conv2d(width, 3, 3, padding=1)
        self.encoders, self.decoders, self.ups, self.downs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        channels = width
        for count in config.enc_blocks:
            self.encoders.append(nn.Sequential(*[PlainBlock(channels, config.dw_expand, config.ffn_expand) for _ in range(count)]))
            self.downs.append(nn.Conv2d(channels, 2 * channels, 2, 2))
            channels *= 2
        self.middle_blks = nn.Sequential(*[PlainBlock(channels, config.dw_expand, config.ffn_expand) for _ in range(config.middle_blocks)])
        for count in config.dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(channels, channels * 2, 1, bias=False), nn.PixelShuffle(2)))
            channels //= 2
            self.decoders.append(nn.Sequential(*[PlainBlock(channels, config.dw_expand, config.ffn_expand) for _ in range(count)]))
        self.padder_size = 2 ** len(self.encoders)

    def forward(self, inp):
        """The network, as published."""
        _b, _c, h, w = inp.shape
        inp = F.pad(inp, (0, (-w) % self.padder_size, 0, (-h) % self.padder_size))
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1]):
            x = decoder(up(x) + skip)
        return (self.ending(x) + inp)[:, :, :h, :w]


def plain_from(model: NAFNet) -> PlainNAFNet:
    """A :class:`PlainNAFNet` holding ``model``'s weights (parameter names mapped)."""
    plain = PlainNAFNet(model.config)
    mapped = {}
    for name, value in model.state_dict().items():
        name = name.replace(".sca.", ".sca.1.").replace("middle.", "middle_blks.")
        mapped[name] = value
    plain.load_state_dict(mapped)
    return plain.eval()


def plain_tiled(plain: nn.Module, image: torch.Tensor, tile: int, overlap: int, multiple: int) -> torch.Tensor:
    """The plain way to tile: one tile per call, NCHW, each tile on its own, the same feathering."""
    _b, _c, height, width = image.shape
    rows, columns = plan_axis(height, tile, overlap, multiple), plan_axis(width, tile, overlap, multiple)
    padded = F.pad(image, (0, columns.padded - width, 0, rows.padded - height), mode="replicate")
    output = torch.zeros(1, 3, rows.padded, columns.padded)
    with torch.no_grad():
        for top, row_weight in zip(rows.starts, rows.weights):
            for left, column_weight in zip(columns.starts, columns.weights):
                piece = padded[:, :, top : top + rows.length, left : left + columns.length]
                output[:, :, top : top + rows.length, left : left + columns.length] += (
                    plain(piece) * row_weight[:, None] * column_weight[None, :]
                )
    return output[:, :, :height, :width].clamp(0, 1)


# ------------------------------------------------------------------------------------------- helpers


def shipped_model() -> tuple[NAFNet, str]:
    """The shipped default weights, or an untrained ``small`` preset (same cost) when there are none."""
    path = default_weights_path("nafnet")
    if path.exists():
        return load_checkpoint(path).model.eval(), str(path)
    torch.manual_seed(0)
    return NAFNet(preset("small")).eval(), "untrained small preset (no shipped weights yet)"


def photo_of(path: Path, megapixels: float) -> torch.Tensor:
    """A real photo resized (bicubic) to about ``megapixels``, as ``1 x 3 x H x W`` float."""
    image = Image.open(path).convert("RGB")
    scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None].contiguous()


def largest_photo(folder: Path) -> Path:
    """The photo with the most pixels in ``folder`` (JPEG/PNG)."""
    files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return max(files, key=lambda p: (lambda s: s[0] * s[1])(Image.open(p).size))


# ------------------------------------------------------------------------------------------ sections


def bench_speed(model: NAFNet, image: torch.Tensor, repeats: int, tile: int, overlap: int, batch: int) -> None:
    """Alternate ours and the plain reference on the same photo; print medians and the ratio."""
    megapixels = image.shape[-2] * image.shape[-1] / 1e6
    plain = plain_from(model)
    check = image[:, :, :256, :256]
    # The reference averages each block over its own input (the paper's way); ours, with whole_context,
    # over the squashed photo. The weights mapping is checked with ours set to the paper's way too.
    own_statistics = NAFNet(dataclasses.replace(model.config, whole_context=0)).eval()
    own_statistics.load_state_dict(model.state_dict())
    with torch.no_grad():
        agreement = float((plain(check).clamp(0, 1) - own_statistics(check)).abs().max())
    print(f"speed: {megapixels:.1f} MP photo, tile {tile}, overlap {overlap}, {torch.get_num_threads()} thread(s); "
          f"reference == ours (own averages) on a 256 px crop (max |diff| {agreement:.1e})", flush=True)
    ours, theirs = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        enhance_tiled(model, image, tile, overlap, batch)
        ours.append((time.perf_counter() - started) * 1000 / megapixels)
        started = time.perf_counter()
        plain_tiled(plain, image, tile, overlap, model.multiple)
        theirs.append((time.perf_counter() - started) * 1000 / megapixels)
        print(f"  ours {ours[-1]:.0f} ms/MP   plain reference {theirs[-1]:.0f} ms/MP", flush=True)
    mine, reference = statistics.median(ours), statistics.median(theirs)
    print(f"speed: ours {mine:.0f} ms/MP, plain reference {reference:.0f} ms/MP (medians of {repeats}): "
          f"ours is {reference / mine:.2f}x faster", flush=True)


class WithoutContext(nn.Module):
    """Naive tiling: each tile computes its own channel-attention averages."""

    def __init__(self, model: NAFNet):
        super().__init__()
        self.model, self.multiple = model, model.multiple

    def forward(self, images):
        """The model without context: its own averages per tile."""
        return self.model(images)


def bench_agreement(model: NAFNet, pairs_folder: Path, tile: int, overlap: int, context_sizes: list[int]) -> None:
    """|tiled - untiled| on the held-out sources, in 8-bit levels: mean and worst column/row mean."""
    _train, held_out = split_pairs(find_pairs(pairs_folder).pairs, 0.2, 0)
    rows = {f"context {size}": [] for size in context_sizes}
    rows["naive tiles"] = []
    for pair in held_out:
        image = torch.from_numpy(load_image(pair.source))[None]
        with torch.inference_mode():
            reference = model(image)
        runs = {f"context {size}": enhance_tiled(model, image, tile, overlap, context_size=size) for size in context_sizes}
        runs["naive tiles"] = enhance_tiled(WithoutContext(model), image, tile, overlap)
        for name, tiled in runs.items():
            difference = (tiled - reference).abs() * 255
            seam = max(float(difference.mean(dim=(0, 1, 2)).max()), float(difference.mean(dim=(0, 1, 3)).max()))
            rows[name].append((float(difference.mean()), seam))
        print(f"  {pair.stem} {tuple(image.shape[-2:])}: " + ", ".join(
            f"{name} {values[-1][0]:.3f}/{values[-1][1]:.3f}" for name, values in rows.items()), flush=True)
    print(f"agreement on {len(held_out)} held-out photos, tile {tile} overlap {overlap} "
          "(|tiled - untiled| in 8-bit levels: mean over photos of the mean / worst column-or-row mean):")
    for name, values in rows.items():
        print(f"  {name:>14}: mean {np.mean([v[0] for v in values]):.3f}, worst line {max(v[1] for v in values):.3f}",
              flush=True)


def bench_memory(model: NAFNet, photo: Path, megapixels: float, tile: int, overlap: int) -> None:
    """Peak RSS and time of ``autohdr enhance`` on one large JPEG, in a child process."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        inputs, outputs = folder / "in", folder / "out"
        inputs.mkdir()
        image = Image.open(photo).convert("RGB")
        scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
        image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC).save(
            inputs / "large.jpg", quality=92, subsampling=0
        )
        weights = folder / "nafnet.safetensors"
        save_checkpoint(weights, model)
        command = [sys.executable, "-m", "autohdr_cli", "enhance", str(inputs), str(outputs), "--weights", str(weights),
                   "--workers", "1", "--tile", str(tile), "--tile-overlap", str(overlap), "--device", "cpu"]
        measured = run_measured(command)
        if measured.returncode != 0:
            raise SystemExit(f"autohdr enhance failed: {measured.stderr[-2000:]}")
        size = Image.open(inputs / "large.jpg").size
        print(f"memory: autohdr enhance on one {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.1f} MP) JPEG: "
              f"peak RSS {measured.peak_mb:.0f} MB, {measured.seconds:.0f} s", flush=True)


def bench_quality(model: NAFNet, pairs_folder: Path, lut: Path | None, tile: int, overlap: int) -> None:
    """Mean PSNR / SSIM / ΔE2000 on the held-out pairs for identity, lut, oracle LUT and NAFNet."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from quality_global import fit_lut, pixels_of, quantize, run_model, score, table

    from autohdr_cli.models.lut import apply_lut

    _train, held_out = split_pairs(find_pairs(pairs_folder).pairs, 0.2, 0)
    names = ["identity"] + (["lut"] if lut else []) + ["oracle 33³ LUT (per pair)", "nafnet (tiled)"]
    lut_model = load_checkpoint(lut).model.eval() if lut else None
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for pair in held_out:
        source = torch.from_numpy(load_image(pair.source))
        target = torch.from_numpy(load_image(pair.target))
        row = {"identity": score(source, target)}
        if lut_model is not None:
            row["lut"] = score(run_model(lut_model, source), target)
        oracle = fit_lut(pixels_of(source), pixels_of(target))
        row["oracle 33³ LUT (per pair)"] = score(quantize(apply_lut(source[None], oracle)[0]), target)
        row["nafnet (tiled)"] = score(quantize(enhance_tiled(model, source[None], tile, overlap)[0]), target)
        for name, values in row.items():
            results[name].append(values)
        print(f"  {pair.stem}: " + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in row.items()), flush=True)
    means = {name: {key: float(np.mean([r[key] for r in rows])) for key in rows[0]} for name, rows in results.items()}
    print(table(f"Pairs: {len(held_out)} held-out pairs of {pairs_folder} (full size, 8-bit results)", means), flush=True)


def main() -> None:
    """Parse the options and run the sections asked for."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", **data_option("photos"))
    parser.add_argument("--pairs", **data_option("pairs"))
    parser.add_argument("--megapixels", type=float, default=4.0, help="photo size for the speed section")
    parser.add_argument("--memory-megapixels", type=float, default=24.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch", type=int, default=None, help="tiles per call (default: 1 on a CPU)")
    parser.add_argument("--context-sizes", default="1024,2048", help="comma-separated, for the agreement section")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--sections", default="speed,agreement,memory", help="any of speed,agreement,memory,quality")
    parser.add_argument("--lut", type=Path, default=None, help="quality: an adaptive lut checkpoint trained on the pairs")
    parser.add_argument("--weights", type=Path, default=None, help="a NAFNet checkpoint (default: the shipped one)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, source = (load_checkpoint(args.weights).model.eval(), str(args.weights)) if args.weights else shipped_model()
    print(f"model: {source}; config {model.config}", flush=True)
    sections = set(args.sections.split(","))
    photo = largest_photo(args.photos)
    if "speed" in sections:
        bench_speed(model, photo_of(photo, args.megapixels), args.repeats, args.tile, args.overlap, args.batch)
    if "agreement" in sections:
        bench_agreement(model, args.pairs, args.tile, args.overlap, [int(s) for s in args.context_sizes.split(",")])
    if "memory" in sections:
        bench_memory(model, photo, args.memory_megapixels, args.tile, args.overlap)
    if "quality" in sections:
        bench_quality(model, args.pairs, args.lut, args.tile, args.overlap)


if __name__ == "__main__":
    main()
