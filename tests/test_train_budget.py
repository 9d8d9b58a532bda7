"""Training that uses its budget: time-driven schedule, weight EMA, pairs streamed from disk, precision."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import TINY, TINY_ARGS, InterruptAfter, options_for, run_cli, write_pairs

from autohdr_cli.checkpoint import load_checkpoint
from autohdr_cli.pairs import find_pairs
from autohdr_cli.train import learning_rate, state_path, train
from autohdr_cli.train_data import (
    DecodedCache,
    DiskPairs,
    NativeCrops,
    StepBatches,
    load_pairs,
    step_batches,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeClock:
    """A clock that moves ``tick`` seconds each time it is read: a run's time without waiting for it."""

    def __init__(self, tick: float = 1.0):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def log_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def pairs(tmp_path) -> Path:
    return write_pairs(tmp_path / "pairs")


def test_learning_rate_follows_steps_or_time_whichever_ends_first():
    def old(base, step, steps):  # the schedule of earlier versions, which --steps alone must keep
        warmup = max(1, min(100, steps // 20))
        ramp = min(1.0, (step + 1) / warmup)
        return base * ramp * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / steps))))

    assert all(learning_rate(1.0, s, 500) == old(1.0, s, 500) for s in range(501))
    assert learning_rate(1.0, 10_000, None, 600.0, 600.0) == pytest.approx(0.1)  # time up: the floor
    assert learning_rate(1.0, 0, None, 0.0, 600.0) == pytest.approx(0.01)  # warm-up starts low
    assert learning_rate(1.0, 5, None, 30.0, 600.0) == pytest.approx(1.0, abs=0.01)  # 5% of the time: warm
    half_time = learning_rate(1.0, 100, 10_000, 300.0, 600.0)
    assert half_time == pytest.approx(0.55) and learning_rate(1.0, 100, 200, 1.0, 600.0) == pytest.approx(0.55)


def test_wsd_holds_the_peak_then_decays_to_the_same_floor_in_the_last_fifth():
    def wsd(elapsed):
        return learning_rate(1.0, 1000, None, elapsed, 600.0, "wsd")

    assert wsd(0.3 * 600) == wsd(0.79 * 600) == 1.0  # stable after warm-up, however many steps
    assert wsd(0.9 * 600) == pytest.approx(0.55)  # half-way through the decay
    assert wsd(600.0) == pytest.approx(0.1) == learning_rate(1.0, 1000, None, 600.0, 600.0, "cosine")
    assert learning_rate(1.0, 0, 100, shape="wsd") == learning_rate(1.0, 0, 100)  # the same warm-up
    with pytest.raises(ValueError, match="unknown schedule"):
        learning_rate(1.0, 0, 100, shape="linear")


def test_a_time_limited_run_anneals_to_its_floor_at_the_limit_and_resumes_on_the_same_plan(pairs, tmp_path):
    found = find_pairs(pairs).pairs
    data, validation = load_pairs(found[:4], 32), load_pairs(found[4:], 32)
    common = dict(steps=None, time_limit=120.0, val_every=1000, checkpoint_every=1000, lr=1e-2)
    straight = train(options_for(pairs, tmp_path / "s.safetensors", clock=FakeClock(), **common), data, validation)
    assert straight.stopped_by == "time limit" and 100 <= straight.steps <= 120
    rows = log_rows(tmp_path / "s.csv")
    rates = [float(r["lr"]) for r in rows]
    assert rates[0] < 3e-3 and max(rates) == pytest.approx(1e-2, rel=0.01)  # warmed up to the peak
    assert rates[-1] == pytest.approx(1e-3, rel=0.01)  # and down to the floor when the time is up
    peak = rates.index(max(rates))
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:]))

    cut = tmp_path / "cut.safetensors"
    first = train(options_for(pairs, cut, clock=FakeClock(), **common), InterruptAfter(data, 40), validation)
    assert first.stopped_by == "interrupted"
    assert torch.load(state_path(cut), weights_only=True)["budget"] == 120.0
    # Resumed without --time-limit: the run's own budget goes on, counting the time it already took.
    resumed = train(options_for(pairs, cut, clock=FakeClock(), resume=cut, **{**common, "time_limit": None}),
                    data, validation)
    assert resumed.stopped_by == "time limit" and abs(resumed.steps - straight.steps) <= 3
    assert float(log_rows(tmp_path / "cut.csv")[-1]["lr"]) == pytest.approx(1e-3, rel=0.01)


