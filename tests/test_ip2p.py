"""InstructPix2Pix (``--model ip2p``) end to end on a tiny, randomly initialised pipeline built here.

The base model is a real diffusers folder (``save_pretrained``) of a UNet, VAE and CLIP text encoder of
a few hundred thousand parameters each and a CLIP tokenizer from a small vocabulary: train, resume,
load, enhance at full size, and the missing extra / missing base paths, all through the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from autohdr_cli.carry import fit_lut
from autohdr_cli.models.lut import apply_lut
from conftest import gradient, save_rgb

ROOT = Path(__file__).resolve().parents[1]
#: Sampling settings that keep every tiny diffusion run fast (two steps on a 64 px copy).
FAST = {"inference_steps": 2, "max_side": 64}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one torch thread (see conftest)."""


def build_tiny_base(folder: Path, in_channels: int = 8) -> Path:
    """Save a tiny random InstructPix2Pix (or, ``in_channels=4``, Stable Diffusion) diffusers folder."""
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), latent_channels=4, layers_per_block=1, norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=2,
    ))
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter], vocab[letter + "</w>"] = len(vocab), len(vocab) + 1
    words = folder / "words"
    words.mkdir(parents=True)
    (words / "vocab.json").write_text(json.dumps(vocab))
    (words / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(words / "vocab.json"), str(words / "merges.txt"), model_max_length=77,
                              pad_token="<|endoftext|>")
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipeline = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    base = folder / "base"
    pipeline.save_pretrained(base)
    return base


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny base model and a pairs folder (4 pairs of 48 x 64 photos, the target a warmer look)."""
    folder = tmp_path_factory.mktemp("ip2p")
    base = build_tiny_base(folder)
    pairs = folder / "pairs"
    for index in range(4):
        source = gradient(48, 64, seed=index)
        target = np.clip(source.astype(np.float32) * [1.1, 1.0, 0.85], 0, 255).astype(np.uint8)
        save_rgb(pairs / "source" / f"p{index}.png", source)
        save_rgb(pairs / "target" / f"p{index}.png", target)
    return folder, base, pairs


@pytest.fixture(scope="module")
def trained(tiny):
    """A look trained for two steps on the tiny base (LoRA, the default on an InstructPix2Pix base)."""
    from typer.testing import CliRunner

    from autohdr_cli.cli import app

    folder, base, pairs = tiny
    out = folder / "look.safetensors"
    config = json.dumps(FAST)
    result = CliRunner().invoke(app, [
        "train", str(pairs), "--model", "ip2p", "--pretrained", str(base), "-o", str(out), "--prompt", "warm it",
        "--steps", "2", "--batch", "2", "--crop", "32", "--train-size", "64", "--config", config,
        "--checkpoint-every", "1", "--val-every", "2",
    ])
    assert result.exit_code == 0, result.output
    return out


def test_train_saves_only_what_changed_with_base_prompt_and_guidance(tiny, trained, run):
    from autohdr_cli.checkpoint import read_metadata

    folder, base, _pairs = tiny
    metadata, tensors = read_metadata(trained)
    assert metadata["autohdr.model"] == "ip2p"
    config = json.loads(metadata["autohdr.config"])
    assert config["pretrained"] == str(base.resolve())
    assert config["prompt"] == "warm it"
    assert (config["image_guidance"], config["text_guidance"], config["lora_rank"]) == (1.5, 7.5, 8)
    assert tensors and all(".down." in name or ".up." in name for name in tensors)  # LoRA adapters only
    training = json.loads(metadata["autohdr.training"])
    assert training["steps"] == 2 and training["lr"] == 1e-5  # ip2p's own default learning rate
    log = trained.with_suffix(".csv").read_text().splitlines()
    assert log[0].startswith("step,") and len(log) == 3
    assert trained.with_name(trained.name + ".state").is_file()
    info = run("info", trained, "--json")
    assert info.exit_code == 0, info.output
    described = json.loads(info.stdout)
    assert described["config"]["prompt"] == "warm it"
    assert described["parameters"] == sum(t.numel() for t in tensors.values())


def test_resume_continues_the_run(tiny, trained, run, tmp_path):
    folder, base, pairs = tiny
    first = tmp_path / "first.safetensors"
    args = ["train", pairs, "--model", "ip2p", "--pretrained", base, "--prompt", "warm it", "--batch", "2",
            "--crop", "32", "--train-size", "64", "--config", json.dumps(FAST), "--val-every", "2"]
    assert run(*args, "-o", first, "--steps", "1").exit_code == 0
    resumed = run(*args, "-o", tmp_path / "resumed.safetensors", "--steps", "2", "--resume", first)
    assert resumed.exit_code == 0, resumed.output
    from autohdr_cli.checkpoint import read_metadata

    _meta, expected = read_metadata(trained)
    _meta, got = read_metadata(tmp_path / "resumed.safetensors")
    assert json.loads(_meta["autohdr.training"])["steps"] == 2
    # Resuming redraws the same batches and noise: the same weights as the run that never stopped.
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6)


def test_enhance_full_size_keeps_size_depth_and_metadata_and_is_deterministic(tiny, trained, run, tmp_path):
    photos = tmp_path / "in"
    photos.mkdir()
    pixels = gradient(300, 420, seed=5)
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    Image.fromarray(pixels).save(photos / "a.jpg", quality=95, exif=exif)
    deep = (gradient(90, 130, seed=6).astype(np.uint16) * 257)
    tifffile.imwrite(photos / "b.tif", deep, photometric="rgb")
    for out in ("out1", "out2"):
        result = run("enhance", photos, tmp_path / out, "--weights", trained, "--seed", "3", "--steps", "2")
        assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out1" / "a.jpg") as image:
        assert image.size == (420, 300) and image.mode == "RGB"
        assert image.getexif().get(0x010F) == "TestCam"
    sixteen = tifffile.imread(tmp_path / "out1" / "b.tif")
    assert sixteen.dtype == np.uint16 and sixteen.shape == (90, 130, 3)
    assert (tmp_path / "out1" / "a.jpg").read_bytes() == (tmp_path / "out2" / "a.jpg").read_bytes()
    assert np.array_equal(sixteen, tifffile.imread(tmp_path / "out2" / "b.tif"))
    other_seed = run("enhance", photos / "b.tif", tmp_path / "out3", "--weights", trained, "--seed", "4", "--steps", "2")
    assert other_seed.exit_code == 0
    assert not np.array_equal(sixteen, tifffile.imread(tmp_path / "out3" / "b.tif"))


def test_ip2p_options_are_refused_for_other_models_and_export_onnx_says_why(trained, look, run, tmp_path):
    photo = save_rgb(tmp_path / "p.png")
    refused = run("enhance", photo, tmp_path / "o", "--lut", look, "--image-guidance", "2")
    assert refused.exit_code == 2 and "ip2p checkpoints only" in refused.stderr
    onnx = run("export", trained, "-o", tmp_path / "x.onnx")
    assert onnx.exit_code == 2 and "diffusion pipeline" in onnx.stderr
    assert len(onnx.stderr.strip().splitlines()) == 1
    cube = run("export", trained, "-o", tmp_path / "one.cube", "--image", photo, "--size", "9")
    assert cube.exit_code == 0, cube.output
    assert "LUT_3D_SIZE 9" in (tmp_path / "one.cube").read_text()


def test_evaluate_scores_an_ip2p_checkpoint(tiny, trained, run):
    _folder, _base, pairs = tiny
    result = run("evaluate", pairs, "--weights", trained, "--split", "val")
    assert result.exit_code == 0, result.output
    assert "look" in result.stdout


def test_missing_base_is_one_line_saying_what_to_download(tiny, trained, run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    _folder, _base, pairs = tiny
    hub = run("train", pairs, "--model", "ip2p", "--pretrained", "someone/not-downloaded", "-o", tmp_path / "x.safetensors")
    assert hub.exit_code == 2
    assert "hf download someone/not-downloaded" in hub.stderr and len(hub.stderr.strip().splitlines()) == 1
    gone = run("train", pairs, "--model", "ip2p", "--pretrained", tmp_path / "no-such-folder", "-o", tmp_path / "y.safetensors")
    assert gone.exit_code == 2 and "does not exist" in gone.stderr
    photo = save_rgb(tmp_path / "p.png")
    moved = run("enhance", photo, tmp_path / "o", "--weights", trained, "--pretrained", "someone/not-downloaded")
    assert moved.exit_code == 2 and "hf download" in moved.stderr and len(moved.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


#: With diffusers unimportable (a meta-path blocker), as on an install without the extra: import every
#: module (none may pull diffusers in), then run the commands given as JSON argv lists through the CLI.
BLOCKED = """
import json, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'diffusers':
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
sys.meta_path.insert(0, Blocker())
import autohdr_cli.cli, autohdr_cli.train, autohdr_cli.checkpoint, autohdr_cli.pipeline
import autohdr_cli.inference, autohdr_cli.evaluate, autohdr_cli.export, autohdr_cli.models
from typer.testing import CliRunner
results = [CliRunner().invoke(autohdr_cli.cli.app, args) for args in json.loads(sys.argv[1])]
print(json.dumps({"imported": [m for m in ("diffusers", "transformers") if m in sys.modules],
                  "results": [[r.exit_code, r.stdout, r.stderr] for r in results]}))
