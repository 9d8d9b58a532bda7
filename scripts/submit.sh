#!/usr/bin/env bash
# Competition submission: enhance a test folder, check the results, zip them, and time the run.
#
#   scripts/submit.sh TEST_DIR OUT.zip [--weights FILE] [--model NAME] [--device DEV]
#
# Runs `autohdr enhance` (already installed: nothing is installed here) on every photo under TEST_DIR
# into a temporary folder, with the same names, sub-folders and formats as the inputs. Then checks that
# every input photo has exactly one output of the same format and size (and nothing else was made),
# zips the outputs (paths relative to TEST_DIR) into OUT.zip, and writes a timing summary beside it:
# OUT.timing.json with photos, total seconds, seconds per photo, megapixels per second and the device.
#
# Exit codes: 0 all photos done and zipped; 1 a photo failed or is missing (no zip is written, so a
# partial submission is never uploaded by mistake; the timing file says what went wrong); 2 usage error.
# AUTOHDR overrides the command that runs autohdr (default: `autohdr`, else `$PYTHON -m autohdr_cli`);
# PYTHON is the interpreter for the checks (default python3; it needs Pillow, which autohdr needs too).
set -euo pipefail

usage() {
    echo "usage: scripts/submit.sh TEST_DIR OUT.zip [--weights FILE] [--model NAME] [--device DEV]" >&2
    exit 2
}