def test_steps_and_time_limit_end_at_whichever_comes_first(pairs, tmp_path):
    found = find_pairs(pairs).pairs
    data, validation = load_pairs(found[:4], 32), load_pairs(found[4:], 32)
    result = train(options_for(pairs, tmp_path / "a.safetensors", steps=10, time_limit=1000.0, clock=FakeClock()),
                   data, validation)
    assert result.stopped_by == "steps" and result.steps == 10
    assert float(log_rows(tmp_path / "a.csv")[-1]["lr"]) == pytest.approx(learning_rate(1e-3, 9, 10))


def test_cli_schedule_wsd_holds_the_peak_and_resume_keeps_the_shape(pairs, tmp_path):
    out = tmp_path / "w.safetensors"
    result = run_cli("train", str(pairs), "-o", str(out), *TINY_ARGS, "--steps", "40", "--lr", "0.01",
                     "--schedule", "wsd")
    assert result.exit_code == 0, result.output
    rates = [float(r["lr"]) for r in log_rows(tmp_path / "w.csv")]
    assert rates[2:32] == [pytest.approx(0.01)] * 30  # peak held after a 2-step warm-up, to 80% of the run
    assert rates[-1] == pytest.approx(learning_rate(0.01, 39, 40, shape="wsd")) and rates[-1] < 0.0015
    again = run_cli("train", str(pairs), "-o", str(out), *TINY_ARGS, "--steps", "40", "--lr", "0.01",
                    "--schedule", "cosine", "--resume", str(out))
    assert again.exit_code == 2 and "--schedule cosine differs from the resumed run's wsd" in again.output
    wrong = run_cli("train", str(pairs), "-o", str(tmp_path / "x.safetensors"), *TINY_ARGS, "--schedule", "linear")
    assert wrong.exit_code == 2 and "--schedule must be one of cosine, wsd" in wrong.output


def test_nafnet_holds_its_peak_rate_by_default_and_the_lut_decays_over_the_whole_run(pairs, tmp_path):
    nafnet = ["--model", "nafnet", "--config", json.dumps({"width": 4, "enc_blocks": [1], "dec_blocks": [1],
              "middle_blocks": 1}), "--init", "none", "--perceptual", "0", "--crop", "16", "--train-size", "32",
              "--batch", "2", "--quiet", "--steps", "20", "--lr", "0.01"]
    result = run_cli("train", str(pairs), "-o", str(tmp_path / "n.safetensors"), *nafnet)
    assert result.exit_code == 0, result.output
    rates = [float(r["lr"]) for r in log_rows(tmp_path / "n.csv")]
    assert rates[1:16] == [pytest.approx(0.01)] * 15  # wsd: the peak held to 80% of the run
    assert rates[-1] == pytest.approx(learning_rate(0.01, 19, 20, shape="wsd")) and rates[-1] < 0.003
    result = run_cli("train", str(pairs), "-o", str(tmp_path / "l.safetensors"), *TINY_ARGS, "--steps", "20",
                     "--lr", "0.01")
    assert result.exit_code == 0, result.output
    rates = [float(r["lr"]) for r in log_rows(tmp_path / "l.csv")]
    assert all(later < earlier for earlier, later in zip(rates[2:], rates[3:]))  # cosine from the warm-up on


def test_ema_is_what_ships_and_resume_keeps_the_raw_weights(pairs, tmp_path):
    found = find_pairs(pairs).pairs
    data, validation = load_pairs(found[:4], 32), load_pairs(found[4:], 32)
    straight = tmp_path / "straight.safetensors"
    train(options_for(pairs, straight, ema=0.9, lr=1e-2), data, validation)
    state = torch.load(state_path(straight), weights_only=True)
    shipped = load_file(straight)
    assert "raw" in state and any(not torch.equal(shipped[k], v) for k, v in state["raw"].items() if k in shipped)
    assert load_checkpoint(straight).training["ema"] == 0.9

    cut = tmp_path / "cut.safetensors"
    train(options_for(pairs, cut, ema=0.9, lr=1e-2), InterruptAfter(data, 3), validation)
    train(options_for(pairs, cut, ema=0.9, lr=1e-2, resume=cut), data, validation)
    resumed_state = torch.load(state_path(cut), weights_only=True)
    for name, tensor in load_file(straight).items():
        assert torch.equal(tensor, load_file(cut)[name]), name
    for name, tensor in state["raw"].items():
        assert torch.equal(tensor, resumed_state["raw"][name]), name

    plain = tmp_path / "plain.safetensors"
    train(options_for(pairs, plain, ema=0.0), data, validation)
    assert "raw" not in torch.load(state_path(plain), weights_only=True)


