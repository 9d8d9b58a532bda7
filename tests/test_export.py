"""``autohdr export`` and ``autohdr info``: .cube files that other programs apply like the model does,
ONNX and torch.export programs that reproduce it at other sizes, checkpoint re-saves, and the summary.

Exports are slow-ish (tracing), so every backend is traced once per module and shared.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from autohdr_cli.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from autohdr_cli.cube import read_cube
from autohdr_cli.export import (
    CHECK_SHAPE, TRACE_SHAPE, ExportFailed, check_close, needs_image, onnx_bytes, pt2_bytes, trace_program,
)
from autohdr_cli.imageio import load_image, quantize
from autohdr_cli.models import MODELS, build
from autohdr_cli.models.lut import identity_lut, table_to_lut
from autohdr_cli.inference import enhance_tensor, is_global

from conftest import gradient, save_rgb, warm_table

#: Small configs for the backends we know; any other registered backend is built with its defaults.
TINY_CONFIGS = {
    "cube": {"size": 9},
    "lut": {"lut_size": 9, "num_basis": 2, "thumbnail_size": 16, "widths": [4, 8], "histogram_bins": 4, "hidden": 8},
    "nilut": {"width": 8, "depth": 2, "num_styles": 2, "style_names": ["warm", "cool"], "grid_size": 9},
    "nafnet": {"width": 4, "enc_blocks": [0], "middle_blocks": 1, "dec_blocks": [0]},
    "diffir": {"width": 4, "enc_blocks": [1], "middle_blocks": 1, "dec_blocks": [1], "heads": [1, 2], "prior_dim": 16,
               "cpen_width": 4, "cpen_blocks": 1, "prior_size": 32, "denoiser_blocks": 1},
    "localtone": {"hidden": 8, "depth": 1, "context_size": 32},
}
# Models built on a downloaded base (ip2p) are exported and described in test_ip2p.py; models that
# refuse a graph are tested for the refusal in their own file.
BACKENDS = sorted(name for name in MODELS if not getattr(MODELS[name], "needs_base", False) and not getattr(MODELS[name], "export_refusal", None))
GLOBAL_BACKENDS = [name for name in BACKENDS if is_global(build(name, TINY_CONFIGS.get(name)))]
OTHER_BACKENDS = [name for name in BACKENDS if name not in GLOBAL_BACKENDS]


def give_look(name: str, model: torch.nn.Module) -> torch.nn.Module:
    """Turn a fresh (identity) model into one with a visible, smooth look, the same on every run."""
    generator = torch.Generator().manual_seed(7)
    warm = table_to_lut(warm_table(9))
    with torch.no_grad():
        if name == "cube":
            model.lut.copy_(warm)
        elif name == "lut":
            model.basis[1].copy_(warm - identity_lut(9))
            model.basis_weights.bias[1] = 0.6
            model.basis_weights.weight.copy_(torch.randn(model.basis_weights.weight.shape, generator=generator) * 0.5)
        else:
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model.eval()


def tiny_model(name: str) -> torch.nn.Module:
    """A small registered model with a look."""
    return give_look(name, build(name, TINY_CONFIGS.get(name)))


def model_output_uint8(model: torch.nn.Module, photo: Path) -> np.ndarray:
    """What the model makes of a photo, as 8-bit ``H x W x 3``."""
    result = enhance_tensor(model, torch.from_numpy(load_image(photo)))
    return quantize(result.numpy().transpose(1, 2, 0), np.uint8)


def mean_level_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two 8-bit images, in levels."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Checkpoints of every backend with a look, and a test photo, shared by the module."""
    folder = tmp_path_factory.mktemp("export")
    for name in BACKENDS:
        save_checkpoint(folder / f"{name}.safetensors", tiny_model(name), training={"steps": 12, "data": "tests"})
    save_rgb(folder / "photo.png", gradient(48, 64, seed=3))
    return folder


