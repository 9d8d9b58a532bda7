"""DiffIR: the model contract, both training stages, the prior and its diffusion, tiling, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from autohdr_cli.checkpoint import load_checkpoint, load_model, save_checkpoint, CheckpointError
from autohdr_cli.models import MODELS, build
from autohdr_cli.models.diffir import PRESETS, DiffIR, DiffIRConfig, linear_beta_schedule, preset
from autohdr_cli.tiling import enhance_tiled
from autohdr_cli.train import stage1_path, train
from conftest import save_rgb

from test_nafnet import photo
from test_train import options_for, run_cli, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(width=4, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1), heads=(1, 2, 2), prior_dim=16,
            cpen_width=4, cpen_blocks=1, prior_size=32, denoiser_blocks=1)
TINY_JSON = json.dumps(TINY)


def tiny_model(seed: int = 0, **changes) -> DiffIR:
    """A tiny stage-2 DiffIR whose every part does something: modulations and ending drawn at random."""
    torch.manual_seed(seed)
    model = DiffIR(DiffIRConfig(**{**TINY, **changes})).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "modulate" in name or "ending" in name:
                parameter.normal_(0.0, 0.2)
    return model


def test_registered_with_the_model_contract():
    assert MODELS["diffir"] is DiffIR and DiffIR.config_class is DiffIRConfig
    assert DiffIR.tileable is True and not hasattr(DiffIR, "predict_lut")
    model = build("diffir", {**TINY, "enc_blocks": [1, 1], "dec_blocks": [1, 1], "heads": [1, 2, 2]})
    assert model.config.enc_blocks == (1, 1) and model.multiple == 4 and model.num_blocks == 5


def test_config_refuses_nonsense():
    for bad in ({"heads": (1, 2)}, {"heads": (3, 2, 2)}, {"stage": 3}, {"timesteps": -1},
                {"beta_start": 0.5, "beta_end": 0.1}, {"dec_blocks": (1,)}):
        with pytest.raises(ValueError):
            DiffIRConfig(**{**TINY, **bad})


def test_presets():
    assert preset("small") == PRESETS["small"] and preset("small", width=8).width == 8 != PRESETS["small"].width
    small = sum(p.numel() for p in DiffIR(preset("small")).parameters())
    assert 300_000 < small < 2_000_000
    assert PRESETS["base"].width == 48 and PRESETS["base"].prior_dim == 256
    with pytest.raises(KeyError):
        preset("huge")


def test_the_papers_beta_schedule():
    betas = linear_beta_schedule(4, 0.1, 0.99)
    assert betas[0] == pytest.approx(0.1) and betas[-1] == pytest.approx(0.99)
    assert torch.all(betas[1:] > betas[:-1])
    model = tiny_model()
    # The last step's signal is almost all noise (so inference may start from pure noise), and the first
    # reverse step ends on the predicted clean prior itself.
    assert model.sqrt_cumulative[-1] ** 2 < 0.01
    assert model.posterior_clean[0] == pytest.approx(1.0) and model.posterior_noisy[0] == pytest.approx(0.0, abs=1e-6)
    assert "sqrt_cumulative" not in model.state_dict()  # rebuilt from the config, not stored


def test_untrained_model_is_the_identity_and_any_size_works():
    model = DiffIR(DiffIRConfig(**TINY)).eval()
    for height, width in ((1, 1), (37, 53), (64, 48)):
        images = photo(height, width) if height > 1 else torch.rand(2, 3, 1, 1)
        with torch.no_grad():
            assert torch.equal(model(images), images)
    changed = tiny_model()
    with torch.no_grad():
        out = changed(photo(37, 53))
    assert out.shape == (1, 3, 37, 53) and out.min() >= 0 and out.max() <= 1
    assert (out - photo(37, 53)).abs().mean() > 1e-3


def test_the_prior_steers_the_result_and_the_seed_is_deterministic():
    model = tiny_model()
    images = photo(40, 48, seed=1)
    with torch.no_grad():
        prior = model.estimate_prior(images)
        assert prior.shape == (1, 16)
        assert torch.equal(model(images), model(images))  # the same seed, the same result
        other = model.apply_prior(images, prior + 1.0)
        assert (other - model.apply_prior(images, prior)).abs().mean() > 1e-3
        model.sampling_seed = 7
        assert not torch.equal(model.estimate_prior(images), prior)
        model.sampling_seed = 0
        assert torch.equal(model.estimate_prior(images), prior)
        # A photo's prior does not depend on the batch it is in.
        both = model.estimate_prior(torch.cat([images, photo(40, 48, seed=2)]))
        assert torch.allclose(both[:1], prior, atol=1e-6)


def test_zero_timesteps_uses_the_condition_directly():
    model = tiny_model(timesteps=0)
    images = photo(32, 32)
    with torch.no_grad():
        first = model.estimate_prior(images)
        model.sampling_seed = 5  # no noise involved at all
        assert torch.equal(model.estimate_prior(images), first)


def test_image_context_is_what_tiles_get_and_it_is_used():
    model = tiny_model()
    images = torch.cat([photo(40, 36, seed=1), photo(40, 36, seed=2) * 0.5])
    with torch.no_grad():
        context = model.image_context(images)
        assert len(context) == 1 + model.num_blocks and context[0].shape == (2, 16)
        assert all(matrix.shape == (2, 4 * 2**level, 4 * 2**level) for matrix, level in zip(context[1:], (0, 1, 2, 1, 0)))
        assert torch.allclose(model(images, context), model(images), atol=1e-5)
        assert torch.allclose(model(images, context[:1]), model(images), atol=1e-6)  # the prior alone
        swapped = [c.flip(0) for c in context]
        assert (model(images, swapped) - model(images)).abs().mean() > 1e-4
    with pytest.raises(ValueError):
        model(images, context[:-1])


def test_attention_is_block_diagonal_per_head_and_rows_sum_to_one():
    model = tiny_model()
    with torch.no_grad():
        matrix = model.image_context(photo(32, 32))[2][0]  # level 2: 8 channels, 2 heads
    assert torch.allclose(matrix.sum(-1), torch.ones(8), atol=1e-5)
    assert torch.all(matrix[:4, 4:] == 0) and torch.all(matrix[4:, :4] == 0)


def test_tiled_matches_untiled_without_seams():
    model = tiny_model()
    images = photo(96, 160, seed=5)
    images[..., :80] *= 0.3  # tiles on either side of this edge see very different pictures
    with torch.inference_mode():
        reference = model(images)
    tiled = enhance_tiled(model, images, tile=64, overlap=32, batch=3)
    assert (reference - images).abs().mean() > 20 / 255
    difference = (tiled - reference).abs()
    assert difference.mean() < 0.05 / 255
    assert difference.mean(dim=(0, 1, 2)).max() < 0.5 / 255 and difference.mean(dim=(0, 1, 3)).max() < 0.5 / 255


def test_both_stages_learn_and_stage2_distils_the_prior():
    torch.manual_seed(0)
    source = photo(32, 32, seed=3).repeat(2, 1, 1, 1)
    target = (source * 1.25 + 0.05).clamp(0, 1)
    model = DiffIR(DiffIRConfig(**TINY, stage=1)).train()
    assert not any(p.requires_grad for p in model.cpen_s2.parameters())

    def fit(steps: int) -> tuple[float, float, dict]:
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        first = None
        for _ in range(steps):
            loss, parts = model.training_loss(source, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            first = first if first is not None else float(loss.detach())
        return first, float(loss.detach()), parts

    first, last, parts = fit(40)
    assert set(parts) == {"charbonnier", "ssim", "delta_e"} and last < 0.5 * first
    frozen_s1 = {k: v.clone() for k, v in model.cpen_s1.state_dict().items()}
    model.begin_stage2()
    assert model.config.stage == 2 and not any(p.requires_grad for p in model.cpen_s1.parameters())
    first, last, parts = fit(40)
    assert set(parts) == {"charbonnier", "ssim", "delta_e", "prior_l1"} and last < first
    assert all(torch.equal(v, model.cpen_s1.state_dict()[k]) for k, v in frozen_s1.items())  # the teacher stays


def test_whole_photos_feed_the_prior_in_training():
    model = tiny_model().train()
    source, target = photo(24, 24, seed=1), photo(24, 24, seed=2)
    whole = torch.rand(1, 6, 32, 32)
    torch.manual_seed(0)
    with_whole, _ = model.training_loss(source, target, None, whole)
    torch.manual_seed(0)
    without, _ = model.training_loss(source, target)
    assert not torch.equal(with_whole, without)


def test_stage1_checkpoint_cannot_enhance_and_says_why(tmp_path):
    model = DiffIR(DiffIRConfig(**TINY, stage=1))
    path = tmp_path / "s1.safetensors"
    save_checkpoint(path, model)
    assert load_checkpoint(path).model.config.stage == 1  # training can still load it
    with pytest.raises(CheckpointError, match="stage-1 DiffIR"):
        load_model(path)


def test_train_cli_runs_both_stages_and_resumes_into_stage2(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", size=(40, 32))
    output = tmp_path / "diffir.safetensors"
    args = ["--model", "diffir", "--config", TINY_JSON, "--crop", "16", "--train-size", "40", "--batch", "2",
            "--quiet", "--val-every", "2"]
    result = run_cli("train", str(pairs), "-o", str(output), "--steps", "4", *args)
    assert result.exit_code == 0, result.output
    assert "stage 1 of DiffIR" in result.output and "stage 2 of DiffIR" in result.output
    first, second = load_checkpoint(stage1_path(output)), load_checkpoint(output)
    assert first.config["stage"] == 1 and first.training["steps"] == 2
    assert second.config["stage"] == 2 and second.training["steps"] == 2 and second.training["stage"] == 2
    assert set(second.training["validation"]) == {"identity", "diffir"}
    assert second.training["clip_grad"] == 1.0  # local models clip their gradients by default
    assert "diffir stage 1 (prior read from the target)" in first.training["validation"]
    # Stage 2 started from stage 1: the DIRformer's weights came along (then moved by 2 steps).
    moved = second.model.dirformer.intro.weight - first.model.dirformer.intro.weight
    assert moved.abs().max() < 0.05

    alone = tmp_path / "alone.safetensors"
    result = run_cli("train", str(pairs), "-o", str(alone), "--steps", "2", "--stage", "1", *args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(alone).config["stage"] == 1
    refused = run_cli("enhance", str(pairs / "source"), str(tmp_path / "out"), "--weights", str(alone))
    assert refused.exit_code == 2 and "stage-1 DiffIR" in refused.output
    scored = run_cli("evaluate", str(pairs), "--weights", str(alone))
    assert scored.exit_code != 0 and "stage-1 DiffIR" in scored.output
    two = ["train", str(pairs), "-o", str(tmp_path / "two.safetensors"), "--steps", "2", "--stage", "2",
           "--resume", str(alone), "--perceptual", "0.3", *args]
    result = run_cli(*two)
    assert result.exit_code == 2 and "--crop 32" in result.output  # LPIPS needs 32 px
    result = run_cli(*two, "--crop", "32")
    assert result.exit_code == 0, result.output
    stage2 = load_checkpoint(tmp_path / "two.safetensors")
    assert stage2.config["stage"] == 2 and stage2.config["perceptual_weight"] == 0.3  # stage 2's own loss

    for bad, message in ((["--stage", "2"], "--resume"), (["--stage", "3"], "--stage")):
        result = run_cli("train", str(pairs), "-o", str(tmp_path / "x.safetensors"), "--steps", "1", *args, *bad)
        assert result.exit_code == 2 and message in result.output
    result = run_cli("train", str(pairs), "-o", str(tmp_path / "x.safetensors"), "--steps", "1", "--stage", "1")
    assert result.exit_code == 2 and "only for --model diffir" in result.output


def test_two_stage_run_resumes_exactly(tmp_path):
    from test_train import InterruptAfter
    from autohdr_cli.pairs import find_pairs
    from autohdr_cli.train_data import load_pairs

    pairs = write_pairs(tmp_path / "pairs", size=(40, 32))
    found = find_pairs(pairs).pairs
    data, validation = load_pairs(found[:4], 40), load_pairs(found[4:], 40)
    # The plain network: pairs handed to train() as they are bring no neighbourhood maps.
    common = dict(model="diffir", config={**TINY, "neighbourhoods": []}, steps=6, crop=16, train_size=40,
                  val_every=100, checkpoint_every=1)
    straight = train(options_for(pairs, tmp_path / "straight.safetensors", **common), data, validation)
    assert straight.steps == 3  # stage 2's share
    cut = tmp_path / "cut.safetensors"
    first = train(options_for(pairs, cut, **common), InterruptAfter(data, 2), validation)
    assert first.stopped_by == "interrupted"
    train(options_for(pairs, cut, resume=stage1_path(cut), **common), data, validation)
    a = load_checkpoint(tmp_path / "straight.safetensors").model.state_dict()
    b = load_checkpoint(cut).model.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_enhance_cli_tiles_diffir_with_a_seed(tmp_path, run):
    model = tiny_model(seed=3)
    weights = tmp_path / "diffir.safetensors"
    save_checkpoint(weights, model)
    pixels = (photo(70, 100, seed=9)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    save_rgb(tmp_path / "in" / "a.png", pixels)
    outputs = []
    for name, seed in (("one", "0"), ("two", "0"), ("three", "11")):
        result = run("enhance", tmp_path / "in", tmp_path / name, "--weights", weights, "--tile", "48",
                     "--tile-overlap", "16", "--seed", seed, "--quiet")
        assert result.exit_code == 0, result.output
        outputs.append(np.asarray(Image.open(tmp_path / name / "a.png").convert("RGB"), dtype=np.float32))
    source = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.inference_mode():
        expected = model(source)[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(outputs[0] - expected).mean() < 0.6
    assert np.abs(outputs[0] - pixels).mean() > 5
    assert np.array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])  # another seed, another starting noise


def test_exports_with_torch_export():
    model = tiny_model()
    images = photo(32, 32)
    exported = torch.export.export(model, (images,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(images), model(images), atol=1e-5)
