"""The distillation lab: one step from a flow-matching teacher trained from scratch, measured.

    python benchmarks/distill_lab.py --out runs/lab --jobs 2   # CPU scale: 74 min on 2 cores
    python benchmarks/distill_lab.py --out runs/lab_gpu --scale gpu --device cuda
    python benchmarks/distill_lab.py --out /tmp/q --scale quick     # a minute: the slow test's run

What it does, every stage cached under --out (re-running reuses what is there; an interrupted
training run resumes from its checkpoint):

1. ``store/``: a feature store of synthetic scenes (training seeds ``TRAIN_SEED``..), encoded with the
   embedded default's codec and encoders.
2. ``runs/teacher`` -> ``teacher/``: a flow-matching teacher from random initialisation (mean-flow
   ratio 0, no MeanFlow ancestry), exported with its Δt embedding folded away (exactly Δt-free, as
   every sampler and distillation sees it).
3. ``store/teacher_endpoints.npy``: the teacher's multi-step ODE endpoints (several noises per item),
   made once.
4. ``runs/<student>`` -> ``students/<student>/``: the recipes of :data:`DEFAULT_RECIPES` (or
   ``--recipes``), each with at most a quarter of the teacher's training samples;
   ``reference/mf_scratch``: MeanFlow from scratch with the teacher's samples (the paper's route).
5. Evaluations (``evals/*.json``): students on the *choosing* scenes (seeds ``CHOOSE_SEED``..); the
   best one-step student there is exported as ``student/``. Then everything on the *report* scenes
   (seeds ``REPORT_SEED``..), which choose nothing.
6. ``results.json`` and ``results.md`` (the table).

``--jobs 2`` runs independent stages side by side in subprocesses (one torch thread each).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("benchmarks.distill_lab")

REPO = Path(__file__).resolve().parents[1]
TRAIN_SEED = 0  # training scenes: seeds 0 .. n_train - 1
CHOOSE_SEED = 2_000_000  # choosing (validation) scenes
REPORT_SEED = 3_000_000  # report scenes: scored, never used to choose
NOISE_SEED = 0  # evaluation clip of scene s uses generation seed NOISE_SEED + s


@dataclass(frozen=True)
class Scale:
    """Sizes of one lab configuration."""

    n_train: int
    teacher_network: Mapping[str, Any]
    teacher_steps: int
    batch: int
    teacher_lr: float
    teacher_warmup: int
    student_steps: int  # steps of every student at batch ``batch``: <= 25 % of the teacher's samples
    endpoint_noises: int  # teacher ODE endpoints per training item
    endpoint_steps: int  # Euler steps of those endpoints (the teacher's multi-step setting)
    n_choose: int
    n_report: int
    teacher_eval_steps: tuple[int, ...] = (1, 2, 4, 25)
    student_eval_steps: tuple[int, ...] = (1, 2, 4)
    checkpoint_every: int = 200


SCALES: dict[str, Scale] = {
    # a minute end to end: the slow test's configuration (numbers meaningless)
    "quick": Scale(
        n_train=12,
        teacher_network={"hidden_dim": 32, "sync_dim": 48, "depth": 2, "fused_depth": 1},
        teacher_steps=6,
        batch=4,
        teacher_lr=1e-3,
        teacher_warmup=2,
        student_steps=3,
        endpoint_noises=1,
        endpoint_steps=4,
        n_choose=1,
        n_report=1,
        teacher_eval_steps=(1, 25),
        student_eval_steps=(1,),
        checkpoint_every=0,
    ),
    # the 2-core CPU: 3.2M parameters (hidden 96, 2 joint + 2 audio-only blocks), 1,500 steps of batch 32;
    # students 375 steps of batch 32 (25 % of the teacher's samples)
    "cpu": Scale(
        n_train=1000,
        teacher_network={"hidden_dim": 96, "sync_dim": 48, "depth": 4, "fused_depth": 2},
        teacher_steps=1500,
        batch=32,
        # whole 1,500-step runs, 25-step F1 on the choosing scenes: 1e-3 0.760, 2e-3 0.806, 3e-3 0.742
        teacher_lr=2e-3,
        teacher_warmup=100,
        student_steps=375,
        endpoint_noises=1,
        endpoint_steps=25,
        n_choose=32,
        n_report=48,
    ),
    # one H100: the embedded default's architecture (4.6M, 2 joint + 6 audio-only blocks), batch 128
    "gpu": Scale(
        n_train=3000,
        teacher_network={"hidden_dim": 96, "sync_dim": 48, "depth": 8, "fused_depth": 6},
        teacher_steps=3000,
        batch=128,
        teacher_lr=1e-3,
        teacher_warmup=100,
        student_steps=750,
        endpoint_noises=4,
        endpoint_steps=25,
        n_choose=64,
        n_report=128,
        checkpoint_every=500,
    ),
}


# ------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Lab:
    out: Path
    scale_name: str
    device: str
    threads: int = 1
    recipes: tuple[str, ...] = ()  # the students this run trains (default: every recipe)

    @property
    def active(self) -> list[str]:
        return list(self.recipes) if self.recipes else list(DEFAULT_RECIPES)

    @property
    def scale(self) -> Scale:
        return SCALES[self.scale_name]

    @property
    def store(self) -> Path:
        return self.out / "store"

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name

    @property
    def teacher(self) -> Path:
        return self.out / "teacher"

    def student(self, name: str) -> Path:
        return self.out / ("reference" if name in REFERENCES else "students") / name


# ------------------------------------------------------------------------------------- stages
def stage_data(lab: Lab) -> Path:
    """The training store (seeds TRAIN_SEED..), with the embedded default's codec: made once."""
    from mfmjt.feature_store import FeatureStore
    from mfmjt.pipeline import default_model_dir
    from mfmjt.toy.extract import ExtractConfig, extract_synthetic, offline_stack_with_codec

    try:
        if len(FeatureStore(lab.store)) == lab.scale.n_train:
            return lab.store
    except (FileNotFoundError, ValueError):
        pass
    if lab.store.exists():
        shutil.rmtree(lab.store)  # an interrupted extraction: start it again
    stack = offline_stack_with_codec(default_model_dir() / "codec.safetensors")
    config = ExtractConfig(out=lab.store, n_items=lab.scale.n_train, first_seed=TRAIN_SEED)
    # nothing runs beside the store (everything depends on it): every core encodes scenes
    workers = max(1, (os.cpu_count() or 1) // lab.threads) if lab.device == "cpu" else 1
    extract_synthetic(config, stack, workers=workers, progress=False)
    return lab.store


def _train_config(lab: Lab, name: str, **values: Any) -> Any:
    from mfmjt.meanflow import MeanFlowConfig
    from mfmjt.train import TrainConfig

    meanflow = values.pop("meanflow", MeanFlowConfig())
    return TrainConfig(
        store=(str(lab.store),),
        out_dir=lab.run_dir(name),
        variant="tiny",
        device=lab.device,
        progress=False,
        log_every=10,
        checkpoint_every=lab.scale.checkpoint_every,
        meanflow=meanflow,
        **values,
    )


# The teacher's time distribution: MMAudio's (and SD3's) logit-normal(0, 1) over t, not the project's
# MeanFlow default logit-normal(-2, 2), which puts most samples near the data (median t 0.12) where
# onsets are already decided. A pilot on 16 choosing scenes (25 steps, ω 4.5) after 400 of 1,500 steps:
# logit-normal(-2, 2) at lr 4e-4 0.30, logit-normal(0, 1) at lr 4e-4 0.40, at lr 1e-3 0.58. The learning
# rate was then set by whole 1,500-step runs on the 32 choosing scenes (the cpu scale's teacher_lr).
TEACHER_TIME = {"time_mu": 0.0, "time_sigma": 1.0}


def teacher_config(lab: Lab) -> Any:
    """Flow matching from random initialisation (MMAudio's objective; mean-flow ratio 0)."""
    from mfmjt.meanflow import MeanFlowConfig

    s = lab.scale
    return _train_config(
        lab,
        "teacher",
        network_overrides=dict(s.teacher_network),
        steps=s.teacher_steps,
        batch_size=s.batch,
        lr=s.teacher_lr,
        warmup_steps=s.teacher_warmup,
        ema_decay=0.999,
        seed=1,
        meanflow=MeanFlowConfig(mean_flow_ratio=0.0, all_dropout=0.1, **TEACHER_TIME),
    )


def stage_teacher(lab: Lab) -> Path:
    """Train (or resume) the teacher and export it Δt-folded to ``teacher/``."""
    from mfmjt.distill import fold_dt_embedding
    from mfmjt.model_dir import load_network, read_metadata, save_network
    from mfmjt.train import train

    if (lab.teacher / "config.json").is_file():
        return lab.teacher
    exported = train(teacher_config(lab))
    meta = read_metadata(exported)
    meta.pop("network")
    net = fold_dt_embedding(load_network(exported))
    tmp = lab.teacher.with_name("teacher.tmp")
    save_network(net, tmp, **meta)
    for name in meta.get("features", {}).get("files", []):
        shutil.copy2(exported / name, tmp / name)
    tmp.replace(lab.teacher)
    return lab.teacher


# ------------------------------------------------------------------------------- the runner
@dataclass(frozen=True)
class Task:
    name: str
    run: Callable[[Lab], Any]
    deps: tuple[str, ...] = ()
    done: Callable[[Lab], bool] = field(default=lambda lab: False)


def _lock(lab: Lab, name: str) -> Path:
    return lab.out / "locks" / (name.replace(":", "_") + ".pid")


def _running_elsewhere(lab: Lab, name: str) -> bool:
    """Whether another live process (another lab command on the same --out) runs this task."""
    path = _lock(lab, name)
    if not path.is_file():
        return False
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def run_tasks(lab: Lab, tasks: list[Task], jobs: int, argv_base: list[str]) -> None:
    """Run ``tasks`` respecting their dependencies: in this process (jobs 1) or up to ``jobs``
    subprocesses (``--task NAME``) at a time. A task another process is running (its lock file
    names a live process) is waited for and counts against ``jobs``."""
    pending = [t for t in tasks if not t.done(lab)]
    finished = {t.name for t in tasks} - {t.name for t in pending}
    if jobs <= 1:
        for task in pending:
            while _running_elsewhere(lab, task.name):
                time.sleep(5)
            if not task.done(lab):
                _timed(lab, task)
        return
    running: dict[str, subprocess.Popen] = {}
    while pending or running:
        for task in list(pending):
            elsewhere = sum(_running_elsewhere(lab, t.name) for t in pending)
            if len(running) + elsewhere >= jobs:
                break
            if _running_elsewhere(lab, task.name):
                continue
            if task.done(lab):
                pending.remove(task)
                finished.add(task.name)
                continue
            if all(d in finished for d in task.deps):
                log = lab.out / "logs" / f"{task.name}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, __file__, *argv_base, "--task", task.name]
                logger.info("start %s (log %s)", task.name, log)
                running[task.name] = subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT)
                pending.remove(task)
        time.sleep(2)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                if proc.returncode != 0:
                    for other in running.values():
                        other.wait()
                    raise RuntimeError(f"task {name} failed: see {lab.out / 'logs' / (name + '.log')}")
                logger.info("done %s", name)
                finished.add(name)
        waiting = any(_running_elsewhere(lab, t.name) for t in pending)
        if (
            pending
            and not running
            and not waiting
            and not any(all(d in finished for d in t.deps) for t in pending)
        ):
            raise RuntimeError(f"tasks {[t.name for t in pending]} wait for tasks that did not finish")