@pytest.fixture(scope="module")
def cubes(workdir) -> dict[str, Path]:
    """Every global backend exported as a .cube at the default size, through the CLI."""
    from typer.testing import CliRunner

    from autohdr_cli.cli import app

    made = {}
    for name in GLOBAL_BACKENDS:
        target = workdir / f"{name}.cube"
        args = ["export", str(workdir / f"{name}.safetensors"), "-o", str(target)]
        if needs_image(build(name, TINY_CONFIGS.get(name))):
            args += ["--image", str(workdir / "photo.png")]
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        made[name] = target
    return made


@pytest.fixture(scope="module")
def programs(workdir) -> dict[str, tuple[bytes, bytes]]:
    """Every backend as (pt2 bytes, ONNX bytes), from one trace each."""
    pytest.importorskip("onnxruntime")
    made = {}
    for name in BACKENDS:
        model = load_checkpoint(workdir / f"{name}.safetensors").model
        program = trace_program(model)
        pt2, _ = pt2_bytes(model, program)
        onnx_data, _ = onnx_bytes(model, program)
        made[name] = (pt2, onnx_data)
    return made


# ------------------------------------------------------------------------------------------------ cube


@pytest.mark.parametrize("name", GLOBAL_BACKENDS)
def test_cube_applied_by_pillow_matches_the_model(name, workdir, cubes):
    cube = read_cube(cubes[name])
    assert cube.size == 33
    photo = workdir / "photo.png"
    original = np.asarray(Image.open(photo).convert("RGB"))
    filtered = Image.fromarray(original).filter(ImageFilter.Color3DLUT(cube.size, cube.table.reshape(-1), channels=3))
    expected = model_output_uint8(load_checkpoint(workdir / f"{name}.safetensors").model, photo)
    assert mean_level_difference(expected, original) > 3, "the test look must be visible"
    assert mean_level_difference(np.asarray(filtered), expected) <= 1.0


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
@pytest.mark.parametrize("name", GLOBAL_BACKENDS)
def test_cube_applied_by_ffmpeg_matches_the_model(name, workdir, cubes, tmp_path):
    photo = workdir / "photo.png"
    out = tmp_path / "ffmpeg.png"
    command = [
        "ffmpeg", "-v", "error", "-y", "-i", str(photo),
        "-vf", f"lut3d=file='{cubes[name]}':interp=trilinear", "-pix_fmt", "rgb24", str(out),
    ]
    subprocess.run(command, check=True, timeout=60)
    expected = model_output_uint8(load_checkpoint(workdir / f"{name}.safetensors").model, photo)
    assert mean_level_difference(np.asarray(Image.open(out).convert("RGB")), expected) <= 1.0


def test_cube_is_red_fastest_over_0_1_and_exact_at_the_models_size(workdir, run, tmp_path):
    target = tmp_path / "exact.cube"
    assert run("export", workdir / "cube.safetensors", "-o", target, "--size", "9", "--title", "Warm").exit_code == 0
    text = target.read_text()
    assert 'TITLE "Warm"' in text and "LUT_3D_SIZE 9" in text and "DOMAIN_M" not in text
    cube = read_cube(target)
    np.testing.assert_allclose(cube.table, warm_table(9), atol=1e-6)
    # Second data row: input (r, g, b) = (1/8, 0, 0) when red runs fastest.
    rows = [line for line in text.splitlines() if line and line[0].isdigit()]
    assert [float(v) for v in rows[1].split()] == pytest.approx(warm_table(9)[0, 0, 1], abs=1e-6)


def test_cube_size_option_and_its_limits(workdir, run, tmp_path):
    assert run("export", workdir / "cube.safetensors", "-o", tmp_path / "two.cube", "--size", "2").exit_code == 0
    assert read_cube(tmp_path / "two.cube").size == 2
    result = run("export", workdir / "cube.safetensors", "-o", tmp_path / "big.cube", "--size", "257")
    assert result.exit_code == 2
    assert not (tmp_path / "big.cube").exists()


