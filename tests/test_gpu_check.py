"""benchmarks/gpu_check.py never rots: its quick CPU run exercises every code path a GPU run takes.

The check itself runs on a GPU machine (see benchmarks/README.md); here it runs CPU against CPU on
tiny photos, in a subprocess as it would be run, and cut short by its deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = ("agreement", "speed", "folder", "training")

sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_check_lib import Budget, attempt, markdown_tables  # noqa: E402


def _run(*args: str | Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick CPU run of every section (a generous deadline: shared CI machines are slow)."""
    out = tmp_path_factory.mktemp("gpu_check") / "results.json"
    done = _run("--device", "cpu", "--quick", "--deadline", 900, "--out", out)
    return done, out


def test_quick_cpu_run_has_rows_for_every_section_and_the_cpu_agrees_with_itself(quick_run):
    done, out = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    rows = results["rows"]
    assert {row["section"] for row in rows} == set(SECTIONS)
    assert not [row for row in rows if row["status"] in ("fail", "error")], rows
    agreement = [row for row in rows if row["section"] == "agreement"]
    assert {row["backend"] for row in agreement} == {".cube", "lut", "nilut", "localtone", "localtone-lut", "nafnet", "diffir"}
    assert {row["photo"] for row in agreement} == {"8-bit", "16-bit", "RGBA"}
    assert all(row["status"] == "pass" and row["max_levels"] <= 1 for row in agreement)
    measured = {section: [row for row in rows if row["section"] == section and row["status"] == "ok"]
                for section in SECTIONS[1:]}
    assert all(measured.values()), measured  # each section measured something on the CPU
    assert any(row["run"].startswith("torchrun") for row in measured["training"])
    assert results["meta"]["missing"] == {}
    for section in SECTIONS:  # the table for pasting
        assert f"### {section}" in done.stdout


def test_a_tiny_deadline_still_writes_valid_json_with_skipped_rows(quick_run, tmp_path):
    _done, earlier = quick_run
    out = tmp_path / "results.json"
    shutil.copy(earlier, out)
    done = _run("--device", "cpu", "--quick", "--deadline", 3, "--sections", "agreement,training", "--out", out,
                timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {row["section"] for row in rows} == set(SECTIONS)  # the other sections' rows are kept
    rerun = [row for row in rows if row["section"] in ("agreement", "training")]
    assert rerun and all(row["status"] in ("skipped", "ok", "pass") for row in rerun)
    assert any(row["status"] == "skipped" for row in rerun)


def test_a_measurement_past_the_deadline_is_cut_and_the_next_one_skipped():
    rows: list[dict] = []
    budget = Budget(1.0)
    started = time.monotonic()
    attempt(rows, budget, {"item": "slow"}, lambda: time.sleep(30) or {"status": "ok"})
    attempt(rows, budget, {"item": "next"}, lambda: {"status": "ok"}, needs=5)
    attempt(rows, Budget(60), {"item": "broken"}, lambda: 1 / 0)
    assert time.monotonic() - started < 10
    assert [(row["item"], row["status"]) for row in rows] == [("slow", "skipped"), ("next", "skipped"), ("broken", "error")]
    assert "ZeroDivisionError" in rows[2]["note"]
    table = markdown_tables([{"section": "demo", **row} for row in rows])
    assert table.splitlines()[2] == "| item | status | note |"


def test_a_missing_dependency_is_named_and_skips_only_what_needs_it(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "kornia.py").write_text("raise ImportError('kornia is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    deps = subprocess.run([sys.executable, str(SCRIPT), "--deps"], env=env, capture_output=True, text=True, timeout=300)
    assert deps.returncode == 1 and deps.stdout.split() == ["kornia"]
    assert "missing dependency kornia: ImportError: kornia is not installed here" in deps.stderr
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--sections", "training",
                           "--out", out], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["meta"]["missing"].keys() == {"kornia"}
    assert results["rows"] == [{"section": "training", "status": "skipped", "note": "needs kornia (missing)"}]
