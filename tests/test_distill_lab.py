"""benchmarks/distill_lab.py end to end at its quick scale: every stage runs, the exported teacher and
student load and generate, the table covers every model, and a second run reuses what is cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mfmjt.model_dir import read_metadata
from mfmjt.pipeline import load_pipeline

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "distill_lab.py"


def _run_lab(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--scale", "quick", "--threads", "1"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_quick_lab_runs_end_to_end_exports_loadable_models_and_resumes(tmp_path):
    out = tmp_path / "lab"
    first = _run_lab(out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert results["scenes"]["train"] == [0, 11]
    assert results["scenes"]["choose"][0] == 2_000_000 and results["scenes"]["report"][0] == 3_000_000
    recipes = set(results["recipes"])
    evaluated = {(e["model"], e["scenes"], e["steps"]) for e in results["evaluations"]}
    assert {("teacher", "report", 1), ("teacher", "report", 25), ("mf_scratch", "report", 1)} <= evaluated
    assert {(name, s, 1) for name in recipes for s in ("choose", "report")} <= evaluated
    assert all(np.isfinite(e["metrics"]["onset_f1"]) for e in results["evaluations"])
    # the recommended student is the best on the choosing scenes, and a copy of that student
    choose = {e["model"]: e["metrics"]["onset_f1"] for e in results["evaluations"] if e["scenes"] == "choose"}
    assert choose[results["recommended_student"]] == max(choose.values())
    table = (out / "results.md").read_text()
    assert all(f"| {name}" in table for name in [*recipes, "teacher", "mf_scratch"])
    # the runner's own wall-clock, started from nothing
    assert results["runner"]["cached_at_start"] == [] and 0 < results["runner"]["minutes"] < 15
    assert "Runner wall-clock" in table

    teacher_meta = read_metadata(out / "teacher")
    assert teacher_meta["objective"] == "flow_matching" and "from scratch" in teacher_meta["lineage"][0]
    assert teacher_meta["training"]["meanflow"]["mean_flow_ratio"] == 0
    student_meta = json.loads((out / "student" / "config.json").read_text())
    assert student_meta["objective"] == "meanflow" and student_meta["recommended"]["steps"] == 1
    for name in recipes:
        assert (out / "students" / name / "model.safetensors").is_file()
    for model in ("teacher", "student"):
        pipe = load_pipeline(str(out / model), device="cpu")
        steps, cfg = pipe.recommended.steps, pipe.recommended.cfg
        audio = pipe.generate(prompt="a red ball bounces", duration=1.0, steps=steps, cfg_strength=cfg).audio
        wave = np.asarray(audio["scaled"])
        assert np.isfinite(wave).all() and np.abs(wave).max() > 0

    cached = {p: p.stat().st_mtime_ns for p in (out / "teacher" / "model.safetensors",
                                                out / "store" / "teacher_endpoints.npy")}  # fmt: skip
    second = _run_lab(out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in cached} == cached  # reused, not remade
    assert "stage teacher" not in second.stderr and "stage student:" not in second.stderr


def test_the_lab_fine_tunes_with_the_settings_mfmjt_train_uses_from_a_flow_matching_model(monkeypatch):
    """The lab's recommended recipe (mf_finetune) and ``mfmjt train --init-from``'s defaults from a
    flow-matching model (FINETUNE_DEFAULTS) are the same settings."""
    import importlib.util

    from mfmjt.train_config import FINETUNE_DEFAULTS

    spec = importlib.util.spec_from_file_location("distill_lab", SCRIPT)
    lab = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "distill_lab", lab)  # its dataclasses look their module up
    spec.loader.exec_module(lab)
    recipe = lab.RECIPES["mf_finetune"]
    used = {**recipe.meanflow, **lab.STUDENT_TRAIN, **recipe.train}
    for key, value in FINETUNE_DEFAULTS.items():
        assert tuple(used[key]) == tuple(value) if key == "lr_decay_at" else used[key] == value, key
