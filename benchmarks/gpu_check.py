"""One command that proves and times every CUDA path of autohdr in a few minutes (correctness first).

    python benchmarks/gpu_check.py --out gpu_check.json            # on a GPU machine, about 5 minutes
    python benchmarks/gpu_check.py --device cpu --quick --out x.json  # the same code paths on a CPU, < 1 min

Runs from the source tree with whatever torch the machine has. Sections, in order:

1. ``agreement``: ``autohdr enhance --device cuda`` against ``--device cpu`` on the same photos (8-bit PNG,
   16-bit TIFF, RGBA PNG, larger than one tile so seams are in) for ``.cube``, lut, nilut, nafnet and
   diffir, in each ``--precision``. Differences in 8-bit levels; fp32 passes at <= 1, the others aim at <= 4.
2. ``speed``: ms per photo of each model at 1024 x 1024 and 12 MP in fp32, tf32 and bf16; batches,
   tile sizes, channels-last and ``torch.compile`` where they matter; peak GPU memory.
3. ``folder``: ``autohdr enhance`` on 12 MP JPEGs (200; fewer for nafnet) against the decode + encode
   floor on this machine's CPU cores, in MP/s.
4. ``training``: steps/s of each backend with and without bf16 autocast; a 2-rank ``torchrun`` smoke run.

Each section's rows go into the ``--out`` JSON file as soon as it ends (a cut-short run still reports);
``--deadline`` stops cleanly (what cannot finish is a row marked skipped); ``--sections`` reruns some
sections and keeps the others' rows. A markdown table of every row ends the run. Exit code 1 when a row
failed or errored. See ``benchmarks/README.md`` for running it on a machine without internet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from the source tree
from gpu_check_lib import (  # noqa: E402
    LOOK, ROOT, Budget, DeadlineReached, Results, attempt, markdown_tables, median_seconds, missing_dependencies,
    run_in_threads, sample_crops, write_jpegs, write_photo_kinds,
)

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
MODELS = ("lut", "nilut", "nafnet", "diffir")
IO = ["numpy", "pillow", "tifffile", "imagecodecs", "typer", "rich"]
TORCH = ["torch", "safetensors"]


@dataclass
class Check:
    """What every section needs: the options, the clock, a work folder and what is missing."""

    device: str
    quick: bool
    budget: Budget
    work: Path
    missing: dict[str, str]

    def lacks(self, names: list[str]) -> str:
        """A note naming the dependencies among ``names`` that are missing here ("" if none)."""
        absent = [name for name in names if name in self.missing]
        return f"needs {', '.join(absent)} (missing)" if absent else ""

    @property
    def cuda(self) -> bool:
        """Whether the candidate device is a GPU."""
        return self.device.startswith("cuda")

    def sync(self) -> None:
        """Wait for the GPU (timings end when the work has)."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def precisions(self) -> tuple[str, ...]:
        """The precisions worth running here: all on CUDA, fp32 alone on the CPU (the others are refused)."""
        return PRECISIONS if self.cuda else ("fp32",)


def enhance(args: list[str]) -> float:
    """Run ``autohdr enhance ARGS --quiet`` in this process (the CLI itself); returns its seconds."""
    from typer.testing import CliRunner

    from autohdr_cli.cli import app

    started = time.perf_counter()
    result = CliRunner().invoke(app, ["enhance", *map(str, args), "--quiet"])
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        error = result.exception
        if error is not None and not isinstance(error, SystemExit):  # raised, not reported: name it
            raise RuntimeError(f"enhance raised {type(error).__name__}: {str(error).strip()[:200]}")
        lines = (result.output or "").strip().splitlines() or ["no message"]
        raise RuntimeError(f"enhance exited {result.exit_code}: {lines[-1]}")
    return seconds


def random_nilut(path: Path) -> Path:
    """A small NILUT with random weights (a non-trivial look), saved as a checkpoint."""
    import torch

    from autohdr_cli.checkpoint import save_checkpoint
    from autohdr_cli.models.nilut import NILUT, NILUTConfig

    torch.manual_seed(0)
    model = NILUT(NILUTConfig(width=32, depth=2))
    torch.nn.init.normal_(model.mlp[-1].weight, std=0.3)
    save_checkpoint(path, model)
    return path