@pytest.mark.skipif("lut" not in MODELS, reason="the image-adaptive LUT is not registered")
def test_image_adaptive_lut_needs_an_image_for_a_cube(workdir, run, tmp_path):
    result = run("export", workdir / "lut.safetensors", "-o", tmp_path / "x.cube")
    assert result.exit_code == 2
    assert "--image" in result.stderr
    assert not (tmp_path / "x.cube").exists()


@pytest.mark.skipif("nilut" not in MODELS, reason="NILUT is not registered")
def test_nilut_cube_per_look_and_blend(workdir, run, tmp_path):
    tables = {}
    for style in ("warm", "cool", "0.5,0.5"):
        target = tmp_path / f"{style}.cube"
        result = run("export", workdir / "nilut.safetensors", "-o", target, "--size", "9", "--style", style)
        assert result.exit_code == 0, result.stderr
        tables[style] = read_cube(target).table
    assert np.abs(tables["warm"] - tables["cool"]).max() > 0.01
    model = load_checkpoint(workdir / "nilut.safetensors").model
    model.set_style([0.5, 0.5])
    blend = model.predict_lut(torch.zeros(1, 3, 1, 1))[0].detach().numpy().transpose(1, 2, 3, 0)
    np.testing.assert_allclose(tables["0.5,0.5"], blend, atol=2e-6)
    result = run("export", workdir / "nilut.safetensors", "-o", tmp_path / "x.cube", "--style", "sepia")
    assert result.exit_code == 2 and "warm, cool" in result.stderr


@pytest.mark.parametrize("name", OTHER_BACKENDS)
def test_a_model_that_is_not_global_cannot_be_a_cube(name, workdir, run, tmp_path):
    result = run("export", workdir / f"{name}.safetensors", "-o", tmp_path / "x.cube")
    assert result.exit_code == 2
    assert "cannot be a LUT" in result.stderr


# ---------------------------------------------------------------------------------------- onnx and pt2


@pytest.mark.parametrize("name", BACKENDS)
def test_onnx_reproduces_the_model_at_another_size_and_batch(name, workdir, programs):
    import onnx
    import onnxruntime

    data = programs[name][1]
    proto = onnx.load_from_string(data)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 20
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]  # batch, height, width are free
    assert {p.key: p.value for p in proto.metadata_props}["autohdr.model"] == name
    images = torch.rand(2, 3, 37, 45, generator=torch.Generator().manual_seed(11))
    assert images.shape[2:] not in (TRACE_SHAPE[2:], CHECK_SHAPE[2:])
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    output = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    model = load_checkpoint(workdir / f"{name}.safetensors").model
    with torch.inference_mode():
        expected = model(images).numpy()
    assert np.abs(expected - images.numpy()).mean() > 1e-3, "the test look must change the images"
    assert np.abs(output - expected).max() <= 1e-4


@pytest.mark.parametrize("name", BACKENDS)
def test_pt2_reloads_and_reproduces_the_model_at_another_size(name, workdir, programs, tmp_path):
    path = tmp_path / f"{name}.pt2"
    path.write_bytes(programs[name][0])
    program = torch.export.load(path)
    images = torch.rand(1, 3, 29, 50, generator=torch.Generator().manual_seed(12))
    model = load_checkpoint(workdir / f"{name}.safetensors").model
    with torch.inference_mode():
        expected = model(images)
        output = program.module()(images)
    assert torch.abs(output - expected).max() <= 1e-4


def test_export_command_writes_a_checked_onnx_file(workdir, run, tmp_path):
    pytest.importorskip("onnxruntime")
    target = tmp_path / "look.onnx"
    result = run("export", workdir / "cube.safetensors", "-o", target)
    assert result.exit_code == 0, result.stderr
    assert target.stat().st_size > 1000
    assert "max abs diff" in result.stdout and "x".join(map(str, CHECK_SHAPE)) in result.stdout


def test_a_mismatch_is_an_export_failure():
    expected = np.zeros((1, 3, 4, 4), np.float32)
    assert check_close("test", expected + 5e-5, expected) == pytest.approx(5e-5)
    with pytest.raises(ExportFailed, match="differs"):
        check_close("test", expected + 2e-4, expected)
    with pytest.raises(ExportFailed):
        check_close("test", expected * np.nan, expected)


