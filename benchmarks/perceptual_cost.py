"""What a perceptual loss term costs per training step: LPIPS-AlexNet (shipped) against VGG16 features.

The cost of a network's forward and backward pass does not depend on its weights, so VGG16 (the
layers up to conv5_3 that VGG perceptual losses and LPIPS-VGG read) runs here with random weights:
this measures time, not quality. One NAFNet training step (the default config) is timed beside them,
all on the same batch (``--batch`` crops of ``--crop`` px), in CPU seconds of this process::

    OMP_NUM_THREADS=1 python benchmarks/perceptual_cost.py --batch 8 --crop 256
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from autohdr_cli.lpips import AlexLPIPS
from autohdr_cli.models.nafnet import NAFNet, NAFNetConfig

#: VGG16's convolutions up to conv5_3 (channels; "M" is a 2x2 max-pool).
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16_features() -> nn.Module:
    """VGG16's feature layers up to conv5_3's ReLU, random weights, frozen."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
            channels = item
    network = nn.Sequential(*layers)
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def cpu_seconds(work, repeats: int) -> float:
    """Median CPU seconds of ``work()`` over ``repeats`` runs, after one warm-up run."""
    work()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    """Time a NAFNet step and each perceptual term's forward and backward; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    source = torch.rand(args.batch, 3, args.crop, args.crop)
    target = torch.rand_like(source)
    model = NAFNet(NAFNetConfig())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def nafnet_step() -> None:
        optimizer.zero_grad()
        loss, _ = model.training_loss(source, target)
        loss.backward()
        optimizer.step()

    alex, vgg = AlexLPIPS().eval(), vgg16_features().eval()
    for parameter in alex.parameters():
        parameter.requires_grad_(False)

    def term(network) -> None:
        prediction = source.clone().requires_grad_(True)
        with torch.no_grad():
            reference = network(target * 2 - 1) if network is vgg else None
        if network is vgg:
            loss = (network(prediction * 2 - 1) - reference).pow(2).mean()
        else:
            loss = network(prediction, target).mean()
        loss.backward()

    rows = [("NAFNet step (default config, no perceptual term)", cpu_seconds(nafnet_step, args.repeats)),
            ("+ LPIPS-AlexNet term (forward + backward)", cpu_seconds(lambda: term(alex), args.repeats)),
            ("+ VGG16 conv1-conv5 term (forward + backward)", cpu_seconds(lambda: term(vgg), args.repeats))]
    print(f"batch {args.batch} x {args.crop} px, {torch.get_num_threads()} thread(s), CPU seconds (median of {args.repeats})\n")
    print("| work | CPU s | x NAFNet step |\n|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / rows[0][1]:.2f} |")


if __name__ == "__main__":
    main()
