"""benchmarks/gpu.py's bookkeeping: failures and the time budget are recorded, and the table's sums,
real-time factors and target verdicts follow from the stage times (hand-computed here)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_timer_records_failures_and_budget_skips(bench):
    timer = bench.Timer(torch.device("cpu"), repeats=3, warmup=1, deadline=time.perf_counter() + 60)
    calls = []
    m = timer(("v", 1, "ok"), lambda: calls.append(1))
    assert m.seconds is not None and m.seconds >= 0 and len(calls) == 4  # 1 warm-up + 3 timed

    def broken() -> None:
        raise RuntimeError("inductor exploded\nlong traceback")

    m = timer(("v", 1, "broken"), broken)
    assert m.seconds is None and m.error == "RuntimeError: inductor exploded"
    timer.deadline = time.perf_counter() - 1
    m = timer(("v", 1, "late"), lambda: calls.append(2))
    assert m.error == "skipped (budget)" and calls.count(2) == 0
    assert set(timer.results) == {("v", 1, "ok"), ("v", 1, "broken"), ("v", 1, "late")}


def test_report_sums_stages_and_judges_targets(bench):
    timer = bench.Timer(torch.device("cpu"), 1, 0, deadline=0.0)
    stage_ms = {
        ("cpu", 1, "decode"): 50,
        ("cpu", 1, "mux"): 20,
        ("bf16", 1, "clip"): 10,
        ("bf16", 1, "sync"): 5,
        ("bf16", 1, "text"): 1,
        ("bf16", 1, "vae x1"): 2,
        ("bf16", 1, "vocoder x1"): 8,
        ("bf16", 1, "network 1 scaled"): 4,
        ("bf16", 1, "network 25 scaled"): 100,
        ("mmaudio", 1, "network 25 standard"): 200,
    }
    timer.results = {k: bench.Measurement(seconds=v / 1e3) for k, v in stage_ms.items()}
    timer.results[("bf16+compile", 1, "network 1 scaled")] = bench.Measurement(
        error="BackendCompilerFailed: x"
    )
    args = argparse.Namespace(duration=8.0)
    variants = {"bf16": "bf16", "bf16+compile": "bf16", "mmaudio": "bf16"}
    configs = [(1, "scaled"), (25, "scaled"), (25, "standard")]
    text = bench.report(args, timer, variants, [1], configs, "# header")
    # generator = 4 + 2 + 8 = 14 ms -> RTF 14 / 8000; end to end = 16 + 14 + 50 + 20 = 100 ms
    assert "| bf16 | 1 | 1 | scaled | 4.0 | 14.0 | 0.0018 | 100.0 | 0.0125 |" in text
    # 25 steps: 100 + 10 = 110 ms, i.e. 7.86x slower than one step: that target is not met
    assert (
        "| generator RTF at one step (network + VAE + vocoder, scaled, batch 1) <= 0.0035 | 0.00175 | met |"
        in text
    )
    assert "| 0.0125 | met |" in text
    assert "| 7.857 | not met |" in text
    # MMAudio-style: 200 + 2 + 8 = 210 ms generator, 15x ours; end to end 210 + 16 + 70 = 296 ms
    assert "| generator | 210.0 | 14.0 | 15.0× |" in text
    assert "| end to end | 296.0 | 100.0 | 3.0× |" in text
    assert "| bf16+compile | 1 | 1 | scaled | BackendCompilerFailed: x | – |" in text
    assert "Failed configurations: 1;" in text
