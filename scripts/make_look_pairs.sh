#!/usr/bin/env bash
# Builds before/after pairs for another look: the same "before" photos, edited by RawTherapee with a
# processing profile (.pp3), so a lever can be measured on more than one look.
#   usage: scripts/make_look_pairs.sh LOOK.pp3 SOURCE_DIR DEST
#   e.g.   scripts/make_look_pairs.sh benchmarks/looks/airy-matte.pp3 "$AUTOHDR_DATA/pairs/source" "$AUTOHDR_DATA/pairs-airy"
# DEST/source holds copies of SOURCE_DIR's JPEGs, DEST/target their edits (JPEG quality 95, 4:4:4), as
# ../shared/data/make_pairs.sh builds the first look's pairs. Needs rawtherapee-cli (Debian: rawtherapee).
set -euo pipefail
look=${1:?usage: make_look_pairs.sh LOOK.pp3 SOURCE_DIR DEST}
source_dir=${2:?usage: make_look_pairs.sh LOOK.pp3 SOURCE_DIR DEST}
dest=${3:?usage: make_look_pairs.sh LOOK.pp3 SOURCE_DIR DEST}
command -v rawtherapee-cli >/dev/null || { echo "make_look_pairs.sh: rawtherapee-cli not found (apt-get install rawtherapee)" >&2; exit 2; }
[ -f "$look" ] || { echo "make_look_pairs.sh: $look: no such profile" >&2; exit 2; }
mkdir -p "$dest/source" "$dest/target"
count=0
for f in "$source_dir"/*.jpg; do
  [ -e "$f" ] || continue
  name=$(basename "$f")
  cp "$f" "$dest/source/$name"
  rawtherapee-cli -q -o "$dest/target/$name" -j95 -js3 -p "$look" -Y -c "$f" >/dev/null 2>&1
  count=$((count + 1))
done
echo "$count pairs in $dest (look: $(basename "$look"))"
