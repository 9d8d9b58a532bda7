"""Exporting a model, and describing one (``autohdr export`` and ``autohdr info``).

Formats:

- ``cube``: a global (LUT) model as an Adobe/Resolve ``.cube`` file (red fastest, domain 0..1), for
  Photoshop, Lightroom, DaVinci Resolve and ffmpeg. The image-adaptive LUT bakes the LUT it predicts for
  one given photo; models that are not a colour-to-colour mapping (NAFNet, DiffIR) cannot be a LUT.
- ``onnx``: opset 20 (5-D GridSample needs it) through the dynamo exporter, any batch, height and width.
- ``pt2``: a ``torch.export`` program (``torch.export.save``); TorchScript is deprecated and not offered.
- ``safetensors``: the checkpoint re-saved with edited metadata (``--title``, ``--meta``).

ONNX and pt2 files are checked before they are written: reloaded (ONNX Runtime / ``torch.export.load``)
and run on a fresh random input of another size than the one traced, against the PyTorch model; a
larger difference than :data:`TOLERANCE` means no file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .checkpoint import (
    CheckpointError, checkpoint_bytes, config_dict, load_checkpoint, load_model, read_header, read_metadata,
)
from .cube import MAX_SIZE, MIN_SIZE, CubeError, CubeLUT, write_cube
from .imageio import PhotoError, atomic_write_bytes, load_image
from .models import MODELS, name_of
from .models.lut import apply_lut, identity_lut, lookup_batched, lut_to_table
from .models.nilut import set_style_from_text
from .inference import is_global, predict_luts

FORMATS = ("cube", "onnx", "pt2", "safetensors")
SUFFIX_FORMATS = {".cube": "cube", ".onnx": "onnx", ".pt2": "pt2", ".safetensors": "safetensors"}
DEFAULT_CUBE_SIZE = 33
ONNX_OPSET = 20
#: Largest difference allowed between an exported program and the PyTorch model, on [0, 1] values.
TOLERANCE = 1e-4
#: Batch, height and width the graph is traced at, and those it is checked at afterwards: different on
#: purpose (and odd, so not a multiple of any padding size), so a size baked into the graph is caught.
TRACE_SHAPE = (2, 3, 64, 96)
CHECK_SHAPE = (1, 3, 71, 53)
#: Metadata keys that describe the model itself; ``--meta`` may not change them.
CORE_METADATA = ("autohdr.model", "autohdr.config", "autohdr.version", "autohdr.training")


class ExportError(Exception):
    """The export cannot be done as asked (bad option, unsuitable model, missing extra): a usage error."""


class ExportFailed(Exception):
    """The exporter failed, or its result does not reproduce the model: nothing was written."""


@dataclass
class ExportResult:
    """What an export wrote, and how far the reloaded file was from PyTorch (None when not checked)."""

    path: Path
    format: str
    size_bytes: int
    max_abs_diff: float | None = None
    check_shape: tuple[int, ...] | None = None
    details: str = ""

    def line(self) -> str:
        """One line for the terminal."""
        text = f"wrote {self.path} ({self.format}, {human_size(self.size_bytes)}"
        text += f", {self.details})" if self.details else ")"
        if self.max_abs_diff is not None:
            shape = "x".join(str(n) for n in self.check_shape or ())
            text += f"; reloaded and checked on a {shape} input: max abs diff {self.max_abs_diff:.2e} vs PyTorch"
        return text


def human_size(size_bytes: int) -> str:
    """A byte count as B, kB, MB or GB (powers of 1000, as file managers show them)."""
    value = float(size_bytes)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.2f} GB"


def format_for(output: Path, requested: str | None) -> str:
    """The export format: the one asked for, else the one the output file name's extension implies."""
    if requested:
        if requested not in FORMATS:
            raise ExportError(f"--format {requested}: expected one of {', '.join(FORMATS)}")
        return requested
    guessed = SUFFIX_FORMATS.get(output.suffix.lower())
    if guessed is None:
        raise ExportError(
            f"{output}: cannot tell the format from the extension; give --format ({', '.join(FORMATS)})"
        )
    return guessed


