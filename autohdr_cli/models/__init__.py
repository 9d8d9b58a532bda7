"""The model registry: a plain dict from the name stored in checkpoints to the model class.

Every model class takes one config dataclass (``config_class``) and keeps it as ``model.config``.
"""

from __future__ import annotations

import dataclasses
import typing

from torch import nn

from . import diffir, nafnet
from .diffir import DiffIR
from .lut import AdaptiveLUT, StaticLUT
from .nafnet import NAFNet
from .nilut import NILUT
from .oneshot import OneShotLook

MODELS: dict[str, type[nn.Module]] = {
    "cube": StaticLUT,
    "lut": AdaptiveLUT,
    "nilut": NILUT,
    "nafnet": NAFNet,
    "diffir": DiffIR,
    "oneshot": OneShotLook,
}


#: Named configurations of the models that have them, for ``autohdr train --model NAME-PRESET``.
PRESETS: dict[str, dict] = {"nafnet": nafnet.PRESETS, "diffir": diffir.PRESETS}


def resolve_preset(name: str, config: dict | None = None) -> tuple[str, dict]:
    """``("nafnet-base", {...})`` -> ``("nafnet", base preset's fields updated by the given config)``.

    A plain model name with presets means its ``small`` preset (for DiffIR the same as its config's
    defaults; for NAFNet it turns on whole-photo statistics); one without comes back as it is.
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


def _coerce(value, annotation):
    """Turn JSON values back into the dataclass field's type (lists into tuples)."""
    origin = typing.get_origin(annotation)
    if isinstance(value, list) and (origin is tuple or annotation is tuple or "tuple" in str(annotation)):
        return tuple(value)
    return value


def make_config(name: str, values: dict | None = None):
    """Build model ``name``'s config dataclass from a dict, refusing unknown keys."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})")
    config_class = MODELS[name].config_class
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) for model {name!r}: {', '.join(unknown)}")
    hints = typing.get_type_hints(config_class)
    return config_class(**{k: _coerce(v, hints.get(k)) for k, v in values.items()})


def build(name: str, config: dict | None = None) -> nn.Module:
    """Construct model ``name`` from a config dict (or its defaults)."""
    return MODELS[name](make_config(name, config))


def name_of(model: nn.Module) -> str:
    """The registry name of a model instance."""
    for name, cls in MODELS.items():
        if type(model) is cls:
            return name
    raise KeyError(f"{type(model).__name__} is not a registered model")
