"""The model registry: a plain dict from the name stored in checkpoints to the model class.

Every model class takes one config dataclass (``config_class``) and keeps it as ``model.config``.
"""

from __future__ import annotations

import dataclasses
import math
import typing

from torch import nn

from . import diffir, nafnet
from .diffir import DiffIR
from .ip2p import InstructPix2Pix
from .localtone import LocalTone
from .lut import AdaptiveLUT, StaticLUT
from .nafnet import NAFNet
from .nilut import NILUT
from .oneshot import OneShotLook

MODELS: dict[str, type[nn.Module]] = {
    "cube": StaticLUT,
    "lut": AdaptiveLUT,
    "nilut": NILUT,
    "localtone": LocalTone,
    "nafnet": NAFNet,
    "diffir": DiffIR,
    "ip2p": InstructPix2Pix,
    "oneshot": OneShotLook,
}


#: Named configurations of the models that have them, for ``autohdr train --model NAME-PRESET``.
PRESETS: dict[str, dict] = {"nafnet": nafnet.PRESETS, "diffir": diffir.PRESETS}


def resolve_preset(name: str, config: dict | None = None) -> tuple[str, dict]:
    """``("nafnet-base", {...})`` -> ``("nafnet", base preset's fields updated by the given config)``.

    A plain model name with presets means its ``small`` preset (for NAFNet and DiffIR it turns on
    whole-photo statistics and the neighbourhood maps); one without comes back as it is.
    Raises KeyError for an unknown model or preset.
    """
    config = dict(config or {})
    if name in PRESETS and "small" in PRESETS[name]:
        return name, {**dataclasses.asdict(PRESETS[name]["small"]), **config}
    if name in MODELS:
        return name, config
    model, _, preset_name = name.partition("-")
    if model not in PRESETS or preset_name not in PRESETS[model]:
        known = sorted(MODELS) + [f"{m}-{p}" for m, presets in PRESETS.items() for p in presets]
        raise KeyError(f"unknown model {name!r} (known: {', '.join(known)})")
    return model, {**dataclasses.asdict(PRESETS[model][preset_name]), **config}


#: The largest whole number any config field may hold. Sizes that only cost parameters are bounded by
#: the checkpoint loader's parameter count; sizes that cost memory or time at run time (thumbnails,
#: grids, diffusion steps) have tighter bounds in their config class's ``LIMITS``.
MAX_WHOLE = 1 << 20


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _checked(key: str, value, annotation, limits: dict[str, tuple[float, float]]):
    """``value`` as config field ``key`` of type ``annotation`` (JSON lists become tuples); ValueError
    naming the field when the type is wrong, a number is not finite or lies outside its bounds."""
    low, high = limits.get(key, (0, MAX_WHOLE))
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) > 4096:
            raise ValueError(f"{key} must be a list, got {value!r}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise ValueError(f"{key} needs {len(items)} entries, got {len(value)}")
        return tuple(_checked(key, item, kind, limits) for item, kind in zip(value, items))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {value!r}")
        return value
    if annotation is int and not _whole(value):
        raise ValueError(f"{key} must be a whole number, got {value!r}")
    if annotation is float and not _number(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    if annotation in (int, float) and not low <= value <= high:
        raise ValueError(f"{key} {value} is outside {low:g}..{high:g}")
    return value


def make_config(name: str, values: dict | None = None):
    """Build model ``name``'s config dataclass from a dict, refusing unknown keys, values of the wrong
    type, non-finite numbers and numbers outside their bounds (negative whole numbers included)."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})")
    config_class = MODELS[name].config_class
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) for model {name!r}: {', '.join(unknown)}")
    hints = typing.get_type_hints(config_class)
    limits = getattr(config_class, "LIMITS", {})
    return config_class(**{k: _checked(k, v, hints[k], limits) for k, v in values.items()})


def build(name: str, config: dict | None = None) -> nn.Module:
    """Construct model ``name`` from a config dict (or its defaults)."""
    return MODELS[name](make_config(name, config))


def can_be_base(model: nn.Module | type) -> bool:
    """Whether a model (or model class) can be a ``train --base``: it edits a whole photo at once, either
    as one LUT per photo (the global models) or in one pass of its own (``whole_photo_edit``: localtone)."""
    return hasattr(model, "predict_lut") or getattr(model, "whole_photo_edit", False)


def name_of(model: nn.Module) -> str:
    """The registry name of a model instance."""
    for name, cls in MODELS.items():
        if type(model) is cls:
            return name
    raise KeyError(f"{type(model).__name__} is not a registered model")