def load_backend(name: str, check: Check):
    """A backend's model, in eval mode on the check's device: the shipped weights, or a random NILUT."""
    from autohdr_cli.checkpoint import default_weights_path, load_model

    path = random_nilut(check.work / "nilut.safetensors") if name == "nilut" else default_weights_path(name)
    return load_model(path).to(check.device).eval()


# ------------------------------------------------------------------------------------------ agreement


def agreement(check: Check, rows: list[dict]) -> None:
    """CPU fp32 against the device in each precision, on PNG/TIFF outputs of three kinds of photo."""
    width, height, tile = (112, 72, 64) if check.quick else (900, 600, 512)
    photos = write_photo_kinds(check.work / "agree-in", width, height)
    tiles = ["--tile", tile, "--tile-overlap", 16 if check.quick else 32]
    backends = {".cube": ["--lut", LOOK], "lut": ["--model", "lut"], "nilut": ["--weights", check.work / "nilut.safetensors"],
                "localtone": ["--model", "localtone"], "localtone-lut": ["--model", "localtone", "--lut-size", "33"],
                "nafnet": ["--model", "nafnet"], "diffir": ["--model", "diffir"]}
    references: dict[str, Path] = {}
    for backend, model_args in backends.items():
        lacking = "" if backend == ".cube" else check.lacks(TORCH)
        if lacking:
            rows.append({"backend": backend, "status": "skipped", "note": lacking})
            continue
        if backend == "nilut" and not (check.work / "nilut.safetensors").exists():
            random_nilut(check.work / "nilut.safetensors")
        for precision in check.precisions() if backend != ".cube" else ("fp32",):
            fields = {"backend": backend, "precision": precision, "size": f"{width}x{height}", "tile": tile}

            def compare(backend=backend, model_args=model_args, precision=precision) -> list[dict]:
                if backend not in references:  # the CPU's result, once per backend
                    reference = check.work / f"agree-cpu-{backend}"
                    enhance([photos["8-bit"].parent, reference, *model_args, *tiles, "--device", "cpu", "--overwrite"])
                    references[backend] = reference
                out = check.work / f"agree-{check.device}-{backend}-{precision}"
                enhance([photos["8-bit"].parent, out, *model_args, *tiles, "--device", check.device,
                         "--precision", precision, "--overwrite"])
                limit = 1.0 if precision == "fp32" else 4.0
                return [{"photo": kind, **compare_outputs(references[backend] / path.name, out / path.name, limit)}
                        for kind, path in photos.items()]

            attempt(rows, check.budget, fields, compare, needs=2 if check.quick else 10)


def compare_outputs(reference: Path, candidate: Path, limit: float) -> dict:
    """Largest and mean difference of two results in 8-bit levels (16-bit ones divided by 257); the
    alpha channel must be identical."""
    import numpy as np

    from autohdr_cli.imageio import read_photo

    first, second = read_photo(reference), read_photo(candidate)
    scale = 257.0 if first.pixels.dtype == np.uint16 else 1.0
    difference = np.abs(first.pixels.astype(np.int64) - second.pixels.astype(np.int64)) / scale
    alpha_same = (first.alpha is None and second.alpha is None) or (
        first.alpha is not None and second.alpha is not None and np.array_equal(first.alpha, second.alpha))
    worst = float(difference.max())
    return {"max_levels": worst, "mean_levels": float(difference.mean()), "limit": limit,
            "alpha": "-" if first.alpha is None else ("same" if alpha_same else "DIFFERS"),
            "status": "pass" if worst <= limit and alpha_same else "fail"}


# -------------------------------------------------------------------------------------------- speed


