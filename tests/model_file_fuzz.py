"""Fuzzing driver for test_fuzz_model_files.py: ``python model_file_fuzz.py FIRST_SEED COUNT WORKDIR``.

Mutates valid ``.safetensors`` checkpoints and ``.cube`` looks (bytes anywhere, the header's JSON,
the config, the tensor table, ``.cube`` lines), one mutation per seed, and runs ``autohdr info`` and
``autohdr enhance`` (a tiny photo) on each, in this process. Prints one JSON object: the number of
cases, the slowest case's seconds, and every case that did not end in success (exit 0) or a one-line
usage error (exit 2). The test runs it in a subprocess with an address-space limit and a timeout.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from autohdr_cli.checkpoint import save_checkpoint
from autohdr_cli.cli import app
from autohdr_cli.cube import CubeLUT, identity_table, write_cube
from autohdr_cli.models import build

HOSTILE_VALUES = [
    -1, 0, 1, 2**31, 2**62, 10**30, 1e308, -1e308, 0.5, "NaN", "x", "", None, True, [], [1] * 40, {}, {"a": [[[]]]},
    [2**40, 2**40], [-5, 3], "F64", "I8", "BOOL", "U16",
]


def valid_files(folder: Path) -> dict[str, bytes]:
    """A few small, valid model files of each kind."""
    torch.manual_seed(0)
    files = {}
    for name, config in {
        "lut": {"lut_size": 5, "num_basis": 2, "thumbnail_size": 16, "widths": [4], "hidden": 8, "histogram_bins": 4},
        "nilut": {"width": 8, "depth": 2, "grid_size": 5},
        "nafnet": {"width": 4, "enc_blocks": [1], "dec_blocks": [1], "middle_blocks": 1, "whole_context": 16},
    }.items():
        path = folder / f"{name}.safetensors"
        save_checkpoint(path, build(name, config), training={"steps": 1})
        files[path.name] = path.read_bytes()
    path = folder / "look.cube"
    write_cube(path, CubeLUT(np.clip(identity_table(5) ** 0.9, 0, 1), "look"))
    files[path.name] = path.read_bytes()
    return files


def mutate_header(data: bytes, rng: random.Random) -> bytes:
    """Change one value of a safetensors header (tensor table, metadata, or the config inside it)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    value = rng.choice(HOSTILE_VALUES)
    key = rng.choice(sorted(header))
    if key == "__metadata__":
        meta = header[key]
        field = rng.choice(sorted(meta))
        if field == "autohdr.config" and rng.random() < 0.7:
            config = json.loads(meta[field])
            config[rng.choice(sorted(config))] = value
            meta[field] = json.dumps(config)
        elif field == "autohdr.model" and rng.random() < 0.5:
            meta[field] = rng.choice(["lut", "nilut", "nafnet", "diffir", "cube"])
        else:
            meta[field] = value if rng.random() < 0.3 else json.dumps(value)
    else:
        header[key][rng.choice(["dtype", "shape", "data_offsets"])] = value
    raw = json.dumps(header).encode()
    if rng.random() < 0.2:
        return rng.choice([(2**63).to_bytes(8, "little"), (len(raw) + 9).to_bytes(8, "little")]) + raw + body
    return len(raw).to_bytes(8, "little") + raw + body


def mutate_cube(data: bytes, rng: random.Random) -> bytes:
    """Replace, add or repeat a line of a ``.cube`` file."""
    lines = data.decode().splitlines()
    index = rng.randrange(len(lines))
    choice = rng.random()
    token = rng.choice(["nan", "inf", "-inf", "1e39", "2", "-0", "x", "", "0.5 0.5", "1 2 3 4"])
    if choice < 0.4:
        lines[index] = " ".join([token if rng.random() < 0.5 else "0.5" for _ in range(3)])
    elif choice < 0.6:
        lines.insert(index, rng.choice(["LUT_3D_SIZE 256", "LUT_3D_SIZE 2", "DOMAIN_MIN nan 0 0", "DOMAIN_MAX 0 0 0",
                                        "LUT_3D_INPUT_RANGE 1 0", "TITLE \"x", "LUT_1D_SIZE 4", "# " + "x" * 5000]))
    elif choice < 0.8:
        lines += ["0.5 0.5 0.5"] * rng.randrange(1, 3000)
    else:
        del lines[index : index + rng.randrange(1, 50)]
    return ("\n".join(lines) + "\n").encode()


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Flip, cut or insert bytes; half the time within the first 600 bytes (the header)."""
    data = bytearray(data)
    span = min(len(data), 600) if rng.random() < 0.5 else len(data)
    choice = rng.random()
    if choice < 0.5:
        for _ in range(rng.randrange(1, 9)):
            data[rng.randrange(span)] = rng.randrange(256)
    elif choice < 0.75:
        del data[rng.randrange(span) :]
    else:
        at = rng.randrange(span)
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    return bytes(data)


def mutated(name: str, data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.4:
        return mutate_bytes(data, rng)
    return mutate_cube(data, rng) if name.endswith(".cube") else mutate_header(data, rng)


def main(first: int, count: int, workdir: Path) -> dict:
    torch.set_num_threads(1)
    workdir.mkdir(parents=True, exist_ok=True)
    photos = workdir / "in"
    photos.mkdir(exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(photos / "p.png")
    files = valid_files(workdir)
    runner = CliRunner()
    failures, slowest, slowest_case, cases, outcomes = [], 0.0, "", 0, {0: 0, 2: 0}
    for seed in range(first, first + count):
        rng = random.Random(seed)
        name = rng.choice(sorted(files))
        path = workdir / f"seed{seed}-{name}"
        path.write_bytes(mutated(name, files[name], rng))
        flag = "--lut" if name.endswith(".cube") else "--weights"
        for args in (["info", str(path)],
                     ["enhance", str(photos), str(workdir / f"out{seed}"), flag, str(path), "--quiet"]):
            started = time.perf_counter()
            result = runner.invoke(app, args)
            seconds = time.perf_counter() - started
            if seconds > slowest:
                slowest, slowest_case = seconds, f"seed {seed} {name} {args[0]}"
            cases += 1
            lines = result.stderr.strip().splitlines()
            ok = result.exit_code == 0 or (
                result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"autohdr: error: {path}: ")
            )
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                ok = False
            outcomes[result.exit_code] = outcomes.get(result.exit_code, 0) + 1
            if not ok:
                failures.append({"seed": seed, "file": name, "command": args[0], "exit": result.exit_code,
                                 "stderr": lines[-3:], "exception": repr(result.exception)})
        path.unlink()
    return {"cases": cases, "slowest_seconds": round(slowest, 3), "slowest_case": slowest_case, "outcomes": outcomes,
            "failures": failures}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))))
