"""Fuzzing: mutated ``.safetensors`` and ``.cube`` files over fixed seeds, through ``autohdr info`` and
``autohdr enhance``, in a subprocess whose memory is capped and whose time is bounded (see
``model_file_fuzz.py``). Every case is a success (exit 0) or one ``autohdr: error: FILE: reason`` line
(exit 2); none may raise, allocate past the cap or hang."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEMORY_CAP = 3 << 30  # address space: torch alone maps ~1 GB; a hostile allocation goes far beyond
SEEDS = 240


def _cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def test_mutated_model_files_end_in_success_or_one_line(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent))
    result = subprocess.run(
        [sys.executable, str(HERE / "model_file_fuzz.py"), "0", str(SEEDS), str(tmp_path)],
        capture_output=True, text=True, timeout=600, preexec_fn=_cap_memory, env=env, cwd=HERE.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["cases"] == 2 * SEEDS
    assert summary["failures"] == [], json.dumps(summary["failures"][:5], indent=1)
    assert summary["outcomes"]["2"] > SEEDS // 2  # most mutations are refused...
    assert summary["outcomes"].get("0", 0) > 0  # ...and some are harmless and still work
    assert summary["slowest_seconds"] < 30
