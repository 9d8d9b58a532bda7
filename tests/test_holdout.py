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
