"""NILUT: a neural implicit LUT (Conde et al., AAAI 2024), several looks in one small MLP.

A residual MLP maps an RGB colour (plus a style vector when it holds several looks) to a new colour.
For inference it is baked into an ordinary ``3 x S x S x S`` LUT for the current style, so the pipeline
applies it like any other LUT; blending looks is feeding a mixed style vector (``set_style``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .lut import apply_lut, identity_lut


@dataclass
class NILUTConfig:
    """An MLP of ``depth`` hidden layers of ``width`` units; ``num_styles`` looks (1 = no conditioning).

    ``grid_size`` is the LUT it is baked into for inference (and for training, so both see the same
    function). ``style_names`` labels the looks (e.g. the pairs folders they were learned from).
    """

    width: int = 64
    depth: int = 3
    num_styles: int = 1
    style_names: tuple[str, ...] = ()
    grid_size: int = 33
    smoothness_weight: float = 1e-4
    monotonicity_weight: float = 10.0

    #: ``grid_size`` is baked through the MLP at every use (grid³ x width activations): 65 is 0.3 M colours.
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"grid_size": (2, 65), "num_styles": (1, 4096)}


def normalized_style(weights: Sequence[float], num_styles: int) -> torch.Tensor:
    """Check blend weights (one per look, >= 0, not all 0) and scale them to sum to 1."""
    values = [float(w) for w in weights]
    if len(values) != num_styles:
        raise ValueError(f"this model holds {num_styles} look(s); got {len(values)} style weight(s)")
    if any(v < 0 or v != v for v in values) or sum(values) <= 0:
        raise ValueError("style weights must be >= 0 and not all 0")
    total = sum(values)
    return torch.tensor([v / total for v in values], dtype=torch.float32)


class NILUT(nn.Module):
    """Neural implicit LUT: colour -> colour MLP with a residual connection, baked into a grid to apply.

    Starts as the identity (the last layer is zero). The current style (a blend of the looks) lives in
    the model: ``set_style([0.3, 0.7])``; by default the first look.
    """

    config_class = NILUTConfig
    #: Not image-adaptive: the LUT depends on the style only, so no thumbnail is needed.
    thumbnail_size = 0

    def __init__(self, config: NILUTConfig | None = None):
        super().__init__()
        self.config = config or NILUTConfig()
        config = self.config
        if config.width < 1 or config.depth < 1 or config.num_styles < 1 or config.grid_size < 2:
            raise ValueError("width, depth and num_styles must be >= 1 and grid_size >= 2")
        if config.style_names and len(config.style_names) != config.num_styles:
            raise ValueError("style_names must name every look (one per style)")
        self.conditioned = config.num_styles > 1
        layers: list[nn.Module] = [nn.Linear(3 + (config.num_styles if self.conditioned else 0), config.width)]
        for _ in range(config.depth - 1):
            layers += [nn.GELU(), nn.Linear(config.width, config.width)]
        layers += [nn.GELU(), nn.Linear(config.width, 3)]
        self.mlp = nn.Sequential(*layers)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        style = torch.zeros(config.num_styles)
        style[0] = 1.0
        # Runtime state like a strength setting, not a learned weight: kept out of the checkpoint.
        self.register_buffer("style", style, persistent=False)

    def set_style(self, weights: Sequence[float]) -> None:
        """Blend the looks with these weights (one per look, scaled to sum to 1) from now on."""
        self.style.copy_(normalized_style(weights, self.config.num_styles).to(self.style.device))

    def style_index(self, name: str) -> int:
        """The index of the look called ``name`` (raises ``KeyError`` if there is none)."""
        if name not in self.config.style_names:
            raise KeyError(f"no look called {name!r} (looks: {', '.join(self.config.style_names) or 'unnamed'})")
        return list(self.config.style_names).index(name)

    def map_colours(self, rgb: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """Map colours ``N x 3`` in [0, 1] to new colours ``N x 3`` for a style vector (default: current)."""
        inputs = rgb
        if self.conditioned:
            style = self.style if style is None else style
            inputs = torch.cat([rgb, style.to(rgb).expand(rgb.shape[0], -1)], dim=1)
        return rgb + self.mlp(inputs)

    def bake(self, style: torch.Tensor | None = None) -> torch.Tensor:
        """The MLP sampled on the ``grid_size`` grid: an unclamped ``3 x S x S x S`` LUT."""
        size = self.config.grid_size
        device = next(self.parameters()).device
        grid = identity_lut(size).to(device)
        colours = self.map_colours(grid.flatten(1).t(), style)
        return colours.t().reshape(3, size, size, size)

    def predict_lut(self, thumbnails: torch.Tensor) -> torch.Tensor:
        """The baked LUT of the current style for each image (``B x 3 x S x S x S``, values in [0, 1])."""
        lut = self.bake().clamp(0.0, 1.0).to(thumbnails.dtype)
        return lut.unsqueeze(0).expand(thumbnails.shape[0], -1, -1, -1, -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Apply the current style's baked LUT to ``B x 3 x H x W`` images in [0, 1]."""
        return apply_lut(images, self.predict_lut(images))

    def training_loss(
        self, source: torch.Tensor, target: torch.Tensor, looks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction loss of each sample under its own look (``looks``: ``B`` indices, default 0),
        through the baked grid as at inference, plus LUT smoothness and monotonicity on the grids."""
        from ..losses import regularised_lut_loss

        batch = source.shape[0]
        if looks is None:
            looks = torch.zeros(batch, dtype=torch.long, device=source.device)
        present = sorted(set(looks.tolist()))
        if present[0] < 0 or present[-1] >= self.config.num_styles:
            raise ValueError(f"look index out of range for a model of {self.config.num_styles} look(s)")
        eye = torch.eye(self.config.num_styles, device=source.device)
        grids = torch.stack([self.bake(eye[look]) for look in present])
        slot = {look: i for i, look in enumerate(present)}
        per_sample = grids[torch.tensor([slot[int(v)] for v in looks], device=source.device)]
        prediction = apply_lut(source, per_sample.clamp(0.0, 1.0))
        return regularised_lut_loss(
            prediction, target, grids, self.config.smoothness_weight, self.config.monotonicity_weight
        )


def style_weights(model: nn.Module, text: str) -> list[float]:
    """Blend weights for ``--style TEXT``: a look's name, its index, or weights such as ``0.3,0.7``.

    Raises ValueError with a one-line reason (also for models that hold a single look).
    """
    if not hasattr(model, "set_style"):
        raise ValueError(f"--style is for models that hold several looks (nilut), not {type(model).__name__}")
    count = model.config.num_styles
    if "," in text:
        try:
            return [float(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(f"--style {text}: blend weights must be numbers, e.g. 0.3,0.7") from None
    names = list(getattr(model.config, "style_names", ()) or ())
    if text in names:
        index = names.index(text)
    else:
        try:
            index = int(text)
        except ValueError:
            known = ", ".join(names) if names else f"indices 0..{count - 1}"
            raise ValueError(f"--style {text}: no such look (looks: {known})") from None
    if not 0 <= index < count:
        raise ValueError(f"--style {text}: this model holds {count} look(s), indices 0..{count - 1}")
    return [1.0 if i == index else 0.0 for i in range(count)]


def set_style_from_text(model: nn.Module, text: str) -> None:
    """Set a NILUT's look from ``--style`` text; raises ValueError with a one-line reason."""
    weights = style_weights(model, text)
    try:
        model.set_style(weights)
    except ValueError as e:
        raise ValueError(f"--style {text}: {e}") from None