def speed_matrix(tileable: bool, quick: bool) -> list[dict]:
    """The configurations timed per model: a small matrix, each row asking one question.

    ``batch`` is photos per call; tiled models also have a tile size, tiles per call (``tile_batch``,
    enhance's default is 8), the memory layout and the compiler. Global (LUT) models have none of these.
    """
    big, tile = (128, 64) if quick else (1024, 512)
    rows = [dict(size="1024", precision=precision, batch=1) for precision in ("fp32", "tf32", "bf16")]
    rows += [dict(size="1024", precision="bf16", batch=8), dict(size="12MP", precision="fp32", batch=1),
             dict(size="12MP", precision="bf16", batch=1)]
    if not tileable:
        return [{**row, "compile": False} for row in rows]
    rows += [dict(size="1024", precision="bf16", batch=1, tile=big), dict(size="12MP", precision="bf16", batch=1, tile=big),
             dict(size="12MP", precision="bf16", batch=1, tile_batch=32),
             dict(size="1024", precision="bf16", batch=1, channels_last=False),
             dict(size="1024", precision="bf16", batch=1, tile=big, compile=True)]
    return [{**row, "tile": row.get("tile", tile), "tile_batch": row.get("tile_batch", 8),
             "channels_last": row.get("channels_last", True), "compile": row.get("compile", False)} for row in rows]


def model_speed(check: Check, rows: list[dict]) -> None:
    """Milliseconds per photo and peak GPU memory of each model on the device, through the code enhance runs."""
    import torch

    from autohdr_cli.inference import is_global, predict_luts
    from autohdr_cli.models.lut import apply_lut
    from autohdr_cli.tiling import enhance_tiled, precision_context, set_tf32

    sizes = {"1024": (64, 64), "12MP": (72, 96)} if check.quick else {"1024": (1024, 1024), "12MP": (3000, 4000)}
    repeats = 1 if check.quick else 3
    # Compiled runs last: they are the slowest to set up, and the deadline may leave them out.
    for name, compiled in [(name, False) for name in MODELS] + [("nafnet", True), ("diffir", True)]:
        model = load_backend(name, check)
        for config in speed_matrix(not is_global(model), check.quick):
            if config["compile"] != compiled:
                continue
            fields = {"model": name, **config}
            if (config["precision"] != "fp32" or compiled) and not check.cuda:
                note = "CUDA only" + (" (on this CPU torch.compile takes 20-40 s even without code generation)" if compiled else "")
                rows.append({**fields, "status": "skipped", "note": note})
                continue

            def measure(config=config, model=model) -> dict:
                height, width = sizes[config["size"]]
                images = torch.rand(config["batch"], 3, height, width, device=check.device)
                if check.cuda:
                    set_tf32(config["precision"])
                net = model
                if config["compile"]:
                    net = torch.compile(model)
                if is_global(model):
                    def run():
                        with torch.inference_mode():
                            with precision_context(images.device, config["precision"]):
                                luts = predict_luts(net, images).float()
                            return apply_lut(images, luts)
                else:
                    overlap = 16 if check.quick else 32
                    def run():
                        return enhance_tiled(net, images, config["tile"], overlap, config["tile_batch"],
                                             channels_last=config["channels_last"], precision=config["precision"])
                if check.cuda:
                    torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
                run()  # first call: cuDNN's choices, the compiler
                check.sync()
                first = time.perf_counter() - started
                seconds = median_seconds(run, repeats, warmup=0, sync=check.sync)
                return {"ms_per_photo": 1000 * seconds / config["batch"], "first_call_s": first, "status": "ok",
                        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if check.cuda else None}

            attempt(rows, check.budget, fields, measure, needs=(30 if compiled else 5) if not check.quick else 1,
                    limit=90 if compiled else None)
        del model
        if check.cuda:
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- folder


def decode_encode_floor(photos: list[Path], out: Path, threads: int) -> float:
    """Seconds to decode and re-encode the photos (JPEG q95 4:4:4, as enhance writes) in a thread pool."""
    from autohdr_cli.imageio import read_photo, write_photo

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run_in_threads(lambda path: write_photo(out / path.name, read_photo(path), fmt="jpeg", quality=95), photos, threads)
    return time.perf_counter() - started