# --------------------------------------------------------------------------------------------- loading


def load_for_export(path: Path) -> nn.Module:
    """Load the model in a ``.safetensors`` checkpoint or ``.cube`` file; ExportError if unusable."""
    try:
        return load_model(path)
    except (CheckpointError, CubeError) as e:
        raise ExportError(str(e)) from None


def apply_style(model: nn.Module, style: str | None) -> None:
    """Set the look (or blend of looks) that the exported file will carry."""
    if style is None:
        return
    try:
        set_style_from_text(model, style)
    except ValueError as e:
        raise ExportError(str(e)) from None


# ------------------------------------------------------------------------------------------------ cube


def needs_image(model: nn.Module) -> bool:
    """True for global models whose LUT depends on the photo (they look at a thumbnail)."""
    return is_global(model) and getattr(model, "thumbnail_size", 0) > 0


def model_lut(model: nn.Module, image: Path | None = None) -> torch.Tensor:
    """The ``3 x S x S x S`` LUT a global model applies (to ``image``, for the image-adaptive one)."""
    name = name_of(model)
    if not is_global(model):
        other = "enhance with the .safetensors file itself" if getattr(model, "export_refusal", None) else "export it as onnx or pt2 instead"
        raise ExportError(
            f"model {name!r} is not a global colour mapping (it looks at neighbouring pixels), so it "
            f"cannot be a LUT; {other}"
        )
    if needs_image(model) and image is None:
        raise ExportError(
            f"model {name!r} is image-adaptive: it predicts a different LUT for every photo; give "
            "--image PHOTO to bake the LUT it predicts for that photo"
        )
    if image is not None and not needs_image(model):
        raise ExportError(f"--image: model {name!r} applies the same LUT to every photo, so it takes no photo")
    if image is None:
        # The LUT does not depend on the pixels; predict_luts only needs a batch of one.
        photo = torch.zeros(1, 3, 1, 1)
    else:
        try:
            photo = torch.from_numpy(load_image(image)).unsqueeze(0)
        except PhotoError as e:
            raise ExportError(f"--image {image}: {e}") from None
    with torch.inference_mode():
        return predict_luts(model, photo)[0].float()


def input_affine(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale, offset)`` of the model's input-domain mapping (``normalize_input``), or None for 0..1.

    The mapping is per-channel affine by contract, so two probes (all 0, all 1) recover it.
    """
    normalize = getattr(model, "normalize_input", None)
    if normalize is None:
        return None
    with torch.inference_mode():
        offset = normalize(torch.zeros(1, 3, 1, 1)).reshape(3).clone()
        scale = normalize(torch.ones(1, 3, 1, 1)).reshape(3).clone() - offset
    if torch.equal(scale, torch.ones(3)) and torch.equal(offset, torch.zeros(3)):
        return None
    return scale, offset


def sample_lut(model: nn.Module, lut: torch.Tensor, size: int) -> np.ndarray:
    """The model's colour mapping (input domain, lookup, clipping as the pipeline does) sampled on a
    ``size``-point grid over 0..1, as a ``.cube`` table ``[b, g, r, c]``.

    At the model's own LUT size this copies its LUT exactly; at another size it is resampled.
    """
    grid = identity_lut(size).reshape(1, 3, size, size * size)
    affine = input_affine(model)
    if affine is not None:
        scale, offset = affine
        grid = grid * scale.view(1, 3, 1, 1) + offset.view(1, 3, 1, 1)
    with torch.inference_mode():
        looked_up = apply_lut(grid, lut).clamp(0.0, 1.0)
    return lut_to_table(looked_up.reshape(3, size, size, size))


def cube_from_model(
    model: nn.Module, size: int = DEFAULT_CUBE_SIZE, image: Path | None = None, title: str = "", source: str = ""
) -> CubeLUT:
    """The ``.cube`` LUT of a global model (for ``image`` if it is image-adaptive)."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ExportError(f"--size {size}: a .cube LUT has {MIN_SIZE}..{MAX_SIZE} points per axis")
    lut = model_lut(model, image)
    comments = [f"Made by autohdr {__version__} from {source or 'a model'} (model {name_of(model)})"]
    if image is not None:
        comments.append(f"The LUT this image-adaptive model predicts for {Path(image).name}")
    if hasattr(model, "set_style") and model.config.num_styles > 1:
        weights = ", ".join(f"{w:.3g}" for w in model.style.tolist())
        comments.append(f"Style weights: {weights}")
    return CubeLUT(sample_lut(model, lut, size), title=title, comments=comments)


