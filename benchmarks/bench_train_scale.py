"""Training at scale: time to the first step, peak memory and steps/s of pairs streamed from disk.

Three runs of ``autohdr train --model lut`` (its defaults otherwise), each in a fresh process:

1. ``cold``: the large pairs folder streamed (``--stream``) with an empty cache, ``--steps 1``: the
   time from starting the command to its first step done and the checkpoint written (an upper bound
   on the time to the first step), and how big the cache is after it;
2. ``stream``: the large folder streamed again for ``--stream-steps M``: peak RSS and steps/s (the
   cache fills as pairs are first drawn, so this is the first-pass rate, decoding included);
3. ``memory`` and ``stream-warm``: the small pairs folder held in memory (``--in-memory``, today's
   path) and streamed from a warm cache, ``--steps N`` each: the steps/s the streamed path must keep.

Wall and CPU seconds are both given: on a shared machine the CPU seconds are the comparable ones.
Validation is off (``--val-split 0``) so that only training is timed::

    python benchmarks/bench_train_scale.py scale-pairs "$AUTOHDR_DATA/pairs" --cache scale-cache
"""

from __future__ import annotations

import argparse
import csv
import resource
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import run_measured  # noqa: E402


def folder_mb(folder: Path) -> float:
    """Size of the files in ``folder`` in MB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def train(pairs: Path, work: Path, name: str, steps: int, extra: list[str]) -> dict:
    """One training run in its own process: wall and CPU seconds, peak RSS, steps/s from its log."""
    output = work / f"{name}.safetensors"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    measured = run_measured([sys.executable, "-m", "autohdr_cli", "train", str(pairs), "-o", str(output),
                             "--model", "lut", "--steps", str(steps), "--val-split", "0", "--quiet", *extra])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if measured.returncode != 0:
        raise SystemExit(f"{name}: exit {measured.returncode}\n{measured.stderr}")
    with open(output.with_suffix(".csv"), newline="") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
    rate = (len(seconds) - 1) / (seconds[-1] - seconds[0]) if len(seconds) > 1 and seconds[-1] > seconds[0] else None
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"run": name, "wall_s": measured.seconds, "cpu_s": cpu, "peak_mb": measured.peak_mb, "steps_per_s": rate}


def main() -> None:
    """Run the three measurements and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("large", type=Path, help="the large pairs folder (benchmarks/make_scale_pairs.py)")
    parser.add_argument("small", type=Path, help="a small pairs folder (the development pairs)")
    parser.add_argument("--cache", type=Path, required=True, help="cache folder (emptied first)")
    parser.add_argument("--steps", type=int, default=60, help="steps of the small-folder runs")
    parser.add_argument("--stream-steps", type=int, default=10, help="steps of the large folder's second run")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    shutil.rmtree(args.cache, ignore_errors=True)
    stream = ["--stream", "--cache", str(args.cache), "--workers", str(args.workers)]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        rows.append(train(args.large, work, "cold", 1, stream))
        cache_after_first = folder_mb(args.cache)
        rows.append(train(args.large, work, "stream", args.stream_steps, stream))
        cache_after = folder_mb(args.cache)
        rows.append(train(args.small, work, "memory", args.steps, ["--in-memory"]))
        train(args.small, work, "warm-up", args.steps, stream)  # fills the cache of the small folder
        rows.append(train(args.small, work, "stream-warm", args.steps, stream))
    print("| run | wall s | CPU s | peak RSS MB | steps/s |\n|---|---:|---:|---:|---:|")
    for row in rows:
        rate = f"{row['steps_per_s']:.2f}" if row["steps_per_s"] else "-"
        print(f"| {row['run']} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | {row['peak_mb']:.0f} | {rate} |")
    print(f"\ncache: {cache_after_first:.0f} MB after the first step, {cache_after:.0f} MB after "
          f"{args.stream_steps} more steps")


if __name__ == "__main__":
    main()