"""


def test_without_the_extra_ip2p_is_one_line_naming_it_and_nothing_else_imports_diffusers(tiny, trained, tmp_path):
    _folder, base, pairs = tiny
    photo = save_rgb(tmp_path / "p.png")
    commands = [
        ["train", str(pairs), "--model", "ip2p", "--pretrained", str(base), "-o", str(tmp_path / "x.safetensors")],
        ["enhance", str(photo), str(tmp_path / "o"), "--weights", str(trained)],
        ["info", str(trained)],  # described from the file alone
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", BLOCKED, json.dumps(commands)], capture_output=True, text=True,
                          env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["imported"] == []
    (train_code, _, train_err), (enhance_code, _, enhance_err), (info_code, info_out, _) = report["results"]
    for code, err in ((train_code, train_err), (enhance_code, enhance_err)):
        assert code == 2 and "pip install 'autohdr[ip2p]'" in err and len(err.strip().splitlines()) == 1
    assert info_code == 0 and "ip2p" in info_out


def test_stable_diffusion_base_is_widened_to_read_the_photo_and_trains_the_whole_unet(tmp_path):
    from autohdr_cli.models import build

    base = build_tiny_base(tmp_path, in_channels=4)
    model = build("ip2p", {"pretrained": str(base), **FAST})
    assert model.unet.conv_in.in_channels == 8 and model.config.lora_rank == 0
    assert not model.unet.conv_in.weight[:, 4:].any()  # the new channels start at zero
    saved = model.state_dict()
    assert set(saved) == {f"unet.{name}" for name, _ in model.unet.named_parameters()}
    source, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    loss, parts = model.training_loss(source, target, torch.zeros(2, dtype=torch.long))
    loss.backward()
    assert model.unet.conv_in.weight.grad is not None and "mse" in parts
    assert model.vae.encoder.conv_in.weight.grad is None  # the VAE stays frozen


def test_carry_fits_a_global_edit_from_a_small_copy_and_applies_it_at_full_size():
    torch.manual_seed(0)
    full = torch.rand(3, 1, 1) * 0.3 + torch.linspace(0, 1, 480)[None, None, :] * torch.rand(3, 360, 1) * 0.7

    def edit(image: torch.Tensor) -> torch.Tensor:
        warm = image.clamp(0, 1) ** 0.8 * torch.tensor([1.05, 1.0, 0.9]).view(3, 1, 1)
        return warm.clamp(0, 1)

    small = torch.nn.functional.interpolate(full[None], size=(90, 120), mode="bilinear", antialias=True)[0]
    lut = fit_lut(small, edit(small), size=17)
    carried = apply_lut(full[None], lut)[0]
    mse = float(((carried - edit(full)) ** 2).mean())
    assert 10 * np.log10(1 / mse) > 40  # the full-size result matches the edit made at full size