# ---------------------------------------------------------------------------- graphs for ONNX and pt2


class _InputDomain(nn.Module):
    """The model's per-channel input mapping as plain tensor arithmetic (or nothing for 0..1)."""

    def __init__(self, affine: tuple[torch.Tensor, torch.Tensor] | None):
        super().__init__()
        self.active = affine is not None
        scale, offset = affine if affine is not None else (torch.ones(3), torch.zeros(3))
        self.register_buffer("scale", scale.view(1, 3, 1, 1).clone())
        self.register_buffer("offset", offset.view(1, 3, 1, 1).clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images from the model's input domain onto 0..1."""
        return images * self.scale + self.offset if self.active else images


class FixedLUTGraph(nn.Module):
    """A global model whose LUT is the same for every photo (cube, NILUT at its current style): the LUT
    is computed once and stored in the graph, so the exported file only does the lookup."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.domain = _InputDomain(input_affine(model))
        self.register_buffer("lut", model_lut(model).clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Enhance ``B x 3 x H x W`` images in [0, 1]."""
        luts = self.lut.unsqueeze(0).expand(images.shape[0], -1, -1, -1, -1)
        return lookup_batched(self.domain(images), luts)


class AdaptiveLUTGraph(nn.Module):
    """The image-adaptive LUT: thumbnail, LUT prediction and lookup, all in the graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.domain = _InputDomain(input_affine(model))
        self.thumbnail_size = int(model.thumbnail_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Enhance ``B x 3 x H x W`` images in [0, 1]."""
        size = self.thumbnail_size
        # As make_thumbnail, without its shortcut for images already at thumbnail size: that test on
        # the height and width would become a guard that refuses such images. (At equal size the
        # antialiased resize is the identity, so the result is the same.)
        thumbnails = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return lookup_batched(self.domain(images), self.model.predict_lut(thumbnails))


class PaddedGraph(nn.Module):
    """A model that pads its input to a multiple of ``model.multiple`` (NAFNet, DiffIR), padded here first.

    The model pads only when the size is not already a multiple; traced, that test would pin the graph
    to one of the two cases. Padding here to ``multiple * ceil(size / multiple)`` (edge pixels repeated,
    as the model does) gives a size the tracer can prove is a multiple, so the model's own test vanishes;
    the crop back is a negative pad, because a slice would add a guard on the size as well. What the
    model reads of the whole photo (DiffIR's prior, whole-photo statistics, neighbourhood maps) is taken
    from the photo as it is, before padding, as the model's own forward does.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.multiple = int(model.multiple)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Enhance ``B x 3 x H x W`` images in [0, 1]."""
        height, width = images.shape[-2:]
        k = self.multiple
        padding = (0, k * ((width + k - 1) // k) - width, 0, k * ((height + k - 1) // k) - height)
        padded = F.pad(images, padding, mode="replicate")
        context = None
        if getattr(getattr(self.model, "config", None), "whole_context", 0):
            context = self.model.image_context(images)
        elif hasattr(self.model, "estimate_prior"):
            context = [self.model.estimate_prior(images)]
        maps = self.model.maps_at(images, None) if hasattr(self.model, "maps_at") else None
        if maps is not None:
            maps = F.pad(maps, padding, mode="replicate")
        result = self.model(padded, context, maps=maps)
        return F.pad(result, (0, width - result.shape[-1], 0, height - result.shape[-2]))


class PixelGraph(nn.Module):
    """A per-pixel model reading neighbourhood maps (LocalTone): every pixel at once (``edit_whole``; the
    model's own forward works in bands of rows, which a traced graph would pin to one photo height),
    clipped as the model clips when enhancing."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Enhance ``B x 3 x H x W`` images in [0, 1]."""
        return self.model.edit_whole(images).clamp(0.0, 1.0)


def export_graph(model: nn.Module) -> nn.Module:
    """The module to trace for ``model``: global models get a single-lookup graph, per-pixel models one
    that runs every pixel at once, models that pad to a multiple are padded first, others are traced as
    they are."""
    if not is_global(model) and hasattr(model, "edit_whole"):
        return PixelGraph(model).eval()
    if not is_global(model):
        return PaddedGraph(model).eval() if getattr(model, "multiple", 1) > 1 else model.eval()
    if needs_image(model):
        return AdaptiveLUTGraph(model).eval()
    return FixedLUTGraph(model).eval()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' chatter (deprecation warnings, notes about torchvision ops we never use)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "torch.fx")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _first_line(error: BaseException) -> str:
    """An exception as one line: exporter errors run to pages of traceback-like text."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"


def trace_program(model: nn.Module) -> torch.export.ExportedProgram:
    """``torch.export`` of the model's export graph, with dynamic batch, height and width."""
    graph = export_graph(model)
    example = torch.rand(*TRACE_SHAPE, generator=torch.Generator().manual_seed(0))
    dynamic = torch.export.Dim.DYNAMIC
    try:
        with _quiet_exporter(), torch.no_grad():
            return torch.export.export(graph, (example,), dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},))
    except Exception as e:  # noqa: BLE001 - any tracing failure means this backend cannot be exported
        raise ExportFailed(
            f"model {name_of(model)!r} cannot be traced by torch.export with a free height and width "
            f"({_first_line(e)})"
        ) from e


def check_input() -> torch.Tensor:
    """A fresh random batch of another size than the traced one, for checking an exported file."""
    return torch.rand(*CHECK_SHAPE, generator=torch.Generator().manual_seed(1))


def reference_output(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """The PyTorch model's own output (its ``forward``), which the exported file must reproduce."""
    with torch.inference_mode():
        return model(images).float().numpy()


def check_close(kind: str, output: np.ndarray, expected: np.ndarray) -> float:
    """Max abs difference of an exported program's output; ExportFailed beyond :data:`TOLERANCE`."""
    if output.shape != expected.shape:
        raise ExportFailed(f"{kind} output has shape {output.shape}, PyTorch gives {expected.shape}; nothing written")
    difference = float(np.abs(output.astype(np.float64) - expected).max())
    if not difference <= TOLERANCE:  # also catches NaN
        raise ExportFailed(
            f"{kind} output differs from PyTorch by up to {difference:.3g} (allowed {TOLERANCE:g}) on a "
            f"{'x'.join(map(str, CHECK_SHAPE))} input; nothing written"
        )
    return difference


def model_metadata(model: nn.Module) -> dict[str, str]:
    """The checkpoint's identifying metadata, carried into ONNX and pt2 files."""
    return {
        "autohdr.model": name_of(model),
        "autohdr.config": json.dumps(config_dict(model), sort_keys=True),
        "autohdr.version": __version__,
    }


def _import_onnx_tools():
    """The ONNX Runtime module, after checking the whole optional 'onnx' extra is installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(
            f"ONNX export needs the optional 'onnx' extra ({e.name} is missing): pip install 'autohdr[onnx]'"
        ) from None
    return onnxruntime


def onnx_bytes(model: nn.Module, program: torch.export.ExportedProgram | None = None) -> tuple[bytes, float]:
    """The model as ONNX (opset :data:`ONNX_OPSET`), checked with ONNX Runtime; returns the bytes and
    the max abs difference against PyTorch. ``program``: the model's :func:`trace_program`, if at hand."""
    onnxruntime = _import_onnx_tools()
    program = program if program is not None else trace_program(model)
    try:
        with _quiet_exporter():
            onnx_program = torch.onnx.export(
                program, dynamo=True, opset_version=ONNX_OPSET, input_names=["images"],
                output_names=["enhanced"], external_data=False, optimize=True, verbose=False,
            )
    except Exception as e:  # noqa: BLE001 - e.g. an operator with no ONNX translation
        raise ExportFailed(f"model {name_of(model)!r} cannot be converted to ONNX ({_first_line(e)})") from e
    proto = onnx_program.model_proto
    for key, value in model_metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    images = check_input()
    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        output = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    except Exception as e:  # noqa: BLE001 - the runtime refusing the file is an export failure
        raise ExportFailed(f"ONNX Runtime cannot run the exported {name_of(model)!r} model ({_first_line(e)})") from e
    return data, check_close("ONNX Runtime", output, reference_output(model, images))


def pt2_bytes(model: nn.Module, program: torch.export.ExportedProgram | None = None) -> tuple[bytes, float]:
    """The model as a saved ``torch.export`` program, reloaded and checked; returns the bytes and the
    max abs difference against PyTorch. ``program``: the model's :func:`trace_program`, if at hand."""
    program = program if program is not None else trace_program(model)
    buffer = io.BytesIO()
    extra = {"autohdr.json": json.dumps(model_metadata(model), sort_keys=True)}
    try:
        with _quiet_exporter():
            torch.export.save(program, buffer, extra_files=extra)
            reloaded = torch.export.load(io.BytesIO(buffer.getvalue()))
            images = check_input()
            with torch.no_grad():
                output = reloaded.module()(images).float().numpy()
    except Exception as e:  # noqa: BLE001
        raise ExportFailed(f"the saved torch.export program of {name_of(model)!r} does not reload and run ({_first_line(e)})") from e
    return buffer.getvalue(), check_close("The reloaded pt2 program's", output, reference_output(model, images))


# ----------------------------------------------------------------------------------------- safetensors


def metadata_edits(title: str | None, entries: Sequence[str]) -> dict[str, str]:
    """``--title`` and ``--meta KEY=VALUE`` as metadata keys (``autohdr.KEY``); an empty value removes."""
    edits: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ExportError(f"--meta {entry!r}: expected KEY=VALUE")
        full = key if key.startswith("autohdr.") else f"autohdr.{key}"
        if full in CORE_METADATA:
            raise ExportError(f"--meta {key}: {full} describes the model itself and cannot be edited")
        edits[full] = value
    if title is not None:
        edits["autohdr.title"] = title
    return edits


def resaved_checkpoint(source: Path, edits: dict[str, str]) -> bytes:
    """The checkpoint (or ``.cube`` look) at ``source`` as ``.safetensors`` bytes with metadata edits."""
    if source.suffix.lower() == ".cube":
        model, training, extra = load_for_export(source), {"source": source.name}, {}
    else:
        try:
            checkpoint = load_checkpoint(source)
        except CheckpointError as e:
            raise ExportError(str(e)) from None
        model, training = checkpoint.model, checkpoint.training
        extra = {k: v for k, v in checkpoint.metadata.items() if k not in CORE_METADATA}
    extra.update(edits)
    return checkpoint_bytes(model, training, {k: v for k, v in extra.items() if v != ""})


# ---------------------------------------------------------------------------------------------- export


@dataclass
class ExportOptions:
    """Everything ``autohdr export`` can be told besides the input and output files."""

    format: str | None = None  # None: from the output file's extension
    size: int = DEFAULT_CUBE_SIZE
    image: Path | None = None
    style: str | None = None
    title: str | None = None
    meta: list[str] = field(default_factory=list)
    overwrite: bool = False  # replace an existing output file


def _refuse_unused_options(fmt: str, options: ExportOptions) -> None:
    """Options that would be silently ignored by this format are refused instead."""
    if options.image is not None and fmt != "cube":
        raise ExportError(f"--image is for --format cube (an {fmt} file keeps the model's own LUT predictor)")
    if options.size != DEFAULT_CUBE_SIZE and fmt != "cube":
        raise ExportError("--size is for --format cube")
    if (options.title is not None or options.meta) and fmt not in ("safetensors", "cube"):
        raise ExportError(f"--title and --meta are for --format safetensors (and --title for cube), not {fmt}")
    if options.meta and fmt == "cube":
        raise ExportError("--meta is for --format safetensors")
    if options.style is not None and fmt == "safetensors":
        raise ExportError("--style picks the look baked into a cube, onnx or pt2 file; a checkpoint keeps them all")


def export_model(source: Path, output: Path, options: ExportOptions) -> ExportResult:
    """Export the model in ``source`` (``.safetensors`` or ``.cube``) to ``output``; see the module doc.

    Raises :class:`ExportError` for a request that cannot be met, :class:`ExportFailed` when the
    exporter fails or the reloaded file does not reproduce the model (then nothing is written).
    """
    source, output = Path(source), Path(output)
    fmt = format_for(output, options.format)
    _refuse_unused_options(fmt, options)
    if output.resolve() == source.resolve():
        raise ExportError(f"{output}: the output would overwrite the input; choose another file name")
    if (output.exists() or output.is_symlink()) and not options.overwrite:
        raise ExportError(f"{output}: already exists; give --overwrite to replace it, or another -o")
    if fmt == "safetensors":
        data = resaved_checkpoint(source, metadata_edits(options.title, options.meta))
        return _write(output, fmt, data)
    if fmt in ("onnx", "pt2") and source.suffix.lower() != ".cube":
        refusal = _export_refusal(source)
        if refusal:
            raise ExportError(f"{source}: cannot export to {fmt}: {refusal}")
    model = load_for_export(source)
    apply_style(model, options.style)
    if fmt == "cube":
        cube = cube_from_model(model, options.size, options.image, options.title or "", source.name)
        _make_parent(output)
        write_cube(output, cube)
        return ExportResult(output, fmt, output.stat().st_size, details=f"{cube.size}^3 points")
    data, difference = onnx_bytes(model) if fmt == "onnx" else pt2_bytes(model)
    details = f"opset {ONNX_OPSET}" if fmt == "onnx" else "torch.export"
    return _write(output, fmt, data, difference, details)


def _export_refusal(source: Path) -> str | None:
    """Why the checkpoint's model cannot be one graph (its class's ``export_refusal``), from the header alone."""
    try:
        metadata = read_header(source).metadata
    except CheckpointError:
        return None  # loading it will say what is wrong
    if "autohdr.base" in metadata:
        return ("it holds a base model (train --base) that edits the whole photo before the network tiles it; "
                "one graph holding both is not supported yet (enhance with the .safetensors file itself)")
    model_class = MODELS.get(metadata.get("autohdr.model") or "")
    refusal = getattr(model_class, "export_refusal", None)
    if refusal is None and hasattr(model_class, "config_export_refusal"):
        try:
            config = json.loads(metadata.get("autohdr.config") or "{}")
        except ValueError:
            return None  # loading it will say what is wrong
        refusal = model_class.config_export_refusal(config) if isinstance(config, dict) else None
    return refusal


def _make_parent(output: Path) -> None:
    """Create the output's folder, as a usage error if that is impossible."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"{output}: cannot create its folder: {e.strerror or e}") from None


def _write(output: Path, fmt: str, data: bytes, difference: float | None = None, details: str = "") -> ExportResult:
    """Write the exported bytes atomically (a failed export never leaves a half file) and describe them."""
    _make_parent(output)
    try:
        atomic_write_bytes(output, data)
    except OSError as e:
        raise ExportError(f"{output}: cannot write: {e.strerror or e}") from None
    check = CHECK_SHAPE if difference is not None else None
    return ExportResult(output, fmt, len(data), difference, check, details)


# ------------------------------------------------------------------------------------------------ info


@dataclass
class ModelInfo:
    """What ``autohdr info`` shows about a weights file."""

    path: Path
    name: str
    class_name: str
    config: dict
    training: dict
    parameters: int
    size_bytes: int
    version: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready form (for ``--json``)."""
        data = dataclasses.asdict(self)
        data["path"] = str(self.path)
        return data


def describe(path: Path) -> ModelInfo:
    """Read a ``.safetensors`` checkpoint or ``.cube`` file and summarise it; ExportError if unusable."""
    path = Path(path)
    if path.suffix.lower() == ".cube":
        model = load_for_export(path)
        config, training, version, metadata = config_dict(model), {}, "", {}
    else:
        try:
            raw, tensors = read_metadata(path)
            model_class = MODELS.get(raw.get("autohdr.model", ""))
            if getattr(model_class, "needs_base", False):
                # Built on a base model (ip2p): described from the file alone, without the base or its
                # extra; the parameters counted are those the file holds (what training changed).
                return _describe_stored(path, raw, tensors, model_class)
            checkpoint = load_checkpoint(path)
        except CheckpointError as e:
            raise ExportError(str(e)) from None
        model, config, training, version = checkpoint.model, checkpoint.config, checkpoint.training, checkpoint.version
        metadata = {k: v for k, v in checkpoint.metadata.items() if k not in CORE_METADATA}
    return ModelInfo(
        path=path,
        name=name_of(model),
        class_name=type(model).__name__,
        config=config,
        training=training,
        parameters=sum(p.numel() for p in model.parameters()),
        size_bytes=path.stat().st_size,
        version=version,
        metadata=metadata,
    )


def _describe_stored(path: Path, raw: dict[str, str], tensors: dict, model_class: type) -> ModelInfo:
    """:class:`ModelInfo` from a checkpoint's metadata and tensors, without building its model."""
    try:
        config = json.loads(raw.get("autohdr.config", "{}"))
        training = json.loads(raw.get("autohdr.training", "{}") or "{}")
    except ValueError:
        raise ExportError(f"{path}: damaged metadata (config is not JSON)") from None
    return ModelInfo(
        path=path, name=raw["autohdr.model"], class_name=model_class.__name__, config=config, training=training,
        parameters=sum(t.numel() for t in tensors.values()), size_bytes=path.stat().st_size,
        version=raw.get("autohdr.version", ""),
        metadata={k: v for k, v in raw.items() if k not in CORE_METADATA},
    )


def _short(value) -> str:
    """A config or training value in a few characters: long lists are counted, not printed."""
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if isinstance(value, (list, tuple, str)) else str(value)


def info_lines(info: ModelInfo) -> list[str]:
    """The text ``autohdr info`` prints."""
    lines = [
        f"file:       {info.path}",
        f"model:      {info.name} ({info.class_name})" + (f", saved by autohdr {info.version}" if info.version else ""),
        f"parameters: {info.parameters:,}",
        f"size:       {human_size(info.size_bytes)} ({info.size_bytes:,} bytes)",
        "config:",
    ]
    lines += [f"  {key}: {_short(value)}" for key, value in info.config.items()]
    lines.append("training:" if info.training else "training:   none recorded")
    lines += [f"  {key}: {_short(value)}" for key, value in info.training.items()]
    if info.metadata:
        lines.append("metadata:")
        lines += [f"  {key}: {value}" for key, value in sorted(info.metadata.items())]
    return lines