def _timed(lab: Lab, task: Task) -> None:
    start = time.perf_counter()
    logger.info("stage %s", task.name)
    lock = _lock(lab, task.name)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(str(os.getpid()))
    try:
        task.run(lab)
    finally:
        lock.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    timing = lab.out / "timings.json"
    times = json.loads(timing.read_text()) if timing.is_file() else {}
    times[task.name] = times.get(task.name, 0.0) + seconds
    timing.write_text(json.dumps(times, indent=2) + "\n")
    logger.info("stage %s: %.1f min", task.name, seconds / 60)


def mf_scratch_config(lab: Lab) -> Any:
    """The paper's route, for reference: MeanFlow from random initialisation with the teacher's
    architecture, steps, batch, learning rate and time distribution (so the teacher's training samples),
    r≠t ratio 0.25 and MeanFlow's adaptive loss (p = 1), sampled with two-pass CFG."""
    from mfmjt.meanflow import MeanFlowConfig

    t = teacher_config(lab)
    return replace(
        t,
        out_dir=lab.run_dir("mf_scratch"),
        meanflow=MeanFlowConfig(
            mean_flow_ratio=0.25, adaptive_loss_power=1.0, all_dropout=0.1, **TEACHER_TIME
        ),
    )


def stage_reference(lab: Lab, name: str = "mf_scratch") -> Path:
    from mfmjt.train import train

    out = lab.student(name)
    if not (out / "config.json").is_file():
        exported = train(mf_scratch_config(lab))
        shutil.copytree(exported, out.with_name(name + ".tmp"), dirs_exist_ok=True)
        out.with_name(name + ".tmp").replace(out)
    return out