def folder_throughput(check: Check, rows: list[dict]) -> None:
    """MP/s of ``autohdr enhance`` on a folder of 12 MP JPEGs, against the decode + encode floor."""
    count, width, height, few = (4, 256, 192, 2) if check.quick else (200, 4000, 3000, 16)
    threads = os.cpu_count() or 1
    folder = check.work / "jpegs"
    made: dict[str, float] = {}

    def make() -> dict:
        started = time.perf_counter()
        made["megapixels"] = write_jpegs(folder, count, width, height, threads)
        return {"photos": count, "seconds": time.perf_counter() - started, "status": "ok"}

    attempt(rows, check.budget, {"run": f"make {count} JPEGs of {width}x{height}", "device": "cpu"}, make,
            needs=2 if check.quick else 20)
    if not made:
        return
    megapixels = made["megapixels"]
    photos = sorted(folder.glob("*.jpg"))
    floor: dict[str, float] = {}

    def measure_floor() -> dict:
        seconds = decode_encode_floor(photos, check.work / "floor-out", threads)
        shutil.rmtree(check.work / "floor-out")
        floor["mp_s"] = megapixels / seconds
        return {"photos": count, "seconds": seconds, "mp_s": floor["mp_s"], "ratio": 1.0, "status": "ok"}

    attempt(rows, check.budget, {"run": f"decode + encode floor, {threads} threads", "device": "cpu"}, measure_floor,
            needs=2 if check.quick else 15)
    runs = [(".cube", ["--lut", LOOK], "cpu", "fp32", count), (".cube", ["--lut", LOOK], check.device, "fp32", count),
            ("lut", ["--model", "lut"], check.device, "fp32", count), ("localtone", ["--model", "localtone"], check.device, "fp32", count),
            ("localtone-lut", ["--model", "localtone", "--lut-size", "33"], check.device, "fp32", count),
            ("nafnet", ["--model", "nafnet"], check.device, "fp32", few), ("nafnet", ["--model", "nafnet"], check.device, "bf16", few)]
    if not check.cuda:  # the CPU runs fp32 only, and the .cube row once
        runs = runs[:1] + runs[2:6]
    for backend, model_args, device, precision, photos_used in runs:
        fields = {"run": f"enhance {backend}", "device": device, "precision": precision}
        lacking = "" if backend == ".cube" else check.lacks(TORCH)
        if lacking:
            rows.append({**fields, "status": "skipped", "note": lacking})
            continue

        def measure(model_args=model_args, device=device, precision=precision, photos_used=photos_used) -> dict:
            source = folder if photos_used == count else check.work / f"jpegs-{photos_used}"
            if not source.exists():
                source.mkdir()
                for path in photos[:photos_used]:
                    try:
                        os.link(path, source / path.name)
                    except OSError:  # a file system without hard links
                        shutil.copyfile(path, source / path.name)
            out = check.work / "folder-out"
            shutil.rmtree(out, ignore_errors=True)
            extra = [] if device == "cpu" else ["--precision", precision]
            seconds = enhance([source, out, *model_args, "--device", device, *extra])
            shutil.rmtree(out, ignore_errors=True)
            rate = megapixels * photos_used / count / seconds
            return {"photos": photos_used, "seconds": seconds, "mp_s": rate,
                    "ratio": rate / floor["mp_s"] if floor else None, "status": "ok"}

        attempt(rows, check.budget, fields, measure, needs=2 if check.quick else 20)


# ----------------------------------------------------------------------------------------- training


def synthetic_pairs(count: int, width: int, height: int):
    """Before/after pairs in memory: sample crops and a fixed look (a tone curve and a warm shift)."""
    import torch

    from autohdr_cli.train_data import PairData

    sources = [torch.from_numpy(crop.copy()).permute(2, 0, 1).float() / 255 for crop in sample_crops(count, width, height, seed=4)]
    warm = torch.tensor([1.06, 1.0, 0.92])[:, None, None]
    targets = [(source.clamp(0, 1) ** 0.8 * warm).clamp(0, 1) for source in sources]
    return PairData(sources, targets, [0] * count, [f"pair{i}" for i in range(count)])


