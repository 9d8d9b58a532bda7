"""CPU time of one training step in three memory layouts, for the models ``autohdr train`` runs.

Usage (from the repository root; one thread, as the by-source measurements run):

    OMP_NUM_THREADS=1 python benchmarks/bench_train_step.py --model nafnet --steps 6

Each step is what the training loop does: the model's ``training_loss`` on a batch of ``--batch``
crops of ``--crop`` px (with the whole photos a model that reads them needs, and the default perceptual
term), backward, gradient clipping and an AdamW update. The two memory formats alternate step by step on
the same model and data, so a shared machine's drift hits all alike; the medians of the process CPU
time are compared and their ratios are the figures to quote. The layouts: ``nchw`` (weights and crops),
``channels_last_crops`` (NCHW weights, channels-last crops: what ``NativeCrops`` gave NAFNet before
the models trained channels-last) and ``channels_last`` (both). Content does not change the cost, so
the batch is random.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from autohdr_cli.models import build, resolve_preset
from autohdr_cli.train_options import DEFAULT_PERCEPTUAL


#: layout name -> (channels-last crops, channels-last weights)
LAYOUTS = {"nchw": (False, False), "channels_last_crops": (True, False), "channels_last": (True, True)}


def make_batch(model: torch.nn.Module, batch: int, crop: int, channels_last: bool) -> list[torch.Tensor]:
    """Source and target crops, look indices and (for a model with ``prior_size``) whole photos, as the
    training data brings them, in one memory format; a NAFNet's sources bring their neighbourhood maps."""
    generator = torch.Generator().manual_seed(0)
    maps = len(getattr(getattr(model, "config", None), "neighbourhoods", ()))
    tensors = [torch.rand(batch, channels, crop, crop, generator=generator) for channels in (3 + maps, 3)]
    whole = getattr(model, "prior_size", 0)
    if whole:
        tensors.append(torch.rand(batch, 6, whole, whole, generator=generator))
    if channels_last:
        tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    looks = torch.zeros(batch, dtype=torch.long)
    return tensors[:2] + [looks] + tensors[2:]


def timed_step(model, optimizer, batch: list[torch.Tensor], clip: float) -> float:
    """One optimisation step; returns its process CPU seconds."""
    start = time.process_time()
    optimizer.zero_grad(set_to_none=True)
    loss, _ = model.training_loss(*batch)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return time.process_time() - start


def main() -> None:
    """Alternate the layouts step by step; print the medians and the speed-ups over NCHW as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nafnet")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per format (after one warm-up each)")
    args = parser.parse_args()
    model_name, config = resolve_preset(args.model, {})
    if model_name in DEFAULT_PERCEPTUAL:
        config = {**config, "perceptual_weight": DEFAULT_PERCEPTUAL[model_name]}
    torch.manual_seed(0)
    model = build(model_name, config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clip = float(getattr(model, "clip_grad_norm", 0.0))
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    batches = {name: make_batch(model, args.batch, args.crop, crops) for name, (crops, _) in LAYOUTS.items()}
    for step in range(args.steps + 1):
        for name, (_, weights) in LAYOUTS.items():
            model.to(memory_format=torch.channels_last if weights else torch.contiguous_format)
            seconds = timed_step(model, optimizer, batches[name], clip)
            if step:  # the first step of each layout warms caches and allocators
                times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({
        "model": model_name, "batch": args.batch, "crop": args.crop, "threads": torch.get_num_threads(),
        "cpu_seconds_per_step": {name: round(value, 3) for name, value in medians.items()},
        "speedup_over_nchw": {name: round(medians["nchw"] / value, 2) for name, value in medians.items()},
    }))


if __name__ == "__main__":
    main()