REFERENCES: dict[str, Any] = {"mf_scratch": mf_scratch_config}


@dataclass(frozen=True)
class Recipe:
    """A student: how it is trained from the teacher, and the ω it is evaluated (and recommended) at.

    ``kind`` "distill" runs :func:`mfmjt.distill.distill` (the teacher's guided velocity in the
    MeanFlow target, plus the endpoint regression when ``endpoint_weight`` > 0); "finetune" runs
    MeanFlow training on the store's data from the teacher's weights (``mfmjt train --init-from``).
    ``meanflow`` overrides fields of :class:`mfmjt.meanflow.MeanFlowConfig`, ``train`` of TrainConfig.
    """

    kind: str
    cfg: float  # ω at evaluation (one forward per step: guidance is in the network)
    about: str
    source: str  # where the choice comes from
    meanflow: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    endpoint_weight: float = 0.0
    meanflow_weight: float = 1.0
    endpoint: Mapping[str, Any] = field(default_factory=dict)  # training-side EndpointConfig fields


# What every student shares: a short run from the teacher's weights. The learning rate is constant
# after 20 warm-up steps (the default step decays at 62.5 % / 87.5 % of a few hundred steps would
# leave most of the run at a tenth of the rate) and the EMA horizon (1 / (1 - decay) = 100 steps) is
# a fifth to a quarter of the run, as MMAudio's post-hoc EMA width (5 % of 400k steps) is a fraction
# of its run. Condition dropout 0.1 each plus all-condition dropout 0.1, as the project's MeanFlow runs.
STUDENT_TRAIN = {"lr": 1e-4, "warmup_steps": 20, "lr_decay_at": (), "ema_decay": 0.99, "seed": 11}
STUDENT_MEANFLOW = {
    "mean_flow_ratio": 0.5,
    "one_step_share": 0.25,
    "adaptive_loss_power": 1.0,
    "all_dropout": 0.1,
}
FIXED_OMEGA = 4.5  # the teacher's multi-step ω: the guided field the students are taught
FIXED = {"guidance_min": FIXED_OMEGA, "guidance_max": FIXED_OMEGA, "guidance_unguided_share": 0.0}
RANGE = {"guidance_max": 3.0, "guidance_unguided_share": 0.25}

