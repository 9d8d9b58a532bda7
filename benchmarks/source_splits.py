"""Write hold-out lists that keep whole sources out of training, for ``--val-list`` in train and evaluate.

A random split of the development pairs puts photos of one photographer or package on both sides, and
scores what a model memorised rather than what travels. ``photos.tsv`` (beside ``make_pairs.sh``) names
each photo's source package; this writes one list per rotation:

* ``holdout-small.txt``: the sources with fewer than ``--small`` photos, held out together (the
  first split the benchmarks report);
* ``holdout-SOURCE.txt``: each larger source alone (rotations, where time allows).

Usage::

    python benchmarks/source_splits.py ../shared/data/photos.tsv splits/
    autohdr train "$AUTOHDR_DATA/pairs" --val-list splits/holdout-small.txt -o look.safetensors
    autohdr evaluate "$AUTOHDR_DATA/pairs" --val-list splits/holdout-small.txt --weights look.safetensors
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def sources_by_photo(photos_tsv: Path) -> dict[str, list[str]]:
    """Pair stems (photo file names without extension) grouped by the ``debian_package`` column."""
    groups: dict[str, list[str]] = defaultdict(list)
    with open(photos_tsv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            groups[row["debian_package"]].append(Path(row["file"]).stem)
    return {source: sorted(stems) for source, stems in sorted(groups.items())}


def hold_out_lists(groups: dict[str, list[str]], small: int) -> dict[str, list[str]]:
    """List name -> held-out stems: the small sources together, then each large source alone."""
    lists = {"holdout-small": sorted(s for stems in groups.values() if len(stems) < small for s in stems)}
    lists.update({f"holdout-{source}": stems for source, stems in groups.items() if len(stems) >= small})
    return {name: stems for name, stems in lists.items() if stems}


def main() -> None:
    """Write the lists and print what each holds out."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos_tsv", type=Path, help="photos.tsv with file and debian_package columns")
    parser.add_argument("out", type=Path, help="folder for the holdout-*.txt lists")
    parser.add_argument("--small", type=int, default=8, help="sources with fewer photos are held out together")
    args = parser.parse_args()
    groups = sources_by_photo(args.photos_tsv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, stems in hold_out_lists(groups, args.small).items():
        (args.out / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems), encoding="utf-8")
        print(f"{args.out / name}.txt: {len(stems)} pairs held out")


if __name__ == "__main__":
    main()