def training(check: Check, rows: list[dict]) -> None:
    """Steps per second of each backend, fp32 and bf16 autocast; then a 2-rank torchrun run."""
    import torch

    from autohdr_cli.models.nilut import NILUT
    from autohdr_cli.train import seconds_per_step
    from autohdr_cli.train_data import NativeCrops
    from autohdr_cli.train_options import DEFAULT_CROPS

    batch, crop, trials = (2, 32, 1) if check.quick else (8, 256, 5)
    data = synthetic_pairs(4 if check.quick else 8, 96 if check.quick else 512, 64 if check.quick else 384)
    for name in MODELS:
        for autocast in (None, torch.bfloat16):
            fields = {"run": f"{name} steps", "autocast": "bf16" if autocast else "fp32", "batch": batch, "crop": crop}

            if autocast is not None and not check.cuda and name in ("nafnet", "diffir"):
                rows.append({**fields, "status": "skipped", "note": "CUDA only (bf16 on this CPU: ~4x slower, minutes)"})
                continue

            def measure(name=name, autocast=autocast) -> dict:
                model = NILUT().to(check.device) if name == "nilut" else load_backend(name, check)
                if check.cuda:
                    torch.cuda.reset_peak_memory_stats()
                # As `train` draws them: native windows for the models that train on them (a NAFNet's
                # neighbourhood maps come only with those).
                crops = NativeCrops(data) if DEFAULT_CROPS.get(name) == "native" else data
                seconds = seconds_per_step(model, crops, batch, crop, lr=1e-4, trials=trials, autocast=autocast)
                return {"steps_s": 1 / seconds, "status": "ok",
                        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if check.cuda else None}

            attempt(rows, check.budget, fields, measure, needs=2 if check.quick else 8)
    devices = ([check.device] if check.cuda else []) + ["cpu"]  # the GPU's run first: it matters more
    for device in devices:
        fields = {"run": "torchrun 2 ranks, lut", "autocast": "fp32", "device": device}
        lacking = check.lacks(IO)
        if lacking:
            rows.append({**fields, "status": "skipped", "note": lacking})
            continue
        attempt(rows, check.budget, fields, lambda device=device: torchrun_smoke(check, device), needs=15)