RECIPES: dict[str, Recipe] = {
    "ep_mf": Recipe(
        "distill",
        FIXED_OMEGA,
        "MeanFlow distillation at fixed ω 4.5 + one-step regression onto the teacher's 25-step "
        "ω-4.5 ODE endpoints (one per item at the CPU scale), adaptive weight p = 1",
        "MeanFlow (Geng et al. 2025) identity and adaptive weight; endpoint regression: Luhman & Luhman "
        "2021 knowledge distillation; fixed-ω guidance folded in training: MeanFlow's CFG training",
        meanflow={**STUDENT_MEANFLOW, **FIXED},
        endpoint_weight=1.0,
    ),
    "mf_finetune": Recipe(
        "finetune",
        1.5,
        "MeanFlow fine-tuning from the teacher on the store's data (guidance learnt for ω ∈ [1, 3], "
        "the project's MeanFlow recipe)",
        "MeanAudio's route: MeanFlow fine-tuning of a flow-matching model",
        meanflow={**STUDENT_MEANFLOW, **RANGE},
    ),
    "ep_only": Recipe(
        "distill",
        FIXED_OMEGA,
        "one-step regression onto the teacher's ODE endpoints only (no MeanFlow term)",
        "Luhman & Luhman 2021 (knowledge distillation of the sampler)",
        meanflow={**STUDENT_MEANFLOW, **FIXED},
        endpoint_weight=1.0,
        meanflow_weight=0.0,
    ),
    "ep_adaptive": Recipe(
        "distill",
        FIXED_OMEGA,
        "ep_only with MeanFlow's adaptive weight on the endpoint term: each sample's squared error e "
        "weighted by the detached 1 / (e + 0.001), so every sample's gradient is that of log e",
        "MeanFlow (Geng et al. 2025) adaptive loss weighting, as sCM/rCM normalise their tangents "
        "(Lu & Song 2025; Zheng et al. 2025)",
        meanflow={**STUDENT_MEANFLOW, **FIXED},
        endpoint_weight=1.0,
        meanflow_weight=0.0,
        endpoint={"adaptive_power": 1.0},
    ),
    "ep_lr": Recipe(
        "distill",
        FIXED_OMEGA,
        "ep_only at 3× the learning rate (3e-4, the teacher's order), gradient clipping loosened to 10",
        "plumbing check of the student's step size (the lab's 1e-4 follows MMAudio's fine-tuning rate)",
        meanflow={**STUDENT_MEANFLOW, **FIXED},
        train={"lr": 3e-4, "grad_clip": 10.0},
        endpoint_weight=1.0,
        meanflow_weight=0.0,
    ),
    "distill_fixed": Recipe(
        "distill",
        FIXED_OMEGA,
        "MeanFlow distillation at fixed ω 4.5, no endpoint term (ablation of the endpoints)",
        "MeanFlow's CFG training at one ω",
        meanflow={**STUDENT_MEANFLOW, **FIXED},
    ),
    "distill_range": Recipe(
        "distill",
        1.5,
        "MeanFlow distillation with ω ~ U[1, 3] per sample (the previous mfmjt distill defaults)",
        "this project's previous default (docs/distillation.md history)",
        meanflow={**STUDENT_MEANFLOW, **RANGE},
    ),
}


