"""Checkpoints: one ``.safetensors`` file holding the tensors plus metadata that rebuilds the model.

Metadata keys: ``autohdr.model`` (registry name), ``autohdr.config`` (JSON of the config dataclass),
``autohdr.version`` and ``autohdr.training`` (JSON: data, steps, metrics; may be ``{}``). This module is
the only place that knows the file format.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .imageio import atomic_write_bytes
from .models import MODELS, build, name_of
from .models.ip2p import ModelUnavailable


class CheckpointError(Exception):
    """A weights file is missing, damaged, or not an autohdr checkpoint."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode) and what its metadata says."""

    model: nn.Module
    name: str
    config: dict
    version: str
    training: dict = field(default_factory=dict)
    path: Path | None = None


def config_dict(model: nn.Module) -> dict:
    """The model's config dataclass as a JSON-ready dict."""
    return dataclasses.asdict(model.config)


def checkpoint_bytes(model: nn.Module, training: dict | None = None, extra_metadata: dict | None = None) -> bytes:
    """Serialise ``model`` and its metadata into the bytes of a ``.safetensors`` file."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {
        "autohdr.model": name_of(model),
        "autohdr.config": json.dumps(config_dict(model), sort_keys=True),
        "autohdr.version": __version__,
        "autohdr.training": json.dumps(training or {}, sort_keys=True, default=str),
    }
    metadata.update(extra_metadata or {})
    return save(tensors, metadata=metadata)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, training: dict | None = None) -> None:
    """Write ``model`` to ``path`` atomically (a crash mid-save leaves the old file intact)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, checkpoint_bytes(model, training))


def read_header(path: str | os.PathLike) -> dict[str, str]:
    """A ``.safetensors`` file's metadata alone, reading only its header (cheap for a multi-GB file);
    raises :class:`CheckpointError` for a file that is not one."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if length <= 0 or length > 100_000_000:
                raise CheckpointError(f"{path}: not a safetensors file (bad header length)")
            header = json.loads(handle.read(length))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    except ValueError:
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON)") from None
    return header.get("__metadata__") or {}


def read_metadata(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Read a ``.safetensors`` file's metadata and tensors, with clear errors for bad files."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a weights file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a safetensors file (too short)")
    header_length = int.from_bytes(data[:8], "little")
    if header_length <= 0 or header_length > len(data) - 8:
        raise CheckpointError(f"{path}: not a safetensors file, or truncated (bad header length)")
    try:
        header = json.loads(data[8 : 8 + header_length])
    except ValueError:
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON)") from None
    metadata = header.get("__metadata__") or {}
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: damaged safetensors file ({e})") from None
    return metadata, tensors


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", settings: dict | None = None
) -> Checkpoint:
    """Rebuild the model stored in ``path`` from the file alone; raises :class:`CheckpointError`.

    ``settings`` change config fields the model lists in ``runtime_settings`` (ip2p: its base model
    and sampling settings) before it is built; others are refused.
    """
    path = Path(path)
    metadata, tensors = read_metadata(path)
    name = metadata.get("autohdr.model")
    if not name:
        raise CheckpointError(f"{path}: not an autohdr checkpoint (no autohdr.model in its metadata)")
    if name not in MODELS:
        raise CheckpointError(
            f"{path}: model {name!r} is unknown to this autohdr (known: {', '.join(sorted(MODELS))})"
        )
    try:
        config = json.loads(metadata.get("autohdr.config", "{}"))
        training = json.loads(metadata.get("autohdr.training", "{}") or "{}")
    except ValueError:
        raise CheckpointError(f"{path}: damaged metadata (config is not JSON)") from None
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    allowed = getattr(MODELS[name], "runtime_settings", ())
    refused = sorted(set(settings) - set(allowed))
    if refused:
        raise CheckpointError(f"{path}: a {name!r} model takes no {', '.join(refused)}: those apply to ip2p checkpoints only")
    config.update(settings)
    try:
        model = build(name, config)
    except ModelUnavailable as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: config does not fit model {name!r}: {e}") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        reason = " ".join(line.strip() for line in first[:3])
        raise CheckpointError(f"{path}: tensors do not match model {name!r}: {reason}") from None
    model.eval().to(map_location)
    return Checkpoint(model, name, config, metadata.get("autohdr.version", "?"), training, path)


#: Where the shipped default weights live: ``weights/`` inside the package (package data, so a wheel
#: or sdist install finds them from any folder); the AUTOHDR_WEIGHTS environment variable overrides.
DEFAULT_WEIGHTS_DIR = Path(os.environ.get("AUTOHDR_WEIGHTS") or Path(__file__).resolve().parent / "weights")


def default_weights_path(model_name: str) -> Path:
    """The shipped default checkpoint for a model name (``autohdr_cli/weights/NAME-default.safetensors``)."""
    return DEFAULT_WEIGHTS_DIR / f"{model_name}-default.safetensors"


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", settings: dict | None = None
) -> nn.Module:
    """Load a model ready to enhance from a ``.safetensors`` checkpoint or a ``.cube`` LUT (by extension).

    A checkpoint that cannot enhance on its own (a stage-1 DiffIR) is refused with the reason.

    ``settings``: see :func:`load_checkpoint` (a ``.cube`` takes none). Raises :class:`CheckpointError`
    (or :class:`autohdr_cli.cube.CubeError` for a bad ``.cube``).
    """
    path = Path(path)
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    if path.suffix.lower() == ".cube" and settings:
        raise CheckpointError(f"{path}: a .cube look takes no {', '.join(sorted(settings))}: those apply to ip2p checkpoints only")
    if path.suffix.lower() == ".cube":
        from .cube import read_cube
        from .models.lut import StaticLUT

        return StaticLUT.from_cube(read_cube(path)).eval().to(map_location)
    model = load_checkpoint(path, map_location, settings).model
    reason = getattr(model, "inference_error", None)
    if reason:
        raise CheckpointError(f"{path}: cannot enhance with {reason}")
    return model
