"""How far one fixed edit carries a look: fit a single set of ten edit parameters to all training pairs.

A floor for the learned models, measured by source: the same exposure, white balance, contrast,
saturation, tone curve, midtone, shadow, highlight and local-contrast edit (the random edits of
``autohdr_cli/edits.py`` and ``train_data.degrade``, here fitted instead of drawn) applied to every
photo. A model that travels no better than this has learned one average edit, not how the look
treats each photo. Usage, from the repository root::

    python benchmarks/one_edit_baseline.py $AUTOHDR_DATA/pairs --val-list held-out.txt [--size 384]

Fitted on the training pairs at ``--size`` px (Adam, 200 steps, mean squared error), scored on the
held-out pairs at ``--score-size`` px in float (no 8-bit rounding); prints the fitted parameters and
the mean PSNR of identity and of the edit, on both sides.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from autohdr_cli import metrics
from autohdr_cli.edits import local_edits
from autohdr_cli.pairs import Pair, PairsError, check_stems_found, find_pairs, read_stem_list, split_by_stems
from autohdr_cli.train_data import decode_for_training, degrade


class OneEdit(torch.nn.Module):
    """The global edit (exposure, red and blue gains, contrast, saturation) then the local one (tone
    curve, midtones, shadows, highlights, local contrast at a fixed radius), starting as the identity."""

    def __init__(self, radius: float) -> None:
        super().__init__()
        self.global_edit = torch.nn.Parameter(torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))
        self.local_edit = torch.nn.Parameter(torch.zeros(5))
        self.radius = radius

    def forward(self, photo: torch.Tensor) -> torch.Tensor:
        """Edit one ``3 x H x W`` photo in [0, 1]."""
        edited = degrade(photo[None], self.global_edit[None])
        local = torch.cat([self.local_edit, torch.tensor([self.radius])])[None]
        return local_edits(edited, local)[0]


def decode_pairs(pairs: list[Pair], size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(source, target) of each pair, decoded at ``size`` px on the long side."""
    return [(decode_for_training(p.source, size), decode_for_training(p.target, size)) for p in pairs]


def mean_psnr(edit, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean PSNR in dB of ``edit(source)``, clipped to [0, 1], against each target."""
    with torch.no_grad():
        return sum(float(metrics.psnr(edit(s).clamp(0, 1)[None], t[None])) for s, t in pairs) / len(pairs)


def main() -> None:
    """Fit the edit on the training pairs, print its parameters and both sides' PSNR."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=Path, help="pairs folder (source/ and target/)")
    parser.add_argument("--val-list", type=Path, required=True, help="held-out pairs, one stem or name a line")
    parser.add_argument("--size", type=int, default=384, help="long side the edit is fitted at")
    parser.add_argument("--score-size", type=int, default=1536, help="long side the held-out pairs are scored at")
    parser.add_argument("--radius", type=float, default=0.08, help="the local edits' radius (share of the short side)")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        found = find_pairs(args.pairs)
        held = read_stem_list(args.val_list)
        check_stems_found(held, found.pairs, args.val_list)
    except PairsError as e:
        raise SystemExit(str(e)) from None
    train_pairs, held_out = split_by_stems(found.pairs, held)
    if not train_pairs or not held_out:
        raise SystemExit(f"{args.val_list}: needs pairs on both sides ({len(train_pairs)} train, {len(held_out)} held)")
    train = decode_pairs(train_pairs, args.size)
    edit = OneEdit(args.radius)
    optimizer = torch.optim.Adam(edit.parameters(), lr=0.02)
    for _ in range(args.steps):
        optimizer.zero_grad()
        loss = sum(((edit(s) - t) ** 2).mean() for s, t in train) / len(train)
        loss.backward()
        optimizer.step()
    held_pairs = decode_pairs(held_out, args.score_size)
    print(f"{len(train)} training pairs, {len(held_pairs)} held out")
    print("global (exposure, red, blue, contrast, saturation):", [round(v, 3) for v in edit.global_edit.tolist()])
    print("local (curve, midtones, shadows, highlights, local contrast):", [round(v, 3) for v in edit.local_edit.tolist()])
    print(f"training pairs at {args.size} px: identity {mean_psnr(lambda x: x, train):.2f} dB, one edit {mean_psnr(edit, train):.2f} dB")
    print(f"held-out pairs at {args.score_size} px: identity {mean_psnr(lambda x: x, held_pairs):.2f} dB, "
          f"one edit {mean_psnr(edit, held_pairs):.2f} dB")


if __name__ == "__main__":
    main()