positional=()
model_args=()
device="auto"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --weights|-w) [[ $# -ge 2 ]] || usage; model_args+=(--weights "$2"); shift 2 ;;
        --model|-m) [[ $# -ge 2 ]] || usage; model_args+=(--model "$2"); shift 2 ;;
        --device) [[ $# -ge 2 ]] || usage; device="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "submit.sh: unknown option $1" >&2; usage ;;
        *) positional+=("$1"); shift ;;
    esac
done
[[ ${#positional[@]} -eq 2 ]] || usage
test_dir="${positional[0]}"
zip_path="${positional[1]}"
[[ -d "$test_dir" ]] || { echo "submit.sh: $test_dir: not a folder" >&2; exit 2; }
[[ "$zip_path" == *.zip ]] || { echo "submit.sh: $zip_path: the output must end in .zip" >&2; exit 2; }
timing_path="${zip_path%.zip}.timing.json"

if [[ -n "${AUTOHDR:-}" ]]; then
    read -r -a autohdr <<< "$AUTOHDR"
elif command -v autohdr > /dev/null; then
    autohdr=(autohdr)
else
    autohdr=("${PYTHON:-python3}" -m autohdr_cli)
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/autohdr-submit.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "submit.sh: enhancing $test_dir with ${autohdr[*]} (device $device)" >&2
started=$(date +%s.%N)
set +e
"${autohdr[@]}" enhance "$test_dir" "$work/out" "${model_args[@]}" --device "$device" \
    --format same --overwrite --quiet --report "$work/report.jsonl"
enhance_status=$?
set -e
finished=$(date +%s.%N)
if [[ $enhance_status -eq 2 ]]; then
    echo "submit.sh: autohdr enhance refused to start (usage error above)" >&2
    exit 2
fi

"${PYTHON:-python3}" - "$test_dir" "$work/out" "$work/report.jsonl" "$zip_path" "$timing_path" \
    "$enhance_status" "$started" "$finished" "$device" <<'CHECK'
"""Check one output per input, zip them, write the timing summary; exit 1 on any problem."""
import json
import os
import platform
import sys
import zipfile
from pathlib import Path

from PIL import Image

test_dir, out_dir, report_path, zip_path, timing_path = map(Path, sys.argv[1:6])
enhance_status, started, finished, device_option = int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8]), sys.argv[9]
PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"}


def files_under(folder: Path) -> set[str]:
    """Relative paths (posix) of every file under ``folder``, hidden files and folders left out."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                found.add((Path(dirpath) / name).relative_to(folder).as_posix())
    return found


def image_format_and_size(path: Path) -> tuple[str, tuple[int, int]]:
    """The container format Pillow detects (from the bytes, not the name) and the pixel size."""
    with Image.open(path) as image:
        return image.format, image.size


def device_description(option: str) -> str:
    """The device enhance ran on, as it chose it (``auto`` is CUDA when there is a GPU)."""
    cpu = f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    if option == "cpu":
        return cpu  # no need to pay for importing torch
    import torch

    if option.startswith("cuda") or torch.cuda.is_available():
        index = torch.device(option).index if option.startswith("cuda") else None
        return f"cuda ({torch.cuda.get_device_name(index or 0)})"
    return cpu


inputs = sorted(p for p in files_under(test_dir) if Path(p).suffix.lower() in PHOTO_EXTENSIONS)
outputs = files_under(out_dir) if out_dir.is_dir() else set()
records = [json.loads(line) for line in report_path.read_text().splitlines() if line.strip()] if report_path.exists() else []
problems = [f"{r['input']}: {r['error'] or r['status']}" for r in records if r["status"] != "done"]
for relative in inputs:
    if relative not in outputs:
        problems.append(f"{relative}: no output")
        continue
    try:
        expected, got = image_format_and_size(test_dir / relative), image_format_and_size(out_dir / relative)
    except Exception as error:  # noqa: BLE001 - an unreadable input or output is a problem to report
        problems.append(f"{relative}: cannot be opened ({error})")
        continue
    if got != expected:
        problems.append(f"{relative}: output is {got[0]} {got[1][0]}x{got[1][1]}, input is {expected[0]} {expected[1][0]}x{expected[1][1]}")
problems += [f"{extra}: output with no input" for extra in sorted(outputs - set(inputs))]
if not inputs:
    problems.append(f"{test_dir}: no photos (JPEG, PNG, TIFF or WebP) found")
if enhance_status != 0 and not problems:
    problems.append(f"autohdr enhance exited with status {enhance_status}")
others = sorted(files_under(test_dir) - set(inputs))

done = [r for r in records if r["status"] == "done"]
seconds = max(finished - started, 1e-9)
megapixels = sum(float(r["megapixels"]) for r in done)
timing = {
    "photos": len(done),
    "inputs": len(inputs),
    "total_seconds": round(seconds, 3),
    "seconds_per_photo": round(seconds / len(done), 4) if done else None,
    "megapixels": round(megapixels, 6),
    "megapixels_per_second": round(megapixels / seconds, 3),
    "photo_seconds_sum": round(sum(float(r["seconds"]) for r in done), 3),
    "device": device_description(device_option),
    "note": "total_seconds is the wall time of the whole `autohdr enhance` run, start-up and model load included",
    "ok": not problems,
    "problems": problems,
    "ignored_files": others,
    "zip": str(zip_path) if not problems else None,
}
timing_path.parent.mkdir(parents=True, exist_ok=True)
timing_path.write_text(json.dumps(timing, indent=2) + "\n")

if problems:
    for line in problems:
        print(f"submit.sh: {line}", file=sys.stderr)
    print(f"submit.sh: {len(problems)} problem(s); no zip written; timing in {timing_path}", file=sys.stderr)
    sys.exit(1)

zip_path.parent.mkdir(parents=True, exist_ok=True)
partial = zip_path.with_name(zip_path.name + ".partial")
# JPEG and WebP do not compress further; storing them keeps zipping as fast as copying.
with zipfile.ZipFile(partial, "w") as archive:
    for relative in inputs:
        compressed = Path(relative).suffix.lower() in {".png", ".tif", ".tiff"}
        archive.write(out_dir / relative, relative, zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED)
os.replace(partial, zip_path)
for name in others:
    print(f"submit.sh: note: {name} is not a photo, left out", file=sys.stderr)
print(
    f"submit.sh: {len(done)} photos in {seconds:.1f} s ({seconds / max(len(done), 1):.3f} s/photo, "
    f"{megapixels / seconds:.2f} MP/s on {timing['device']}) -> {zip_path}, {timing_path}"
)
CHECK