def test_streamed_pairs_draw_the_same_crops_as_pairs_in_memory(tmp_path):
    folder = write_pairs(tmp_path / "pairs", count=4, size=(40, 30))
    found = find_pairs(folder).pairs
    memory = load_pairs(found, 36)
    disk = DiskPairs(found, [0] * len(found), DecodedCache(tmp_path / "cache", 36))
    for wrap in (lambda d: d, NativeCrops):
        for data in (memory, disk):
            data.whole_size = 8
        torch.manual_seed(3)
        expected = wrap(memory).sample(3, 16)
        torch.manual_seed(3)
        got = wrap(disk).sample(3, 16)
        for a, b in zip(expected, got):
            assert a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=2e-5)
    assert len(list((tmp_path / "cache").glob("*.npy"))) >= 8  # decoded once, then read back
    # The same batches whether the loop's process draws them or DataLoader workers do, in step order.
    in_process = list(step_batches(StepBatches(disk, 2, 16, seed=1, rank=0), 5, 9, workers=0))
    in_workers = list(step_batches(StepBatches(disk, 2, 16, seed=1, rank=0), 5, 9, workers=2))
    for a, b in zip(in_process, in_workers, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_cli_streams_pairs_through_a_cache_and_trains_in_bf16_on_the_cpu(pairs, tmp_path):
    output, cache = tmp_path / "look.safetensors", tmp_path / "cache"
    args = ["--config", json.dumps(TINY), "--crop", "16", "--train-size", "32", "--batch", "2", "--quiet"]
    result = run_cli("train", str(pairs), "-o", str(output), "--steps", "3", "--stream", "--cache", str(cache),
                     "--workers", "1", "--precision", "bf16", *args)
    assert result.exit_code == 0, result.output
    assert "streaming the pairs" in result.output and any(cache.glob("*.npy"))
    assert all(t.dtype == torch.float32 for t in load_file(output).values())
    assert all(math.isfinite(float(r["loss"])) for r in log_rows(output.with_suffix(".csv")))
    result = run_cli("train", str(pairs), "-o", str(output), "--ema", "1.5", *args)
    assert result.exit_code == 2


MEMORY_PROBE = textwrap.dedent('''
    import ctypes, ctypes.util, gc, sys
    from pathlib import Path
    import torch
    from autohdr_cli.pairs import find_pairs
    from autohdr_cli.train_data import DecodedCache, DiskPairs, StepBatches, load_pairs, step_batches
    folder, count, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    found = find_pairs(folder).pairs[:count]
    if mode == "disk":
        data = DiskPairs(found, [0] * count, DecodedCache(folder.parent / "cache", 512))
    else:
        data = load_pairs(found, 512)
    data.whole_size = 32
    for batch in step_batches(StepBatches(data, 4, 64, 0, 0), 0, 3 * count // 4 + 20):
        pass
    # Memory held once every pair was drawn (with the data still alive), not the peak: a start-up or batch
    # transient larger than the pairs would hide their growth in a peak. Anonymous pages only, after the
    # allocator hands back what was freed: shared libraries paged in and freed-but-kept heap vary by tens
    # of MB from run to run (CI once saw 64 MB between two streamed runs) and are not data held.
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        ctypes.CDLL(libc).malloc_trim(0)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    print(int(status["RssAnon"].split()[0]) // 1024)
''')


def test_memory_of_streamed_pairs_stays_flat_as_the_pairs_grow(tmp_path):
    folder = write_pairs(tmp_path / "pairs", count=64, size=(640, 480))

    def resident_mb(count: int, mode: str) -> int:
        limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))\n"
        done = subprocess.run([sys.executable, "-c", limit + MEMORY_PROBE, str(folder), str(count), mode],
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split()[-1])

    # 64 pairs in memory (decoded at 512 x 384) hold 56 x 2 x 512 x 384 x 3 x 4 bytes = 264 MB more than 8
    # do; streamed, no more. (Pairs this large keep the growth clear of start-up and batch transients.)
    assert resident_mb(64, "memory") - resident_mb(8, "memory") > 150
    assert resident_mb(64, "disk") - resident_mb(8, "disk") < 25
