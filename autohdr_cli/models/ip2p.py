"""InstructPix2Pix fine-tuned on the pairs (Brooks et al., CVPR 2023), as an image-adaptive global model.

Stable Diffusion conditioned on the photo (its VAE latents as 4 extra UNet input channels) and on an
instruction. Training fine-tunes the UNet (or LoRA adapters on its attention layers) with the
diffusion loss on the pairs; the VAE and text encoder stay frozen and are never saved: a checkpoint
holds only what training changed, and names the base model (hub id or folder) it must be put back on.

Inference runs the pipeline on a copy of the photo downscaled to ``max_side`` and fits a per-photo 3D
LUT to that (small input, edited output) pair (:mod:`autohdr_cli.carry`): the model is "global" for
the rest of autohdr (``predict_lut``), so the LUT path applies the edit to the full-size photo, at its
bit depth, sharp. Local edits the LUT cannot express are lost; the colour and tone edit is kept.

diffusers and transformers (the ``autohdr[ip2p]`` extra) are imported only when such a model is built.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .lut import apply_lut

EXTRA_HINT = "pip install 'autohdr[ip2p]'"
DEFAULT_BASE = "timbrooks/instruct-pix2pix"
#: Settings ``autohdr enhance`` may change on a trained checkpoint (they do not touch its weights).
RUNTIME_SETTINGS = ("pretrained", "inference_steps", "image_guidance", "text_guidance", "max_side")


class ModelUnavailable(RuntimeError):
    """A model cannot be built here: an optional package or the base weights it needs are missing."""


@dataclass
class IP2PConfig:
    """The base model, the instruction, sampling defaults and how the edit reaches full size.

    ``pretrained``: a diffusers folder or hub id of InstructPix2Pix, or of Stable Diffusion 1.x (its
    UNet input is widened to 8 channels, the new ones zero, as the paper does). ``lora_rank``: 0 trains
    the whole UNet, N > 0 LoRA adapters of rank N on its attention projections; -1 (auto) is LoRA 8 on an
    InstructPix2Pix base and the whole UNet on a widened Stable Diffusion (it must learn to read the photo).
    ``max_side``: the long side, in pixels, of the copy the pipeline edits; ``lut_size``: points per
    axis of the LUT that carries the edit to full size.
    """

    pretrained: str = DEFAULT_BASE
    prompt: str = "make it look like a professionally edited real-estate photo"
    image_guidance: float = 1.5
    text_guidance: float = 7.5
    inference_steps: int = 20
    max_side: int = 512
    lut_size: int = 17
    lora_rank: int = -1
    conditioning_dropout: float = 0.05


def check_extra() -> None:
    """Raise :class:`ModelUnavailable` naming the extra when diffusers or transformers is missing."""
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise ModelUnavailable(f"model 'ip2p' needs {e.name or 'diffusers'}: {EXTRA_HINT}") from None


def _quiet_libraries() -> None:
    """No download or progress bars from diffusers/transformers inside our own progress display."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _is_hub_id(source: str) -> bool:
    """``owner/name`` as the Hugging Face hub spells model ids (anything else is a folder path)."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source) is not None


def missing_base_message(source: str) -> str:
    """One line saying what to download, and where it goes, for a base model that is not here."""
    from huggingface_hub import constants

    return (
        f"base model {source!r} is not on this machine (or the machine is offline): on a machine with "
        f"internet run `hf download {source}` (it goes to the Hugging Face cache, {constants.HF_HUB_CACHE}), "
        "or give --pretrained FOLDER holding its diffusers folder"
    )


def resolve_base(source: str) -> str:
    """The base's folder as an absolute path, or its hub id; ModelUnavailable for a missing folder."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return str(folder.resolve())
    if not _is_hub_id(source):
        raise ModelUnavailable(
            f"base model folder {source} does not exist: give --pretrained with its diffusers folder or hub id "
            f"(e.g. {DEFAULT_BASE})"
        )
    return source


def load_base(source: str, local_only: bool = True) -> dict:
    """The base pipeline's parts (UNet, VAE, text encoder, tokenizer, scheduler config) from a folder
    or the Hugging Face cache; from the hub too when not ``local_only`` (diffusers then fetches only
    the files these parts need). Raises :class:`ModelUnavailable` when missing."""
    check_extra()
    _quiet_libraries()
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    source = resolve_base(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # huggingface_hub warns about the offline cache before failing
            return {
                "unet": UNet2DConditionModel.from_pretrained(source, subfolder="unet", local_files_only=local_only),
                "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", local_files_only=local_only),
                "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", local_files_only=local_only),
                "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local_only),
                "scheduler": DDPMScheduler.load_config(source, subfolder="scheduler", local_files_only=local_only),
            }
    except (OSError, ValueError) as e:  # not in the folder or the cache, or not a diffusers folder
        if Path(source).is_dir():
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelUnavailable(
                f"base model folder {source} is not a Stable Diffusion / InstructPix2Pix diffusers folder ({reason})"
            ) from None
        raise ModelUnavailable(missing_base_message(source)) from None


