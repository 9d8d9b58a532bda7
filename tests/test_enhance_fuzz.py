"""Fuzzing the photo readers: valid PNG, JPEG and TIFF files with mutated headers, many fixed seeds,
through one `autohdr enhance` run in a subprocess with bounded memory and time. Each file must come out
as one `path: reason` line or a written photo, never a traceback; the exit code must be the documented
one."""

from __future__ import annotations

import io
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from autohdr_cli.outputs import MANIFEST_FOLDER

from conftest import gradient

SEEDS = range(40)  # per format: 120 mutated files


def _valid_files() -> dict[str, bytes]:
    pixels = gradient(24, 32, seed=5)
    files = {}
    for fmt, extension in (("PNG", "png"), ("JPEG", "jpg")):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt)
        files[extension] = buffer.getvalue()
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, photometric="rgb", tile=(16, 16),  # 8-bit: no torch for 16-bit
                     compression="zlib", metadata=None)
    files["tif"] = buffer.getvalue()
    return files


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """Change the header: random bytes, big 16/32-bit fields, a cut; the image data mostly stays."""
    out = bytearray(data)
    head = min(len(out), 200)
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        at = rng.randrange(2, head - 4)
        if kind < 0.4:
            out[at] = rng.randrange(256)
        elif kind < 0.7:
            out[at : at + 2] = rng.choice([b"\xff\xff", b"\x00\x00", b"\x7f\xff", b"\x40\x00"])
        elif kind < 0.9:
            out[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x01\x00\x00", b"\x00\x00\x5a\x00"])
        else:
            del out[rng.randrange(head, len(out)) :]
    return bytes(out)


def test_mutated_headers_give_one_line_or_a_photo_in_bounded_memory_and_time(tmp_path, look):
    folder = tmp_path / "in"
    folder.mkdir()
    for extension, data in _valid_files().items():
        for seed in SEEDS:
            rng = random.Random(f"{extension}-{seed}")
            (folder / f"{extension}-{seed:03d}.{extension}").write_bytes(_mutate(data, rng))
    memory = 1 << 30

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "autohdr_cli", "enhance", str(folder), str(tmp_path / "out"), "--lut", str(look),
         "--workers", "2", "--max-megapixels", "50"],
        preexec_fn=limit, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1"),
    )
    seconds = time.perf_counter() - started
    assert seconds < 30, seconds
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    summary = [line for line in lines if line.startswith("done ")]
    assert len(summary) == 1, result.stderr[-2000:]
    failures = [line for line in lines if line.startswith(str(folder)) and ": warning: " not in line]
    others = [line for line in lines if not line.startswith((str(folder), "done ", "autohdr: note: "))]
    assert not others, others  # nothing else on stderr: no library's own log lines either
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and MANIFEST_FOLDER not in p.parts]
    total = len(SEEDS) * 3
    # Every file is accounted for exactly once: one line each for the failures, a photo for the rest.
    assert len(failures) + len(written) == total
    assert len({line.split(": ", 1)[0] for line in failures}) == len(failures)
    assert all(len(line.split(": ", 1)) == 2 and line.split(": ", 1)[1] for line in failures)
    assert f"done {len(written)}, skipped 0, failed {len(failures)}" in summary[0]
    assert result.returncode == (1 if failures else 0)
    assert failures and written  # the mutations really hit both ways
