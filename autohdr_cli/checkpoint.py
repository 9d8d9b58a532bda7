"""Checkpoints: one ``.safetensors`` file holding the tensors plus metadata that rebuilds the model.

Metadata keys: ``autohdr.model`` (registry name), ``autohdr.config`` (JSON of the config dataclass),
``autohdr.version`` and ``autohdr.training`` (JSON: data, steps, metrics; may be ``{}``). This module is
the only place that knows the file format.

A file is checked before anything is built from it, cheapest first, so that a hostile or damaged file
costs milliseconds and no memory (each failure is one :class:`CheckpointError` line ``FILE: reason``):

1. it is a regular file (a FIFO would block), no larger than :data:`MAX_PARAMETERS` doubles;
2. the header: its length at most :data:`MAX_HEADER_BYTES`, a JSON object, metadata strings only,
   every tensor a known dtype and shape whose bytes tile the rest of the file exactly;
3. the config: a JSON object whose values have their fields' types and bounds
   (:func:`autohdr_cli.models.make_config`);
4. the model is built on PyTorch's ``meta`` device (no memory) and its tensors' names, shapes and dtypes
   must be the file's; the build is stopped as soon as it has registered more tensors than the file
   holds or more than :data:`MAX_PARAMETERS` values, so a config that says "width 100000" never
   allocates or even finishes building;
5. only then are the tensors read, and every value must be finite (no NaN or infinity).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .imageio import atomic_write_bytes
from .inputfile import InputFileError, open_regular_file
from .models import MODELS, build, can_be_base, make_config, name_of
from .models.ip2p import ModelUnavailable


class CheckpointError(Exception):
    """A weights file is missing, damaged, or not an autohdr checkpoint."""


#: Our headers hold a few kB (tensor table, config, training summary); safetensors itself allows 100 MB.
MAX_HEADER_BYTES = 16 * 2**20
#: The most values (parameters and buffers) a checkpoint's model may have: 500 M, over four times the
#: largest preset (nafnet-large, 116 M) and 2 GB of float32. Larger files are refused before reading.
MAX_PARAMETERS = 500_000_000
#: Tensors a model may register beyond the file's own: its non-persistent buffers (schedules, style).
SPARE_TENSORS = 64

#: safetensors dtype -> (torch dtype, bytes per value). Others (unsigned 16-64 bit, 8-bit floats) are refused.
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8), "I32": (torch.int32, 4), "I16": (torch.int16, 2), "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode) and what its metadata says."""

    model: nn.Module
    name: str
    config: dict
    version: str
    training: dict = field(default_factory=dict)
    path: Path | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class TensorEntry:
    """One tensor of a safetensors header: dtype name, shape and byte range within the data section."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass
class Header:
    """A checked safetensors header: metadata, tensor table, and where the data section starts."""

    metadata: dict[str, str]
    tensors: dict[str, TensorEntry]
    data_start: int
    file_size: int


def config_dict(model: nn.Module) -> dict:
    """The model's config dataclass as a JSON-ready dict."""
    return dataclasses.asdict(model.config)


#: A local model trained on top of a global one (``train --base``) holds that model's tensors under this
#: prefix, and its name and config in the ``autohdr.base`` metadata: inference applies it to the whole
#: photo first (``model.base``).
BASE_PREFIX = "base."