# What a plain run trains (any recipe with --recipes): the endpoint regression, its adaptive weighting,
# and the baseline to beat (MeanFlow fine-tuning). Measured and left out of the default run, so that the
# whole lab fits its 90 minutes on 2 CPU cores (docs/distillation.md has their numbers): distill_fixed and
# distill_range (first run: 0.2-0.3 one-step F1 below the endpoints), ep_lr (second run: level with
# ep_only) and ep_mf (second run: the best 2-step student, but 0.02 below ep_only at one step and three
# times its training time).
DEFAULT_RECIPES = ("ep_only", "ep_adaptive", "mf_finetune")


def student_train_config(lab: Lab, name: str) -> Any:
    from mfmjt.meanflow import MeanFlowConfig

    recipe = RECIPES[name]
    s = lab.scale
    train = {**STUDENT_TRAIN, **recipe.train}
    return _train_config(
        lab,
        name,
        network_overrides={**s.teacher_network, "guidance_embed": True},
        init_from=str(lab.teacher),
        steps=s.student_steps,
        batch_size=s.batch,
        meanflow=MeanFlowConfig(**recipe.meanflow),
        **train,
    )


def stage_student(lab: Lab, name: str) -> Path:
    """Train (or resume) one student and copy its export to ``students/<name>`` with its recommended
    sampling (1 step at the recipe's ω) in config.json."""
    from mfmjt.distill import DistillConfig, distill
    from mfmjt.train import train

    out = lab.student(name)
    if (out / "config.json").is_file():
        return out
    recipe = RECIPES[name]
    config = student_train_config(lab, name)
    if recipe.kind == "finetune":
        exported = train(config)
    else:
        exported = distill(
            DistillConfig(
                teacher=str(lab.teacher),
                train=config,
                x_source="store",
                endpoints=_endpoint_config(lab, recipe.endpoint_weight, **recipe.endpoint),
                meanflow_weight=recipe.meanflow_weight,
            )
        )
    tmp = out.with_name(name + ".tmp")
    shutil.copytree(exported, tmp, dirs_exist_ok=True)
    meta = json.loads((tmp / "config.json").read_text())
    meta["recommended"] = {**meta.get("recommended", {}), "steps": 1, "cfg": recipe.cfg, "guidance": "scaled"}
    (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(out)
    return out


def _endpoint_config(lab: Lab, weight: float, **training: Any) -> Any:
    from mfmjt.distill import EndpointConfig

    s = lab.scale
    return EndpointConfig(
        weight=weight,
        noises=s.endpoint_noises,
        steps=s.endpoint_steps,
        cfg_strength=FIXED_OMEGA,
        seed=11,
        **training,
    )


def stage_endpoints(lab: Lab) -> Path:
    """The teacher's ODE endpoints for the endpoint students, made once (kept in the store)."""
    from mfmjt.distill import load_teacher, teacher_endpoints
    from mfmjt.feature_store import FeatureStore

    teacher = load_teacher(lab.teacher, lab.device)
    config = _endpoint_config(lab, 1.0)
    teacher_endpoints(FeatureStore(lab.store), teacher, str(lab.teacher), config, progress=False)
    return lab.store


# --------------------------------------------------------------------------------- evaluation
def _eval_path(lab: Lab, model: str, scenes: str, steps: int) -> Path:
    return lab.out / "evals" / f"{model}__{scenes}__{steps}.json"


def model_dir(lab: Lab, model: str) -> Path:
    return lab.teacher if model == "teacher" else lab.student(model)


def eval_cfg(lab: Lab, model: str, steps: int) -> float:
    """ω of a model at ``steps``: the recipe's for students; the project's defaults for the teacher
    and the reference (1.5 at one step, 4.5 above: ``SamplingSettings.cfg_for``)."""
    if model in RECIPES:
        return RECIPES[model].cfg
    return 1.5 if steps == 1 else 4.5


def evaluate(lab: Lab, model: str, scenes: str, steps_list: tuple[int, ...]) -> None:
    """Score ``model`` on the choosing or report scenes at each step count (cached per file)."""
    from mfmjt.pipeline import load_pipeline
    from mfmjt.toy.evaluate import EvalSettings, evaluate_model, held_out_scenes

    first, n = (CHOOSE_SEED, lab.scale.n_choose) if scenes == "choose" else (REPORT_SEED, lab.scale.n_report)
    todo = [k for k in steps_list if not _eval_path(lab, model, scenes, k).is_file()]
    if not todo:
        return
    clips = held_out_scenes(n, lab.out / "scene_cache", 4.0, first_seed=first)
    pipe = load_pipeline(str(model_dir(lab, model)), device=lab.device)
    two_pass = not pipe.network.config.guidance_embed
    for steps in todo:
        cfg = eval_cfg(lab, model, steps)
        start = time.perf_counter()
        result = evaluate_model(
            pipe, clips, EvalSettings(steps=steps, cfg=cfg, guidance="scaled", seed=NOISE_SEED)
        )
        record = {
            "model": model,
            "scenes": scenes,
            "first_seed": first,
            "n": n,
            "steps": steps,
            "cfg": cfg,
            "forwards_per_clip": steps * (2 if two_pass and cfg != 1 else 1),
            "seconds": time.perf_counter() - start,
            "metrics": result["modes"]["scaled"],
        }
        path = _eval_path(lab, model, scenes, steps)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        m = record["metrics"]
        logger.info("%s on %s scenes, %d steps, ω %g: onset F1 %.3f, FD %.2f", model, scenes, steps, cfg,
                    m["onset_f1"], m["frechet_distance"])  # fmt: skip


def _read_eval(lab: Lab, model: str, scenes: str, steps: int) -> dict[str, Any] | None:
    path = _eval_path(lab, model, scenes, steps)
    return json.loads(path.read_text()) if path.is_file() else None


def choose_student(lab: Lab) -> str:
    """The best student at one step on the choosing scenes: onset F1, ties (within 0.005) to the lower
    FD. Copied to ``student/``; the choice is kept in ``choice.json``."""
    scored = []
    for name in lab.active:
        record = _read_eval(lab, name, "choose", 1)
        if record is not None:
            m = record["metrics"]
            scored.append((round(m["onset_f1"] / 0.005), -m["frechet_distance"], name))
    if not scored:
        raise RuntimeError("no student was evaluated on the choosing scenes")
    best = max(scored)[2]
    target = lab.out / "student"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(lab.student(best), target)
    by = "one-step onset F1 on the choosing scenes, ties (within 0.005) to the lower FD"
    (lab.out / "choice.json").write_text(json.dumps({"student": best, "by": by}, indent=2) + "\n")
    return best


def training_cost(lab: Lab, name: str) -> dict[str, Any]:
    """Steps, samples seen (steps × batch) and training wall-clock of a run (sessions summed)."""
    run = lab.run_dir(name)
    cfg = json.loads((run / "train_config.json").read_text())
    seconds, last, step = 0.0, 0.0, 0
    for line in (run / "train_log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["elapsed"] < last:  # a resumed session
            seconds += last
        last, step = record["elapsed"], record["step"]
    samples = step * cfg["batch_size"]
    return {"steps": step, "batch": cfg["batch_size"], "samples": samples, "minutes": (seconds + last) / 60}


def _row(lab: Lab, model: str, steps: int, cost: dict[str, Any] | None, note: str = "") -> str | None:
    record = _read_eval(lab, model, "report", steps)
    if record is None:
        return None
    m = record["metrics"]
    teacher_samples = training_cost(lab, "teacher")["samples"]
    train = "–"
    if cost is not None:
        train = f"{cost['samples']:,} ({cost['samples'] / teacher_samples:.0%}), {cost['minutes']:.0f} min"
    return (
        f"| {model}{note} | {steps} | {record['cfg']:g} | **{m['onset_f1']:.3f}** | "
        f"{m['onset_precision']:.3f} / {m['onset_recall']:.3f} | {m['offset_ms']:.1f} | "
        f"{m['frechet_distance']:.2f} | {record['forwards_per_clip']} | {train} |"
    )


def stage_report(lab: Lab) -> dict[str, Any]:
    """results.json and results.md from the cached evaluations."""
    s = lab.scale
    choice = json.loads((lab.out / "choice.json").read_text())["student"]
    timing_path = lab.out / "timings.json"
    timings = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    teacher_cost = training_cost(lab, "teacher")
    results: dict[str, Any] = {
        "scale": {"name": lab.scale_name, **asdict(s)},
        "scenes": {
            "train": [TRAIN_SEED, TRAIN_SEED + s.n_train - 1],
            "choose": [CHOOSE_SEED, CHOOSE_SEED + s.n_choose - 1],
            "report": [REPORT_SEED, REPORT_SEED + s.n_report - 1],
            "noise_seed": f"{NOISE_SEED} + scene seed",
        },
        "teacher": {"training": teacher_cost, "config": teacher_config(lab).to_dict()},
        "recommended_student": choice,
        "recipes": {k: asdict(RECIPES[k]) for k in lab.active},
        "timings_minutes": {k: v / 60 for k, v in timings.items()},
        "evaluations": [json.loads(p.read_text()) for p in sorted((lab.out / "evals").glob("*.json"))],
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, device {lab.device}",
        "training": {},
    }
    for name in [*lab.active, *REFERENCES]:
        if (lab.run_dir(name) / "train_log.jsonl").is_file():
            results["training"][name] = training_cost(lab, name)
    (lab.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")

    rows = [
        "| model | steps | ω | onset F1 | precision / recall | offset (ms) | FD | network forwards per clip "
        "| training samples (share of teacher's), wall-clock |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows += [_row(lab, "teacher", k, teacher_cost) for k in s.teacher_eval_steps]
    for name in [choice, *[r for r in lab.active if r != choice]]:
        note = " (recommended)" if name == choice else ""
        rows += [_row(lab, name, k, results["training"].get(name), note) for k in s.student_eval_steps]
    for name in REFERENCES:
        rows += [
            _row(lab, name, k, results["training"].get(name), " (reference)") for k in s.student_eval_steps
        ]
    choose_rows = ["| student | one-step onset F1 | FD |", "|---|---|---|"]
    for name in lab.active:
        record = _read_eval(lab, name, "choose", 1)
        if record is not None:
            m = record["metrics"]
            choose_rows.append(f"| {name} | {m['onset_f1']:.3f} | {m['frechet_distance']:.2f} |")
    sc = results["scenes"]
    stages = ", ".join(f"{k} {v:.1f}" for k, v in results["timings_minutes"].items())
    session_path = lab.out / "session.json"
    runner = ""
    if session_path.is_file():
        session = json.loads(session_path.read_text())
        minutes = (time.time() - session["started"]) / 60
        cached = ", ".join(session["cached_at_start"]) or "nothing"
        results["runner"] = {"minutes": minutes, "cached_at_start": session["cached_at_start"]}
        (lab.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        runner = f"Runner wall-clock: {minutes:.1f} min, start to table (cached at its start: {cached})."
    text = "\n".join(
        [
            f"# Distillation lab ({lab.scale_name} scale)",
            "",
            f"Training scenes: seeds {sc['train'][0]}–{sc['train'][1]}; choosing scenes: "
            f"{sc['choose'][0]}–{sc['choose'][1]}; report scenes: {sc['report'][0]}–{sc['report'][1]} "
            f"(generation seed {NOISE_SEED} + scene seed). Recommended student (chosen on the choosing "
            f"scenes): **{choice}**. {results['machine']}.",
            "",
            "Report scenes:",
            "",
            *[r for r in rows if r is not None],
            "",
            "Choosing scenes (one step):",
            "",
            *choose_rows,
            "",
            f"Stage wall-clock (min): {stages}",
            "",
            runner,
            "",
        ]
    )
    (lab.out / "results.md").write_text(text)
    print(text)
    return results


def _done_file(path: Callable[[Lab], Path]) -> Callable[[Lab], bool]:
    return lambda lab: path(lab).is_file()


def _store_complete(lab: Lab) -> bool:
    meta = lab.store / "meta.json"
    return meta.is_file() and bool(json.loads(meta.read_text()).get("complete", False))


def _evaluation(name: str, scenes: str, steps: tuple[int, ...]) -> Callable[[Lab], None]:
    return lambda lab: evaluate(lab, name, scenes, steps)


def all_tasks(lab: Lab) -> list[Task]:
    """The lab's stages in order of priority (the runner starts the first whose inputs are ready)."""
    s = lab.scale
    tasks = [
        Task("data", stage_data, done=_store_complete),
        Task("teacher", stage_teacher, ("data",), done=_done_file(lambda lab: lab.teacher / "config.json")),
        Task(
            "mf_scratch",
            stage_reference,
            ("data",),
            done=_done_file(lambda lab: lab.student("mf_scratch") / "config.json"),
        ),
        Task("endpoints", stage_endpoints, ("teacher",)),
    ]
    for name in lab.active:
        recipe = RECIPES[name]
        deps = ("teacher", "endpoints") if recipe.endpoint_weight > 0 else ("teacher",)
        done = _done_file(lambda lab, n=name: lab.student(n) / "config.json")
        tasks.append(Task(f"student:{name}", lambda lab, n=name: stage_student(lab, n), deps, done=done))
        tasks.append(Task(f"choose:{name}", _evaluation(name, "choose", (1,)), (f"student:{name}",)))
    tasks.append(Task("choice", choose_student, tuple(f"choose:{n}" for n in lab.active)))
    tasks.append(Task("report:teacher", _evaluation("teacher", "report", s.teacher_eval_steps), ("teacher",)))
    for name in [*lab.active, *REFERENCES]:
        dep = name if name in REFERENCES else f"student:{name}"
        tasks.append(Task(f"report:{name}", _evaluation(name, "report", s.student_eval_steps), (dep,)))
    tasks.append(Task("table", stage_report, tuple(t.name for t in tasks)))
    return tasks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="lab directory (everything is cached here)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="stages run side by side (subprocesses)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument(
        "--recipes", nargs="+", choices=list(RECIPES), default=None,
        help="train and compare these students (default: DEFAULT_RECIPES)",
    )  # fmt: skip
    parser.add_argument(
        "--task", default=None, help=argparse.SUPPRESS
    )  # one stage (the runner's subprocesses)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    torch.set_num_threads(threads)
    lab = Lab(args.out.resolve(), args.scale, args.device, threads, tuple(args.recipes or ()))
    lab.out.mkdir(parents=True, exist_ok=True)
    tasks = all_tasks(lab)
    if args.task is not None:
        _timed(lab, next(t for t in tasks if t.name == args.task))
        return
    base = ["--out", str(lab.out), "--scale", args.scale, "--device", args.device, "--threads", str(threads)]
    if args.recipes:
        base += ["--recipes", *args.recipes]
    # the runner's own wall-clock, for the table: how long this invocation took, and what it found cached
    session = {"started": time.time(), "cached_at_start": [t.name for t in tasks if t.done(lab)]}
    (lab.out / "session.json").write_text(json.dumps(session, indent=2) + "\n")
    run_tasks(lab, tasks, args.jobs, base)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
