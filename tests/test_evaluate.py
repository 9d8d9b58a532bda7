"""``autohdr evaluate``: folders and models scored through the CLI, and the reports parsed back."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autohdr_cli.cube import read_cube
from autohdr_cli.evaluate import TargetScorer, as_written
from autohdr_cli.imageio import Photo, quantize, write_photo
from autohdr_cli.metrics import delta_e2000, psnr, ssim
from autohdr_cli.models.lut import StaticLUT
from autohdr_cli.pairs import find_pairs, split_pairs
from autohdr_cli.inference import enhance_tensor

from conftest import gradient, save_rgb

ONE_LEVEL_PSNR = 20 * math.log10(255)


def _shifted(pixels: np.ndarray, levels: int) -> np.ndarray:
    return np.clip(pixels.astype(np.int16) + levels, 0, 255).astype(np.uint8)


def _folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """source/, target/, pred/ with three good 32x24 photos: one exact, one off by a level, one off by 8."""
    source, target, pred = tmp_path / "source", tmp_path / "target", tmp_path / "pred"
    for number, stem in enumerate(["exact", "one_level", "far"]):
        pixels = np.clip(gradient(24, 32, seed=number), 1, 240).astype(np.uint8)
        save_rgb(source / f"{stem}.png", _shifted(pixels, -1))
        save_rgb(target / f"{stem}.png", pixels)
        save_rgb(pred / f"{stem}.png", _shifted(pixels, {"exact": 0, "one_level": 1, "far": 8}[stem]))
    return pred, target, source


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _scores(report: dict, model: str) -> dict[str, dict]:
    return {photo["stem"]: photo["scores"][model] for photo in report["photos"]}


# ------------------------------------------------------------------------------------------ folders


def test_folders_known_values_and_inf_psnr_in_json_and_csv(tmp_path, run):
    pred, target, source = _folders(tmp_path)
    reports = ["--json", tmp_path / "r.json", "--csv", tmp_path / "r.csv"]
    result = run("evaluate", pred, target, "--source", source, *reports)
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.stdout and "identity" in result.stdout and "inf" in result.stdout
    assert "LPIPS" in result.stdout

    report = _json(tmp_path / "r.json")
    assert report["models"] == ["identity", "result"]
    scores = _scores(report, "result")
    assert scores["exact"]["psnr"] == "inf"  # JSON has no infinity: the string, documented
    assert float(scores["exact"]["psnr"]) == math.inf
    assert scores["exact"]["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert scores["exact"]["delta_e2000"] == 0.0
    assert scores["one_level"]["psnr"] == pytest.approx(ONE_LEVEL_PSNR, abs=1e-3)
    assert scores["far"]["psnr"] == pytest.approx(ONE_LEVEL_PSNR - 20 * math.log10(8), abs=0.05)
    assert scores["far"]["delta_e2000"] > scores["one_level"]["delta_e2000"] > 0
    identity = _scores(report, "identity")
    assert identity["exact"]["psnr"] == pytest.approx(ONE_LEVEL_PSNR, abs=0.05)  # source is one level down
    summary = report["summary"]["result"]
    assert summary["photos"] == 3
    assert summary["psnr"]["mean"] == "inf" and summary["psnr"]["worst"] == pytest.approx(scores["far"]["psnr"])
    assert summary["delta_e2000"]["worst"] == pytest.approx(scores["far"]["delta_e2000"])
    assert report["problems"] == []

    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as f:
        rows = {row["stem"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"exact", "one_level", "far"}
    assert float(rows["exact"]["result.psnr"]) == math.inf
    assert float(rows["one_level"]["result.psnr"]) == pytest.approx(ONE_LEVEL_PSNR, abs=1e-3)
    assert float(rows["far"]["identity.delta_e2000"]) == pytest.approx(identity["far"]["delta_e2000"])
    assert rows["far"]["width"] == "32" and rows["far"]["height"] == "24"


def test_folders_with_missing_mismatched_and_damaged_files_list_each_and_exit_1(tmp_path, run):
    pred, target, source = _folders(tmp_path)
    save_rgb(pred / "extra.png", gradient(24, 32))  # a result with no target
    save_rgb(target / "unscored.png", gradient(24, 32))  # a target with no result
    save_rgb(pred / "sub" / "small.png", gradient(20, 32))  # size differs from its target
    save_rgb(target / "sub" / "small.png", gradient(24, 32))
    save_rgb(source / "sub" / "small.png", gradient(24, 32))
    (pred / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    save_rgb(target / "broken.png", gradient(24, 32))
    save_rgb(source / "broken.png", gradient(24, 32))
    result = run("evaluate", pred, target, "--source", source, "--json", tmp_path / "r.json")
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert f"{pred / 'extra.png'}: no matching file in {target}" in lines
    assert f"{target / 'unscored.png'}: no matching file in {pred}" in lines
    assert any(line.startswith(f"{pred / 'sub' / 'small.png'}: size 32x20 differs from") for line in lines)
    assert any(line.startswith(f"{pred / 'broken.png'}: ") for line in lines)
    assert len(lines) == 4, lines
    report = _json(tmp_path / "r.json")
    assert sorted(p["stem"] for p in report["photos"]) == ["exact", "far", "one_level"]  # the rest went on
    assert len(report["problems"]) == 4


def test_folders_match_by_stem_across_formats_and_subfolders(tmp_path, run):
    pixels = gradient(24, 32, seed=5)
    save_rgb(tmp_path / "t" / "a" / "room.png", pixels)
    save_rgb(tmp_path / "p" / "a" / "room.tif", pixels)  # same stem, other format: still a match
    save_rgb(tmp_path / "t" / "room.png", pixels)  # another folder: another stem
    result = run("evaluate", tmp_path / "p", tmp_path / "t", "--json", tmp_path / "r.json")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"{tmp_path / 't' / 'room.png'}: no matching file in {tmp_path / 'p'}"
    report = _json(tmp_path / "r.json")
    assert [p["stem"] for p in report["photos"]] == ["a/room"]
    assert report["models"] == ["result"]
    assert report["photos"][0]["scores"]["result"]["psnr"] == "inf"


def test_a_file_unmatched_in_two_roles_is_listed_once(tmp_path, run):
    pred, target, _ = _folders(tmp_path)
    save_rgb(pred / "extra.png", gradient(24, 32))
    result = run("evaluate", pred, target, "--source", pred)  # the results scored as their own originals
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"{pred / 'extra.png'}: no matching file in {target}"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["a", "b", "c"], "PRED_DIR TARGET_DIR"),
        (["{p}", "{t}", "--weights", "x.safetensors"], "--weights"),
        (["{p}", "--source", "{t}"], "--source"),
        (["{p}", "--split", "test"], "--split"),
        (["{p}", "--val-split", "1.5"], "--val-split"),
        (["{p}", "--device", "toaster"], "--device"),
        (["{p}", "{t}/nowhere"], "not a folder"),
        (["{t}"], "no before/after sub-folders"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, run, args, message):
    pred, target, _ = _folders(tmp_path)
    result = run("evaluate", *[a.format(p=pred, t=target) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------- models


def _pairs_with_look(root: Path, look: Path, count: int, dtype=np.uint8) -> None:
    """source/ and target/, each target being exactly what the look writes for its source."""
    model = StaticLUT.from_cube(read_cube(look))
    (root / "source").mkdir(parents=True)
    (root / "target").mkdir(parents=True)
    for number in range(count):
        pixels = gradient(24, 32, seed=10 + number)
        if dtype == np.uint16:
            pixels = pixels.astype(np.uint16) * 257 + np.uint16(number)
        source = Photo(pixels)
        result = enhance_tensor(model, torch.from_numpy(source.to_float()))
        written = quantize(result.permute(1, 2, 0).numpy(), dtype)
        write_photo(root / "source" / f"p{number}.png", source)
        write_photo(root / "target" / f"p{number}.png", Photo(written))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_models_are_scored_on_the_values_as_written_beside_identity_with_timing(tmp_path, run, look, dtype):
    (tmp_path / "pairs").mkdir()
    _pairs_with_look(tmp_path / "pairs", look, 2, dtype)
    result = run("evaluate", tmp_path / "pairs", "--lut", look, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "s/photo" in result.stdout and "MP/s" in result.stdout
    report = _json(tmp_path / "r.json")
    assert report["models"] == ["identity", "warm"]
    # The targets are the look's output rounded to the file's levels: scored as written, they match
    # exactly. Scored on the unrounded floats, PSNR would be finite (about 59 dB for 8 bits).
    for scores in _scores(report, "warm").values():
        assert scores["psnr"] == "inf"
        assert scores["delta_e2000"] == 0.0
        assert scores["seconds"] > 0
    for scores in _scores(report, "identity").values():
        assert scores["delta_e2000"] > 1.0
        assert scores["seconds"] is None
    summary = report["summary"]
    assert summary["warm"]["seconds_per_photo"] > 0
    assert summary["warm"]["megapixels_per_second"] > 0
    assert summary["identity"]["seconds_per_photo"] is None


def test_validation_split_is_the_one_training_uses(tmp_path, run, look):
    (tmp_path / "pairs").mkdir()
    _pairs_with_look(tmp_path / "pairs", look, 5)
    args = ["evaluate", tmp_path / "pairs", "--lut", look, "--split", "val", "--val-split", "0.4", "--seed", "3"]
    result = run(*args, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    _, expected = split_pairs(find_pairs(tmp_path / "pairs").pairs, 0.4, seed=3)
    assert len(expected) == 2
    assert sorted(p["stem"] for p in _json(tmp_path / "r.json")["photos"]) == sorted(p.stem for p in expected)


def test_a_bad_model_file_is_a_usage_error_and_nothing_is_scored(tmp_path, run, look):
    (tmp_path / "pairs").mkdir()
    _pairs_with_look(tmp_path / "pairs", look, 1)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint at all")
    (tmp_path / "bad.cube").write_text("LUT_3D_SIZE 2\nDOMAIN_MIN nan 0 0\n" + "0 0 0\n" * 8)
    for bad in ("--weights", tmp_path / "bad.safetensors"), ("--lut", tmp_path / "bad.cube"):
        result = run("evaluate", tmp_path / "pairs", *bad, "--lut", look, "--csv", tmp_path / "r.csv")
        assert result.exit_code == 2
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert result.stderr.startswith(f"autohdr: error: {bad[1]}: ")
        assert not (tmp_path / "r.csv").exists()


def test_an_unmatched_photo_is_reported_and_the_models_still_run(tmp_path, run, look):
    (tmp_path / "pairs").mkdir()
    _pairs_with_look(tmp_path / "pairs", look, 1)
    sources = tmp_path / "pairs" / "source"
    (sources / "lonely.png").write_bytes((sources / "p0.png").read_bytes())
    result = run("evaluate", tmp_path / "pairs", "--lut", look, "--csv", tmp_path / "r.csv")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{tmp_path / 'pairs' / 'source' / 'lonely.png'}: no matching file")
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert float(rows[0]["warm.psnr"]) == math.inf
    assert float(rows[0]["warm.seconds"]) > 0
    assert float(rows[0]["identity.psnr"]) < 60


# --------------------------------------------------------------------------------------------- HTML


class _ReportParser(HTMLParser):
    """Collects the photo sections (stem, ΔE) and the images of a report page."""

    def __init__(self):
        super().__init__()
        self.sections: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and attrs.get("class") == "photo":
            section = {"stem": attrs["data-stem"], "delta_e": float(attrs["data-delta-e"]), "images": []}
            self.sections.append(section)
        elif tag == "img" and self.sections:
            self.sections[-1]["images"].append(attrs["src"])
        elif tag == "img":
            raise AssertionError("an image outside the photo sections")


def test_html_report_is_self_contained_worst_first_with_a_contact_sheet(tmp_path, run):
    pred, target, source = _folders(tmp_path)
    result = run("evaluate", pred, target, "--source", source, "--html", tmp_path / "report")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    parser = _ReportParser()
    parser.feed(page)
    assert [s["stem"] for s in parser.sections] == ["far", "one_level", "exact"]  # worst ΔE00 first
    deltas = [s["delta_e"] for s in parser.sections]
    assert deltas == sorted(deltas, reverse=True) and deltas[-1] == 0.0
    for section in parser.sections:
        assert len(section["images"]) == 5  # before, its error map, target, result, its error map
        for source_attribute in section["images"]:
            prefix = "data:image/jpeg;base64,"
            assert source_attribute.startswith(prefix)  # embedded: nothing to fetch
            with Image.open(io.BytesIO(base64.b64decode(source_attribute[len(prefix):]))) as thumbnail:
                assert thumbnail.format == "JPEG" and thumbnail.size == (32, 24)
    with Image.open(tmp_path / "report" / "contact_sheet.png") as sheet:
        assert sheet.format == "PNG"
        assert sheet.width > 5 * 32 and sheet.height > 3 * 24
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["contact_sheet.png", "index.html"]


# ------------------------------------------------------------------------------------------ library


def test_banded_scores_equal_the_metrics_on_the_whole_image():
    generator = torch.Generator().manual_seed(7)
    target = torch.rand(3, 70, 40, generator=generator)
    candidate = (target + 0.05 * torch.randn(3, 70, 40, generator=generator)).clamp(0, 1)
    whole = [m(candidate[None], target[None]).item() for m in (psnr, ssim, delta_e2000)]
    for band_pixels in (40 * 11, 40 * 16, 10**6):  # bands of 11 and 16 rows (uneven last band), and none
        score, error_map = TargetScorer(target, band_pixels=band_pixels).score(candidate)
        assert [score.psnr, score.ssim, score.delta_e2000] == pytest.approx(whole, abs=1e-5)
        assert error_map.shape == (70, 40)


def test_as_written_rounds_to_the_levels_of_the_files_sample_type():
    image = torch.tensor([0.0, 0.5, 0.5019, 1.0]).view(1, 1, 4).expand(3, 1, 4)
    assert (as_written(image, np.uint8) * 255).round().tolist()[0][0] == [0, 128, 128, 255]
    sixteen = as_written(image, np.uint16)[0, 0]
    assert torch.allclose(sixteen * 65535, (sixteen * 65535).round(), atol=1e-2)
    assert sixteen[2].item() != as_written(image, np.uint8)[0, 0, 2].item()
    assert torch.equal(as_written(image, np.float32), image)