def checkpoint_bytes(
    model: nn.Module, training: dict | None = None, extra_metadata: dict | None = None, base: nn.Module | None = None
) -> bytes:
    """Serialise ``model`` and its metadata into the bytes of a ``.safetensors`` file.

    ``base`` (or the model's own ``base``) is the global model stored with it, to apply before it.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {
        "autohdr.model": name_of(model),
        "autohdr.config": json.dumps(config_dict(model), sort_keys=True),
        "autohdr.version": __version__,
        "autohdr.training": json.dumps(training or {}, sort_keys=True, default=str),
    }
    base = base if base is not None else getattr(model, "base", None)
    if base is not None:
        tensors.update({BASE_PREFIX + k: v.detach().to("cpu").contiguous().clone() for k, v in base.state_dict().items()})
        metadata["autohdr.base"] = json.dumps({"model": name_of(base), "config": config_dict(base)}, sort_keys=True)
    metadata.update(extra_metadata or {})
    return save(tensors, metadata=metadata)


def model_digest(model: nn.Module) -> str:
    """A short fingerprint of a model's name, config and weights (what a resumed run checks its base by)."""
    digest = hashlib.sha256(name_of(model).encode())
    digest.update(json.dumps(config_dict(model), sort_keys=True, default=str).encode())
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, training: dict | None = None, base: nn.Module | None = None
) -> str:
    """Write ``model`` (and the global ``base`` it is applied after) to ``path`` atomically (a crash
    mid-save leaves the old file intact).

    Returns the SHA-256 of the bytes written (the training state records it, see ``train.py``).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    data = checkpoint_bytes(model, training, base=base)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in blocks; raises :class:`CheckpointError` if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open_regular_file(path) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except InputFileError as e:
        raise CheckpointError(str(e)) from None
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ reading the file


def _json(text: str | bytes):
    """``json.loads`` that fails with ValueError only (a deeply nested file raises RecursionError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _check_entry(key: str, entry) -> TensorEntry:
    """One tensor's header entry, or ValueError saying what is wrong with it."""
    if not isinstance(entry, dict):
        raise ValueError(f"tensor {key!r}: its entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"tensor {key!r}: dtype {dtype!r} is not one autohdr reads ({', '.join(DTYPES)})")
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
    if not isinstance(shape, list) or len(shape) > 8 or not all(whole(n) for n in shape):
        raise ValueError(f"tensor {key!r}: bad shape {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(whole(n) for n in offsets):
        raise ValueError(f"tensor {key!r}: bad data_offsets {offsets!r}")
    begin, end = offsets
    if end - begin != math.prod(shape) * DTYPES[dtype][1]:
        raise ValueError(f"tensor {key!r}: {end - begin} bytes for shape {shape} of {dtype}")
    return TensorEntry(dtype, tuple(shape), begin, end)


def _parse_header(raw: bytes, data_size: int) -> tuple[dict[str, str], dict[str, TensorEntry]]:
    """Metadata and tensor table of a header; ValueError with the reason if it is not a sound one."""
    try:
        header = _json(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("__metadata__ must be an object of strings")
    tensors = {key: _check_entry(key, entry) for key, entry in header.items()}
    # The data section is the tensors' bytes back to back, nothing missing, overlapping or left over.
    position = 0
    for key, entry in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != position:
            raise ValueError(f"tensor {key!r}: data starts at byte {entry.begin}, expected {position}")
        position = entry.end
    if position != data_size:
        what = "truncated" if position > data_size else "has bytes no tensor owns"
        raise ValueError(f"{what}: the tensors need {position} bytes of data, the file has {data_size}")
    return metadata, tensors


def read_header(path: str | os.PathLike) -> Header:
    """Read and check a ``.safetensors`` file's header without reading its tensors.

    Raises :class:`CheckpointError` (``FILE: reason``) for anything but a sound safetensors file of at
    most :data:`MAX_PARAMETERS` values.
    """
    path = Path(path)
    try:
        with open_regular_file(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > 8 + MAX_HEADER_BYTES + MAX_PARAMETERS * 8:
                raise CheckpointError(f"{path}: {size:,} bytes is larger than any checkpoint autohdr loads")
            start = handle.read(8)
            if len(start) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (too short)")
            length = int.from_bytes(start, "little")
            if length <= 0 or length > size - 8:
                raise CheckpointError(f"{path}: not a safetensors file, or truncated (bad header length)")
            if length > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: header of {length:,} bytes is larger than any checkpoint's")
            raw = handle.read(length)
    except InputFileError as e:
        raise CheckpointError(str(e)) from None
    try:
        metadata, tensors = _parse_header(raw, size - 8 - length)
    except ValueError as e:
        raise CheckpointError(f"{path}: not a sound safetensors file: {e}") from None
    return Header(metadata, tensors, 8 + length, size)


def _read_tensors(path: Path, header: Header) -> dict[str, torch.Tensor]:
    """The tensors a checked header describes; every floating value must be finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) != header.file_size:
        raise CheckpointError(f"{path}: changed while it was read")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: damaged safetensors file ({e})") from None
    del data
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {key!r} holds values that are not finite (NaN or infinity)")
    return tensors


def read_metadata(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Read a ``.safetensors`` file's metadata and tensors, with clear errors for bad files."""
    header = read_header(path)
    return header.metadata, _read_tensors(Path(path), header)


# ----------------------------------------------------------------------------- checking the config


@contextmanager
def _bounded_construction(max_tensors: int, max_values: int):
    """While active, modules that register more than ``max_tensors`` tensors or ``max_values`` values
    in total stop the construction with ValueError."""
    from torch.nn.modules import module

    seen = {"tensors": 0, "values": 0}

    def count(_module, _name, tensor):
        if tensor is None:
            return None
        seen["tensors"] += 1
        seen["values"] += tensor.numel()
        if seen["tensors"] > max_tensors:
            raise ValueError(f"the config builds more tensors than the file holds ({max_tensors - SPARE_TENSORS})")
        if seen["values"] > max_values:
            raise ValueError(f"the config builds over {max_values:,} values, more than autohdr loads")
        return None

    handles = [module.register_module_parameter_registration_hook(count),
               module.register_module_buffer_registration_hook(count)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def expected_tensors(
    name: str, config: dict, file_tensors: int | None = None
) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """The state dict (dtype and shape per key) that model ``name`` with ``config`` has, computed on the
    ``meta`` device: no memory is allocated. Raises ValueError/TypeError for a config that is not
    valid, or that builds more than ``file_tensors`` (+ spare) tensors or :data:`MAX_PARAMETERS` values."""
    make_config(name, config)  # types and bounds of every field, before anything is built
    limit = (file_tensors + SPARE_TENSORS) if file_tensors is not None else 10**9
    try:
        with _bounded_construction(limit, MAX_PARAMETERS), torch.device("meta"):
            model = build(name, config)
    except RuntimeError as e:  # e.g. a size whose element count overflows
        raise ValueError(str(e).strip().splitlines()[0]) from None
    return {key: (t.dtype, tuple(t.shape)) for key, t in model.state_dict().items()}


def _describe_config(config: dict) -> str:
    """A short, one-line view of a config for error messages."""
    text = json.dumps(config, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def check_tensors_fit(path: Path, name: str, config: dict, header: Header) -> None:
    """Refuse a checkpoint whose config is invalid or whose tensors are not exactly those the config
    builds (names, shapes, dtype kinds). Costs no memory; raises :class:`CheckpointError`."""
    try:
        expected = expected_tensors(name, config, len(header.tensors))
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: config does not fit model {name!r}: {e}") from None
    missing = sorted(set(expected) - set(header.tensors))
    unexpected = sorted(set(header.tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}" + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}" + (f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else ""))
        raise CheckpointError(f"{path}: tensors do not match model {name!r} with config {_describe_config(config)}: {'; '.join(parts)}")
    for key, (dtype, shape) in expected.items():
        entry = header.tensors[key]
        if entry.shape != shape:
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {list(entry.shape)}, but model {name!r} with config "
                f"{_describe_config(config)} needs {list(shape)}"
            )
        stored = DTYPES[entry.dtype][0]
        if stored != dtype and not (stored.is_floating_point and dtype.is_floating_point):
            raise CheckpointError(f"{path}: tensor {key!r} is {entry.dtype}, but the model needs {dtype}")


def _json_object(path: Path, metadata: dict[str, str], key: str, default: str) -> dict:
    """A metadata value that must hold a JSON object."""
    try:
        value = _json(metadata.get(key) or default)
    except ValueError as e:
        raise CheckpointError(f"{path}: damaged metadata ({key} is not JSON: {e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: damaged metadata ({key} is a JSON {type(value).__name__}, not an object)")
    return value


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", settings: dict | None = None
) -> Checkpoint:
    """Rebuild the model stored in ``path`` from the file alone; raises :class:`CheckpointError`.

    The file is checked as the module notes say before any module is built or tensor read.
    ``settings`` change config fields the model lists in ``runtime_settings`` (ip2p: its base model
    and sampling settings) before it is built; others are refused.
    """
    path = Path(path)
    header = read_header(path)
    metadata = header.metadata
    name = metadata.get("autohdr.model")
    if not name:
        raise CheckpointError(f"{path}: not an autohdr checkpoint (no autohdr.model in its metadata)")
    if name not in MODELS:
        raise CheckpointError(
            f"{path}: model {name!r} is unknown to this autohdr (known: {', '.join(sorted(MODELS))})"
        )
    config = _json_object(path, metadata, "autohdr.config", "{}")
    training = _json_object(path, metadata, "autohdr.training", "{}")
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    allowed = getattr(MODELS[name], "runtime_settings", ())
    refused = sorted(set(settings) - set(allowed))
    if refused:
        raise CheckpointError(f"{path}: a {name!r} model takes no {', '.join(refused)} setting (it takes: {', '.join(allowed) or 'none'})")
    config.update(settings)
    base_spec = _base_spec(path, metadata, name) if "autohdr.base" in metadata else None
    own = header
    if base_spec is not None:
        own, base_header = _split_base(header)
        check_tensors_fit(path, base_spec[0], base_spec[1], base_header)
    if getattr(MODELS[name], "needs_base", False):
        # Its network comes from a base model the file only names (ip2p): the config is checked here,
        # the few tensors the file holds by name and shape when they are loaded into the built model.
        try:
            make_config(name, config)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: config does not fit model {name!r}: {e}") from None
    else:
        check_tensors_fit(path, name, config, own)
    tensors = _read_tensors(path, header)
    try:
        model = build(name, config)
        if base_spec is not None:
            model.base = build(*base_spec)
    except ModelUnavailable as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: config does not fit model {name!r}: {e}") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except (TypeError, ValueError, RuntimeError) as e:
        reason = " ".join(line.strip() for line in str(e).strip().splitlines()[:3])
        raise CheckpointError(f"{path}: tensors do not match model {name!r}: {reason}") from None
    model.eval().to(map_location)
    return Checkpoint(model, name, config, metadata.get("autohdr.version", "?"), training, path, dict(metadata))


def _base_spec(path: Path, metadata: dict[str, str], name: str) -> tuple[str, dict]:
    """The name and config of the global model a local model's file holds as its base."""
    spec = _json_object(path, metadata, "autohdr.base", "{}")
    base_name, base_config = spec.get("model"), spec.get("config", {})
    if base_name not in MODELS or not can_be_base(MODELS[base_name]) or not isinstance(base_config, dict):
        raise CheckpointError(f"{path}: damaged metadata (autohdr.base names no base model: {_describe_config(spec)})")
    if hasattr(MODELS[name], "predict_lut") or getattr(MODELS[name], "needs_base", False):
        raise CheckpointError(f"{path}: a {name!r} model cannot have a base model (only nafnet and diffir can)")
    return base_name, base_config


def _split_base(header: Header) -> tuple[Header, Header]:
    """The header's own tensors and its base model's (their prefix taken off), as two headers."""
    own = {k: v for k, v in header.tensors.items() if not k.startswith(BASE_PREFIX)}
    base = {k[len(BASE_PREFIX):]: v for k, v in header.tensors.items() if k.startswith(BASE_PREFIX)}
    return dataclasses.replace(header, tensors=own), dataclasses.replace(header, tensors=base)


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
        raise CheckpointError(f"{path}: a .cube look takes no {', '.join(sorted(settings))} setting (model checkpoints only)")
    if path.suffix.lower() == ".cube":
        from .cube import read_cube
        from .models.lut import StaticLUT

        return StaticLUT.from_cube(read_cube(path)).eval().to(map_location)
    model = load_checkpoint(path, map_location, settings).model
    reason = getattr(model, "inference_error", None)
    if reason:
        raise CheckpointError(f"{path}: cannot enhance with {reason}")
    return model