def widen_input(unet: nn.Module, channels: int = 8) -> None:
    """Give a Stable Diffusion UNet ``channels`` input channels; the new ones start at zero weight, so
    the widened model first behaves exactly as the original (the InstructPix2Pix recipe)."""
    old = unet.conv_in
    if old.in_channels >= channels:
        return
    new = nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=channels)


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update ``up(down(x))``; ``up`` starts at zero."""

    def __init__(self, base: nn.Linear, rank: int):
        super().__init__()
        self.base = base
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """The base layer's output plus the low-rank update."""
        return self.base(x) + self.up(self.down(x))


def add_lora(unet: nn.Module, rank: int) -> int:
    """Wrap every attention block's query, key, value and output projections in :class:`LoRALinear`;
    returns how many layers were wrapped."""
    wrapped = 0
    for module in list(unet.modules()):
        if not all(hasattr(module, name) for name in ("to_q", "to_k", "to_v", "to_out")):
            continue
        for name in ("to_q", "to_k", "to_v"):
            setattr(module, name, LoRALinear(getattr(module, name), rank))
        module.to_out[0] = LoRALinear(module.to_out[0], rank)
        wrapped += 4
    return wrapped


def _multiple_of_8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)


class InstructPix2Pix(nn.Module):
    """InstructPix2Pix on a base model, with the parts training changed; see the module doc."""

    config_class = IP2PConfig
    runtime_settings = RUNTIME_SETTINGS
    #: Built on a base model that the checkpoint names but does not hold (``autohdr info`` reads the file alone).
    needs_base = True
    #: AdamW learning rate when ``autohdr train`` is not given one (the paper's 1e-4 is for batch 1024).
    default_lr = 1e-5
    #: A global model to the pipeline: it turns a photo's small copy into a LUT for the full-size photo.
    thumbnail_size = 512
    #: ``predict_lut`` runs a diffusion pipeline: give it every thread, unlike a LUT predictor's few ms.
    heavy_predictor = True
    export_refusal = (
        "ip2p runs a diffusion pipeline (UNet, VAE, text encoder and a sampling loop) that one ONNX or pt2 "
        "graph does not hold; use `autohdr enhance`, or export --format cube --image PHOTO for one photo's LUT"
    )

    @staticmethod
    def before_training(config: dict) -> None:
        """Check the extra, and bring a hub base into the Hugging Face cache unless it is there (or
        the machine is offline: then one line says what to download). Training only: enhance never
        downloads. Raises :class:`ModelUnavailable`."""
        check_extra()
        source = resolve_base(str(config.get("pretrained", DEFAULT_BASE)))
        if Path(source).is_dir():
            return
        import huggingface_hub

        if isinstance(huggingface_hub.try_to_load_from_cache(source, "unet/config.json"), str):
            return
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise ModelUnavailable(missing_base_message(source))
        load_base(source, local_only=False)  # into the cache; the model is then built from there

    def __init__(self, config: IP2PConfig | None = None):
        super().__init__()
        self.config = config or IP2PConfig()
        config = self.config
        if config.max_side < 64 or config.inference_steps < 1 or config.lut_size < 2:
            raise ValueError("max_side must be >= 64, inference_steps >= 1 and lut_size >= 2")
        config.pretrained = resolve_base(config.pretrained)
        parts = load_base(config.pretrained)
        self.unet, self.vae, self.text_encoder = parts["unet"], parts["vae"], parts["text_encoder"]
        self.tokenizer, self.scheduler_config = parts["tokenizer"], parts["scheduler"]
        self.thumbnail_size = config.max_side
        widened = self.unet.conv_in.in_channels < 8
        widen_input(self.unet)
        if config.lora_rank < 0:
            config.lora_rank = 0 if widened else 8
        self.requires_grad_(False)
        if config.lora_rank > 0:
            add_lora(self.unet, config.lora_rank)  # new adapter parameters are trainable
            if widened:
                self.unet.conv_in.requires_grad_(True)
        else:
            self.unet.requires_grad_(True)
        self.sampling_seed = 0
        self._text_cache: dict = {}
        self._pipeline = None

    # ---- what a checkpoint holds: the trainable parameters only

    def saved_names(self) -> list[str]:
        """Names of the parameters a checkpoint stores: those training changes."""
        return [name for name, parameter in self.named_parameters() if parameter.requires_grad]

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """The trainable parameters only (the base model's frozen parts are loaded from the base)."""
        everything = super().state_dict(prefix=prefix, keep_vars=keep_vars)
        kept = OrderedDict((prefix + name, everything[prefix + name]) for name in self.saved_names())
        if destination is not None:
            destination.update(kept)
            return destination
        return kept

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load the trainable parameters saved by :meth:`state_dict` onto the base."""
        names = set(self.saved_names())
        missing, unexpected = sorted(names - set(state_dict)), sorted(set(state_dict) - names)
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"Error(s) in loading state_dict: missing {missing[:3]}, unexpected {unexpected[:3]} "
                f"({len(missing)} missing, {len(unexpected)} unexpected; was it trained on another base?)"
            )
        parameters = dict(self.named_parameters())
        with torch.no_grad():
            for name in names & set(state_dict):
                parameters[name].copy_(state_dict[name])
        return nn.modules.module._IncompatibleKeys(missing, unexpected)

    def train(self, mode: bool = True):
        """Only the UNet ever trains; the frozen VAE and text encoder stay in eval mode."""
        super().train(mode)
        self.vae.eval()
        self.text_encoder.eval()
        return self

    # ---- training

    def _text_embeddings(self, prompt: str, device: torch.device) -> torch.Tensor:
        key = (prompt, str(device))
        if key not in self._text_cache:
            tokens = self.tokenizer(
                [prompt], padding="max_length", max_length=self.tokenizer.model_max_length,
                truncation=True, return_tensors="pt",
            ).input_ids.to(device)
            with torch.no_grad():
                self._text_cache[key] = self.text_encoder(tokens)[0].float()
        return self._text_cache[key]

    def training_loss(self, source: torch.Tensor, target: torch.Tensor, looks: torch.Tensor, *extra):
        """The diffusion loss on a batch: noise the target's latents, predict the noise (or velocity)
        from them, the source's latents and the instruction, with the paper's conditioning dropout."""
        from diffusers import DDPMScheduler

        if not hasattr(self, "_noise_scheduler"):
            self._noise_scheduler = DDPMScheduler.from_config(self.scheduler_config)
        noise_scheduler = self._noise_scheduler
        device, count = source.device, source.shape[0]
        cuda = device.type == "cuda"
        if cuda and not self.unet.is_gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            with torch.no_grad():
                latents = self.vae.encode(target * 2 - 1).latent_dist.sample() * self.vae.config.scaling_factor
                image_latents = self.vae.encode(source * 2 - 1).latent_dist.mode()
            noise = torch.randn_like(latents)
            steps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (count,), device=device)
            noisy = noise_scheduler.add_noise(latents, noise, steps)
            text = self._text_embeddings(self.config.prompt, device).expand(count, -1, -1)
            empty = self._text_embeddings("", device).expand(count, -1, -1)
            # Conditioning dropout (the paper's 5% each): without text, without the photo, without both,
            # so classifier-free guidance on both works at inference.
            draw = torch.rand(count, device=device)
            p = self.config.conditioning_dropout
            no_text = (draw < 2 * p)[:, None, None]
            keep_image = (~((draw >= p) & (draw < 3 * p))).to(image_latents.dtype)[:, None, None, None]
            text = torch.where(no_text, empty, text)
            model_input = torch.cat([noisy, image_latents * keep_image], dim=1)
            prediction = self.unet(model_input, steps, text).sample
        if noise_scheduler.config.prediction_type == "v_prediction":
            wanted = noise_scheduler.get_velocity(latents, noise, steps)
        else:
            wanted = noise
        loss = F.mse_loss(prediction.float(), wanted.float())
        return loss, {"mse": float(loss.detach())}

    # ---- inference

    def make_thumbnail(self, images: torch.Tensor) -> torch.Tensor:
        """The copy the pipeline edits: long side at most ``max_side``, aspect kept, sides multiples of 8."""
        height, width = images.shape[-2:]
        scale = min(1.0, self.config.max_side / max(height, width))
        size = (_multiple_of_8(height * scale), _multiple_of_8(width * scale))
        if (height, width) == size:
            return images
        return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)

    def pipeline(self):
        """The diffusers InstructPix2Pix pipeline over this model's parts (Euler ancestral sampler)."""
        if self._pipeline is None:
            from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

            self._pipeline = StableDiffusionInstructPix2PixPipeline(
                vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
                scheduler=EulerAncestralDiscreteScheduler.from_config(self.scheduler_config),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
            self._pipeline.set_progress_bar_config(disable=True)
        return self._pipeline

    def edit(self, thumbnails: torch.Tensor) -> torch.Tensor:
        """Run the pipeline on ``B x 3 x h x w`` images in [0, 1]; the same seed gives the same result."""
        device = thumbnails.device
        generator = torch.Generator(device).manual_seed(int(self.sampling_seed))
        config = self.config
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"), torch.no_grad():
            result = self.pipeline()(
                prompt=[config.prompt] * thumbnails.shape[0], image=thumbnails.float(),
                num_inference_steps=config.inference_steps, image_guidance_scale=config.image_guidance,
                guidance_scale=config.text_guidance, generator=generator, output_type="pt",
            ).images
        return result.float().clamp(0.0, 1.0).to(device)

    def predict_lut(self, thumbnails: torch.Tensor) -> torch.Tensor:
        """Edit each small copy with the pipeline and fit the LUT that carries the edit: ``B x 3 x S³``."""
        from ..carry import fit_luts

        return fit_luts(thumbnails.float(), self.edit(thumbnails), self.config.lut_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Enhance ``B x 3 x H x W`` photos at full size (pipeline on a small copy, edit carried by a LUT)."""
        return apply_lut(images, self.predict_lut(self.make_thumbnail(images)))
