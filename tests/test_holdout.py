"""Validation by source: ``--val-list`` holds out exactly the pairs a file names, in train and evaluate."""

from __future__ import annotations

import json

import pytest

from autohdr_cli.checkpoint import load_checkpoint
from autohdr_cli.pairs import PairsError, find_pairs, read_stem_list
from autohdr_cli.train_data import split_folders

from test_train import TINY, run_cli, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_list_entries_may_be_stems_or_file_names_with_comments(tmp_path):
    listing = tmp_path / "held.txt"
    listing.write_text("# the small sources\np1\nsub/p3.jpg  # a file name works too\n\n")
    assert read_stem_list(listing) == {"p1", "sub/p3"}
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(PairsError, match="names no pairs"):
        read_stem_list(tmp_path / "empty.txt")


def test_the_listed_pairs_and_only_they_are_held_out_of_every_folder(tmp_path):
    first, second = write_pairs(tmp_path / "a", count=4), write_pairs(tmp_path / "b", count=3, seed=1)
    listing = tmp_path / "held.txt"
    listing.write_text("p1\np2\n")
    split = split_folders([first, second], 0.2, seed=0, val_list=listing)
    for train_pairs, val_pairs in zip(split.train, split.validation):
        assert {p.stem for p in val_pairs} == {"p1", "p2"}
        assert not {p.stem for p in train_pairs} & {"p1", "p2"}
    # Deterministic whatever the seed: the list decides, not the random split.
    again = split_folders([first, second], 0.5, seed=7, val_list=listing)
    assert [[p.stem for p in t] for t in again.train] == [[p.stem for p in t] for t in split.train]


def test_train_records_the_held_out_source_and_evaluate_scores_exactly_it(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", count=5)
    listing = tmp_path / "held.txt"
    listing.write_text("p0\np3\n")
    out = tmp_path / "lut.safetensors"
    result = run_cli("train", str(pairs), "-o", str(out), "--config", json.dumps(TINY), "--steps", "2",
                     "--batch", "2", "--crop", "16", "--train-size", "32", "--val-list", str(listing), "--quiet")
    assert result.exit_code == 0, result.output
    training = load_checkpoint(out).training
    assert training["val_pairs"] == ["p0", "p3"] and training["train_pairs"] == 3
    assert training["val_list"] == "held.txt"

    scores = tmp_path / "scores.json"
    result = run_cli("evaluate", str(pairs), "--weights", str(out), "--val-list", str(listing),
                     "--json", str(scores), "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p["stem"] for p in json.loads(scores.read_text())["photos"]) == ["p0", "p3"]


@pytest.mark.parametrize("content, message", [
    ("p0\nnot_a_pair\n", "1 listed pair(s) not found: not_a_pair"),
    ("p0\np1\np2\np3\np4\n", "none is left to train on"),
])
def test_a_bad_list_is_one_line_and_exit_2(tmp_path, content, message):
    pairs = write_pairs(tmp_path / "pairs", count=5)
    listing = tmp_path / "held.txt"
    listing.write_text(content)
    result = run_cli("train", str(pairs), "-o", str(tmp_path / "x.safetensors"), "--config", json.dumps(TINY),
                     "--steps", "1", "--val-list", str(listing), "--quiet")
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "x.safetensors").exists()


def test_evaluate_refuses_a_list_naming_unknown_pairs(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", count=3)
    listing = tmp_path / "held.txt"
    listing.write_text("p9\n")
    result = run_cli("evaluate", str(pairs), "--val-list", str(listing), "--quiet")
    assert result.exit_code == 2 and "p9" in result.output
    assert len(find_pairs(pairs).pairs) == 3


def _train_tiny(tmp_path, name, *extra):
    pairs = tmp_path / "pairs"
    if not pairs.exists():
        write_pairs(pairs, count=4)
    out = tmp_path / f"{name}.safetensors"
    result = run_cli("train", str(pairs), "-o", str(out), "--steps", "2", "--batch", "2", "--crop", "16",
                     "--train-size", "32", "--quiet", *extra)
    return out, result


def test_init_starts_from_a_checkpoint_of_the_same_model_and_records_it(tmp_path):
    first, result = _train_tiny(tmp_path, "first", "--config", json.dumps(TINY), "--seed", "3")
    assert result.exit_code == 0, result.output
    # No --config: the run takes the starting checkpoint's shapes, and its weights.
    second, result = _train_tiny(tmp_path, "second", "--init", str(first), "--lr", "1e-12")
    assert result.exit_code == 0, result.output
    assert f"starting from {first}" in result.output
    start, tuned = load_checkpoint(first), load_checkpoint(second)
    assert tuned.config == start.config and tuned.training["init"] == "first.safetensors"
    for key, value in start.model.state_dict().items():
        assert (tuned.model.state_dict()[key] - value).abs().max().item() < 1e-4, key  # lr ~0: barely moved


def test_init_with_a_config_that_changes_shapes_starts_cold_with_a_warning(tmp_path):
    first, _ = _train_tiny(tmp_path, "first", "--config", json.dumps(TINY))
    bigger = dict(TINY, lut_size=TINY["lut_size"] + 2)
    second, result = _train_tiny(tmp_path, "second", "--init", str(first), "--config", json.dumps(bigger))
    assert result.exit_code == 0, result.output
    assert "warning: --init" in result.output and "starting from random weights" in result.output
    assert load_checkpoint(second).config["lut_size"] == bigger["lut_size"]


def test_init_from_another_model_or_a_bad_file_is_one_line_and_exit_2(tmp_path):
    first, _ = _train_tiny(tmp_path, "first", "--config", json.dumps(TINY))
    _, result = _train_tiny(tmp_path, "second", "--init", str(first), "--model", "nafnet")
    assert result.exit_code == 2 and "holds a lut model; it cannot start --model nafnet" in result.output
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    _, result = _train_tiny(tmp_path, "third", "--init", str(junk))
    assert result.exit_code == 2 and "--init" in result.output and "junk.safetensors" in result.output


def test_resume_with_another_held_out_list_is_refused(tmp_path):
    listing = tmp_path / "held.txt"
    listing.write_text("p1\n")
    first, result = _train_tiny(tmp_path, "first", "--config", json.dumps(TINY), "--val-list", str(listing))
    assert result.exit_code == 0, result.output
    moved = tmp_path / "moved.txt"
    moved.write_text("p1.jpg\n")  # the same pair, named another way: still the same run
    result = run_cli("train", str(tmp_path / "pairs"), "-o", str(first), "--resume", str(first), "--steps", "3",
                     "--batch", "2", "--crop", "16", "--train-size", "32", "--quiet", "--val-list", str(moved))
    assert result.exit_code == 0, result.output
    other = tmp_path / "other.txt"
    other.write_text("p2\n")
    for extra in (["--val-list", str(other)], []):
        result = run_cli("train", str(tmp_path / "pairs"), "-o", str(first), "--resume", str(first), "--steps", "4",
                         "--batch", "2", "--crop", "16", "--train-size", "32", "--quiet", *extra)
        assert result.exit_code == 2 and "holds out other pairs than the resumed run did (p1)" in result.output