def test_options_that_do_not_fit_the_format_are_refused(workdir, run, tmp_path):
    photo = workdir / "photo.png"
    assert run("export", workdir / "cube.safetensors", "-o", tmp_path / "a.onnx", "--image", photo).exit_code == 2
    assert run("export", workdir / "cube.safetensors", "-o", tmp_path / "a.bin").exit_code == 2
    assert run("export", workdir / "cube.safetensors", "-o", tmp_path / "a.bin", "--format", "tflite").exit_code == 2
    assert run("export", tmp_path / "missing.safetensors", "-o", tmp_path / "a.cube").exit_code == 2
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------- safetensors, info


def test_safetensors_resave_edits_metadata_and_keeps_the_model(workdir, run, tmp_path):
    target = tmp_path / "titled.safetensors"
    result = run(
        "export", workdir / "cube.safetensors", "-o", target, "--title", "Warm look", "--meta", "licence=CC-BY-4.0"
    )
    assert result.exit_code == 0, result.stderr
    metadata, tensors = read_metadata(target)
    assert metadata["autohdr.title"] == "Warm look" and metadata["autohdr.licence"] == "CC-BY-4.0"
    original = load_checkpoint(workdir / "cube.safetensors")
    resaved = load_checkpoint(target)
    assert resaved.training == original.training
    assert torch.equal(resaved.model.lut, original.model.lut)
    # Edits carry over a second re-save; an empty value removes a key; the model's own keys are refused.
    again = tmp_path / "again.safetensors"
    assert run("export", target, "-o", again, "--meta", "licence=").exit_code == 0
    metadata, _ = read_metadata(again)
    assert metadata["autohdr.title"] == "Warm look" and "autohdr.licence" not in metadata
    assert run("export", target, "-o", tmp_path / "bad.safetensors", "--meta", "model=nafnet").exit_code == 2


def test_info_shows_model_config_training_parameters_and_size(workdir, run):
    path = workdir / "lut.safetensors" if "lut" in MODELS else workdir / "cube.safetensors"
    result = run("info", path)
    assert result.exit_code == 0, result.stderr
    model = load_checkpoint(path).model
    parameters = sum(p.numel() for p in model.parameters())
    text = result.stdout
    assert f"model:      {load_checkpoint(path).name} ({type(model).__name__})" in text
    assert f"parameters: {parameters:,}" in text
    assert f"({path.stat().st_size:,} bytes)" in text
    assert "steps: 12" in text
    for key in load_checkpoint(path).config:
        assert f"  {key}: " in text
    summary = json.loads(run("info", path, "--json").stdout)
    assert summary["parameters"] == parameters and summary["training"]["steps"] == 12


def test_info_reads_cube_files_and_refuses_bad_ones(run, look, tmp_path):
    result = run("info", look)
    assert result.exit_code == 0
    assert "cube (StaticLUT)" in result.stdout and f"parameters: {3 * 9 ** 3:,}" in result.stdout
    assert "size: 9" in result.stdout
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    result = run("info", bad)
    assert result.exit_code == 2 and "bad.safetensors" in result.stderr


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_nafnet_with_whole_context_exports_and_reproduces_itself(fmt, run, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    # Its statistics come from the unpadded photo: the exported graph must read them there too
    # (export checks the reloaded program against PyTorch and writes nothing if they differ).
    torch.manual_seed(0)
    model = build("nafnet", {"width": 4, "enc_blocks": [1, 1], "dec_blocks": [1, 1], "whole_context": 16})
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("beta", "gamma")) or name.startswith("ending"):
                parameter.normal_(0.0, 0.3)
    save_checkpoint(tmp_path / "whole.safetensors", model.eval())
    result = run("export", tmp_path / "whole.safetensors", "--format", fmt, "-o", tmp_path / f"whole.{fmt}")
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"whole.{fmt}").stat().st_size > 0