def torchrun_smoke(check: Check, device: str) -> dict:
    """``torchrun --nproc_per_node 2 -m autohdr_cli train`` on tiny pairs: on the CPU through gloo; on
    CUDA through nccl with a GPU per rank, or, with one GPU, both ranks on it through gloo."""
    import torch
    from PIL import Image

    pairs = check.work / "torchrun-pairs"
    for index, crop in enumerate(sample_crops(4, 64, 48, seed=5)):
        for side, pixels in (("source", crop), ("target", (crop * 0.8 + 40).astype("uint8"))):
            (pairs / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(pairs / side / f"p{index}.png")
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    shared_gpu = gpus == 1
    out = check.work / f"torchrun-{device.replace(':', '')}.safetensors"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "autohdr_cli",
               "train", str(pairs), "-o", str(out), "--model", "lut", "--steps", "2" if check.quick else "20",
               "--batch", "2", "--crop", "32", "--train-size", "64", "--val-split", "0.25", "--quiet", "--teacher", "none",
               "--device", "cuda:0" if shared_gpu else ("cuda" if gpus else "cpu")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", **({"AUTOHDR_DIST_BACKEND": "gloo"} if shared_gpu else {})}
    started = time.perf_counter()
    # A session of its own, so that a deadline stops the ranks too, not only the launcher.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _stdout, stderr = process.communicate(timeout=max(5.0, check.budget.left() - 1))
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    seconds = time.perf_counter() - started
    if process.returncode != 0 or not out.exists():
        lines = stderr.strip().splitlines()
        telling = [line for line in lines if "autohdr:" in line or "Error" in line] or lines or [""]
        raise RuntimeError(f"torchrun exited {process.returncode}: {telling[-1].strip()[:200]}")
    backend = "nccl, a GPU per rank" if gpus > 1 else "gloo" + (", both ranks on cuda:0" if shared_gpu else "")
    return {"seconds": seconds, "status": "ok", "note": backend}


# ------------------------------------------------------------------------------------------- driver

SECTIONS = {"agreement": agreement, "speed": model_speed, "folder": folder_throughput, "training": training}
#: Each section's share of the time left when it starts (time a section leaves unused goes to the next).
SHARES = {"agreement": 3, "speed": 3, "folder": 2, "training": 2}
#: What a whole section cannot do without; single rows name what else they need.
NEEDS = {"agreement": IO, "speed": TORCH + ["numpy"], "folder": IO, "training": TORCH + ["numpy", "pillow", "kornia"]}


def machine(device: str, missing: dict[str, str], argv: list[str]) -> dict:
    """What ran where: versions, the GPU, the missing dependencies, the command."""
    meta = {"command": "python benchmarks/gpu_check.py " + " ".join(argv), "python": sys.version.split()[0],
            "cpu_cores": os.cpu_count(), "missing": missing, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if "torch" not in missing:
        import torch

        meta.update(torch=torch.__version__, cuda=torch.version.cuda, device=device)
        if device.startswith("cuda") and torch.cuda.is_available():
            meta.update(gpu=torch.cuda.get_device_name(device), gpus=torch.cuda.device_count())
    return meta


def run_section(name: str, check: Check, results: Results) -> None:
    """Run one section under the deadline and write its rows, whatever happens inside it."""
    rows: list[dict] = []
    started = time.monotonic()
    print(f"[gpu_check] {name} ({check.budget.left():.0f} s left)", file=sys.stderr, flush=True)
    lacking = check.lacks(NEEDS[name])
    if lacking or check.budget.left() < 1:
        rows.append({"status": "skipped", "note": lacking or "deadline reached before the section started"})
    else:
        try:
            SECTIONS[name](check, rows)
        except DeadlineReached:
            rows.append({"status": "skipped", "note": "cut at the deadline"})
        except Exception as error:  # noqa: BLE001 - the other sections still run
            rows.append({"status": "error", "note": f"{type(error).__name__}: {str(error)[:200]}"})
    results.replace_section(name, rows)
    print(f"[gpu_check] {name}: {len(rows)} rows in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (1 if a row failed or errored)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON results file (rows are merged)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: every code path, CPU against CPU)")
    parser.add_argument("--quick", action="store_true", help="tiny photos, one repeat, few steps (CPU test: < 1 min)")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole run (default 300)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {','.join(SECTIONS)}")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--deps", action="store_true", help="only list the missing dependencies (exit 1 if any)")
    args = parser.parse_args(argv)
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    budget = Budget(args.deadline)
    work = Path(tempfile.mkdtemp(prefix="autohdr-gpucheck-", dir=args.work))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(work / "inductor"))  # a cut compile leaves no stale cache
    missing = missing_dependencies()
    for name, reason in missing.items():
        print(f"[gpu_check] missing dependency {name}: {reason}", file=sys.stderr)
    if args.deps:
        shutil.rmtree(work, ignore_errors=True)
        print(" ".join(missing) or "nothing missing")
        return 1 if missing else 0
    device = args.device
    if device.startswith("cuda") and "torch" not in missing:
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu")
    check = Check(device, args.quick, budget, work, missing)
    results = Results(args.out, machine(device, missing, sys.argv[1:] if argv is None else argv))
    try:
        for index, name in enumerate(sections):
            share = SHARES[name] / sum(SHARES[later] for later in sections[index:])
            check.budget = Budget(max(0.0, budget.left()) * share)
            run_section(name, check, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results.meta["seconds"] = round(budget.seconds - budget.left(), 1)
    results.write()
    print(markdown_tables(results.rows))
    bad = [row for row in results.rows if row.get("status") in ("fail", "error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
