"""MeanFlow distillation: the target, the student's initialisation, teacher samples and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from stacks import randomize
from torch import nn

import mfmjt.sampler
from mfmjt.cli import main
from mfmjt.distill import (
    SAMPLES_META_NAME,
    DistillationLoss,
    TeacherSampleConfig,
    fold_dt_embedding,
    load_teacher,
    student_from_teacher,
    teacher_samples,
    teacher_velocity,
)
from mfmjt.feature_store import FeatureStore, FeatureStoreWriter
from mfmjt.meanflow import MeanFlowConfig, TimePairs, TrainingGuidance, meanflow_loss
from mfmjt.model import MFMJTNetwork, NetworkConfig
from mfmjt.model_dir import load_network, read_metadata, save_network
from mfmjt.pipeline import default_model_dir, load_pipeline

MICRO = {"hidden_dim": 32, "depth": 2, "fused_depth": 1, "num_heads": 2, "sync_dim": 48}
SHAPES = {"latent": (16, 20), "clip_f": (4, 32), "sync_f": (16, 48), "text_f": (77, 32)}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ an analytic teacher and student
class LinearTeacher(nn.Module):
    """v(z, c, t) = a·z + b·t + c: linear in z and t, the condition c (shaped like z) an offset."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.register_buffer("ab", torch.tensor([a, b], dtype=torch.float64))

    @property
    def device(self) -> torch.device:
        return self.ab.device

    def forward(self, z, c, t, dt, **_):
        a, b = self.ab
        return a * z + b * t.view(-1, 1, 1) + c


class AffineStudent(nn.Module):
    """u(z, r, t) = p·z + q·t + s·r + g·(ω - 1): du/dt along (v, 1) with r fixed is p·v + q."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.q, self.s, self.g = (nn.Parameter(torch.tensor(v, dtype=torch.float64)) for v in
                                          (0.7, -0.4, 0.3, 0.5))  # fmt: skip
        self.seen_strength: list[torch.Tensor] = []

    def forward(self, z, c, t, dt, cfg_strength=None, scaled=None):
        if cfg_strength is None:
            cfg_strength = torch.ones_like(t)
        self.seen_strength.append(cfg_strength.detach().clone())
        r = t - dt
        view = (-1, 1, 1)
        u = self.p * z + self.q * t.view(view) + self.s * r.view(view)
        return u + self.g * (cfg_strength - 1).view(view)


def _analytic_case():
    g = torch.Generator().manual_seed(3)
    b, shape = 6, (6, 3, 2)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    cond = torch.randn(shape, generator=g, dtype=torch.float64)
    uncond = torch.randn(1, *shape[1:], generator=g, dtype=torch.float64)
    t = torch.tensor([0.9, 0.5, 0.3, 1.0, 0.6, 0.8], dtype=torch.float64)
    r = torch.tensor([0.2, 0.5, 0.1, 0.0, 0.6, 0.25], dtype=torch.float64)
    pairs = TimePairs(r=r, t=t, mean=r != t)
    strength = torch.tensor([1.0, 2.0, 3.0, 1.5, 2.5, 1.0], dtype=torch.float64)
    scaled = torch.tensor([False, False, True, True, False, True])
    guidance = TrainingGuidance(strength, scaled, (uncond,))
    return b, x, eps, cond, uncond, pairs, guidance


def _hand_guided_velocity(a, bb, z, t, cond, uncond, guidance):
    v_c = a * z + bb * t.view(-1, 1, 1) + cond
    v_u = a * z + bb * t.view(-1, 1, 1) + uncond.expand_as(z)
    out = []
    for i in range(z.shape[0]):
        w = guidance.strength[i]
        s = (v_c[i] * v_u[i]).sum() / (v_u[i] * v_u[i]).sum() if guidance.scaled[i] else 1.0
        out.append(v_c[i] if w == 1 else w * v_c[i] + (1 - w) * s * v_u[i])
    return torch.stack(out)


def test_teacher_velocity_is_the_guided_combination_standard_and_scaled():
    b, x, eps, cond, uncond, pairs, guidance = _analytic_case()
    teacher = LinearTeacher(0.8, -1.3)
    z = (1 - pairs.t.view(-1, 1, 1)) * x + pairs.t.view(-1, 1, 1) * eps
    got = teacher_velocity(teacher, z, pairs.t, (cond,), guidance)
    torch.testing.assert_close(got, _hand_guided_velocity(0.8, -1.3, z, pairs.t, cond, uncond, guidance))


def test_distillation_target_matches_the_closed_form_and_r_equal_t_learns_the_guided_velocity():
    b, x, eps, cond, uncond, pairs, guidance = _analytic_case()
    a, bb = 0.8, -1.3
    student = AffineStudent()
    loss = DistillationLoss(LinearTeacher(a, bb))(
        student, x, (cond,), config=MeanFlowConfig(), guidance=guidance, pairs=pairs, noise=eps
    )
    t, r = pairs.t.view(-1, 1, 1), pairs.r.view(-1, 1, 1)
    z = (1 - t) * x + t * eps  # the project's convention: t = 1 is noise
    v = _hand_guided_velocity(a, bb, z, pairs.t, cond, uncond, guidance)
    p, q, s, gg = (float(w.detach()) for w in (student.p, student.q, student.s, student.g))
    u = p * z + q * t + s * r + gg * (guidance.strength.view(-1, 1, 1) - 1)
    target = v - (t - r) * (p * v + q)  # u_tgt = v - (t - r)·(v·∂z u + ∂t u), closed form
    expected = (u - target).square().mean(dim=(1, 2))
    tol = dict(rtol=1e-5, atol=1e-7)  # the loss reduces in float32
    torch.testing.assert_close(loss.per_sample, expected, **tol)
    same = ~pairs.mean  # r = t: the target is the teacher's guided velocity itself
    torch.testing.assert_close(loss.per_sample[same], (u - v).square().mean(dim=(1, 2))[same], **tol)
    torch.testing.assert_close(loss.loss, expected.sum() / b, **tol)
    # the student was told each sample's ω (plain forward rows, then the JVP rows)
    seen = torch.cat(student.seen_strength)
    order = torch.cat([same.nonzero().squeeze(1), pairs.mean.nonzero().squeeze(1)])
    torch.testing.assert_close(seen, guidance.strength[order])


def test_the_velocity_override_leaves_plain_meanflow_untouched():
    b, x, eps, cond, uncond, pairs, guidance = _analytic_case()
    student = AffineStudent()
    plain = meanflow_loss(student, x, (cond,), pairs=pairs, noise=eps, guidance=None)
    data = meanflow_loss(student, x, (cond,), pairs=pairs, noise=eps, velocity=lambda z, t: eps - x)
    torch.testing.assert_close(plain.per_sample, data.per_sample)


# ------------------------------------------------------------------------------- real networks
def _random_flow_matching_net(seed: int = 0) -> MFMJTNetwork:
    net = MFMJTNetwork(NetworkConfig.variant("tiny", **MICRO))
    randomize(net, seed)  # every weight random, the Δt embedder's output layer included
    return net.eval()


def _inputs(net: MFMJTNetwork, b: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    cfg = net.config
    return (
        torch.randn(b, 16, cfg.latent_dim, generator=g),
        torch.randn(b, 4, cfg.clip_dim, generator=g),
        torch.randn(b, 16, cfg.sync_dim, generator=g),
        torch.randn(b, 77, cfg.text_dim, generator=g),
        torch.rand(b, generator=g),
    )


def test_student_equals_the_teacher_at_init_for_any_r_and_any_guidance():
    original = _random_flow_matching_net()
    z, clip, sync, text, t = _inputs(original)
    with torch.no_grad():
        reference = original(z, clip, sync, text, t, torch.zeros_like(t))  # what flow matching trained
        assert not torch.allclose(reference, original(z, clip, sync, text, t, t * 0.5))  # Δt mattered
    teacher = fold_dt_embedding(_random_flow_matching_net())
    student = student_from_teacher(teacher).eval()
    assert student.config.guidance_embed and not teacher.config.guidance_embed
    assert not student.empty_clip_feat.requires_grad and not student.empty_sync_feat.requires_grad
    with torch.no_grad():
        for dt in (torch.zeros_like(t), t * 0.5, t):
            torch.testing.assert_close(teacher(z, clip, sync, text, t, dt), reference)
            for w, scaled in ((1.0, False), (2.5, False), (4.0, True)):
                u = student(z, clip, sync, text, t, dt, torch.full_like(t, w), scaled)
                torch.testing.assert_close(u, reference)


def test_guidance_embedding_receives_omega_and_learns_from_the_distillation_loss():
    teacher = fold_dt_embedding(_random_flow_matching_net()).requires_grad_(False)
    student = student_from_teacher(teacher)
    z, clip, sync, text, _ = _inputs(teacher, b=4)
    seen = []
    student.guidance_embed.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    strength = torch.tensor([1.0, 2.0, 3.0, 1.5])
    scaled = torch.tensor([False, True, False, True])
    empty = (teacher.empty_clip_feat, teacher.empty_sync_feat, teacher.empty_string_feat)
    guidance = TrainingGuidance(strength, scaled, empty)
    pairs = TimePairs(
        r=torch.tensor([0.2, 0.3, 0.5, 0.0]), t=torch.tensor([0.2, 0.9, 0.5, 1.0]),
        mean=torch.tensor([False, True, False, True]),
    )  # fmt: skip
    out = DistillationLoss(teacher)(
        student, z, (clip, sync, text), config=MeanFlowConfig(), guidance=guidance, pairs=pairs
    )
    got = torch.cat(seen)
    torch.testing.assert_close(got, strength[torch.tensor([0, 2, 1, 3])].to(got.dtype))
    out.loss.backward()
    assert student.guidance_embed.scaled.mlp[2].weight.grad.abs().sum() > 0
    assert student.guidance_embed.standard.mlp[2].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


# ------------------------------------------------------------------------------ teacher samples
def make_store(path: Path, n: int = 6, seed: int = 0, with_codec: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    lat = SHAPES["latent"]
    extra: dict = {"encoder": "random"}
    if with_codec:  # the embedded default's offline feature stack, so load_pipeline can run the model
        extra = {"features": read_metadata(default_model_dir())["features"]}
    with FeatureStoreWriter(path, n, SHAPES, duration=0.64, extra=extra) as writer:
        writer.write_batch(
            0,
            latent_mean=rng.normal(size=(n, *lat)).astype(np.float32),
            latent_std=rng.uniform(0.01, 0.1, size=(n, *lat)).astype(np.float32),
            clip_f=rng.normal(size=(n, *SHAPES["clip_f"])).astype(np.float32),
            sync_f=rng.normal(size=(n, *SHAPES["sync_f"])).astype(np.float32),
            text_f=rng.normal(size=(n, *SHAPES["text_f"])).astype(np.float32),
            has_video=np.arange(n) % 3 != 2,
            item_ids=[f"clip{i}" for i in range(n)],
            captions=["a ball bounces"] * n,
        )
        writer.set_empty_text(np.zeros(SHAPES["text_f"], dtype=np.float32))
    if with_codec:
        shutil.copy2(default_model_dir() / "codec.safetensors", path / "codec.safetensors")
    return path


def test_teacher_samples_are_made_once_resumed_after_an_interruption_and_checked(tmp_path, monkeypatch):
    teacher = fold_dt_embedding(_random_flow_matching_net()).requires_grad_(False)
    settings = TeacherSampleConfig(steps=2, cfg_strength=2.0, chunk=2)
    reference_store = FeatureStore(make_store(tmp_path / "a"))
    reference = np.array(teacher_samples(reference_store, teacher, "t", settings, progress=False))
    assert reference.shape == (6, 16, 20) and np.isfinite(reference).all() and reference.std() > 0

    store = FeatureStore(make_store(tmp_path / "b"))
    real_sample, calls = mfmjt.sampler.sample, []

    def interrupted(*args, **kwargs):
        calls.append(args[1].shape[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(mfmjt.sampler, "sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        teacher_samples(store, teacher, "t", settings, progress=False)
    assert json.loads((store.path / SAMPLES_META_NAME).read_text())["done"] == 2

    def counted(*args, **kwargs):
        calls.append(args[1].shape[0])
        return real_sample(*args, **kwargs)

    calls.clear()
    monkeypatch.setattr(mfmjt.sampler, "sample", counted)
    resumed = np.array(teacher_samples(store, teacher, "t", settings, progress=False))
    assert calls == [2, 2]  # items 2..5 only
    np.testing.assert_allclose(resumed, reference, rtol=1e-5, atol=1e-6)

    calls.clear()
    again = np.array(teacher_samples(store, teacher, "t", settings, progress=False))
    assert calls == [] and np.array_equal(again, resumed)  # reused, not recomputed
    with pytest.raises(ValueError, match="teacher samples made with"):
        teacher_samples(store, teacher, "t", TeacherSampleConfig(steps=3, chunk=2), progress=False)


def test_distill_cli_runs_resumes_exports_and_the_student_generates_in_one_step(tmp_path, monkeypatch):
    teacher = MFMJTNetwork(NetworkConfig.variant("tiny", **MICRO))
    randomize(teacher, 5)
    teacher_dir = save_network(teacher, tmp_path / "teacher", objective="flow_matching", variant="tiny")
    store = make_store(tmp_path / "store", with_codec=True)
    run = tmp_path / "run"
    args = [
        "distill", "--teacher", str(teacher_dir), "--store", str(store), "--out", str(run), "--steps", "4",
        "--batch-size", "3", "--x-source", "teacher", "--teacher-sample-steps", "2", "--no-progress",
        "--checkpoint-every", "2",
    ]  # fmt: skip
    assert main([*args, "--stop-after", "2"]) == 0
    assert (run / "checkpoint_last.pt").is_file() and not (run / "final").exists()
    samples_mtime = (store / "teacher_samples.npy").stat().st_mtime_ns

    def no_sampling(*a, **k):
        raise AssertionError("teacher samples were recomputed on resume")

    monkeypatch.setattr(mfmjt.sampler, "sample", no_sampling)
    assert main(args) == 0
    monkeypatch.undo()
    assert (store / "teacher_samples.npy").stat().st_mtime_ns == samples_mtime
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in log)
    meta = read_metadata(run / "final")
    assert meta["objective"] == "meanflow" and meta["network"]["guidance_embed"]
    assert meta["distillation"] == {
        "teacher": str(teacher_dir),
        "x_source": "teacher",
        "teacher_samples": {"steps": 2, "cfg_strength": 1.0, "guidance": "scaled", "seed": 0, "chunk": 16},
    }
    assert "distillation from the flow-matching teacher" in meta["lineage"][-1]

    student = load_network(run / "final")
    loaded_teacher = load_teacher(teacher_dir)
    changed = [k for k, v in student.state_dict().items() if not k.startswith("guidance_embed.")
               and not torch.equal(v, loaded_teacher.state_dict()[k])]  # fmt: skip
    assert changed  # it trained

    pipe = load_pipeline(str(run / "final"), device="cpu")
    result = pipe.generate(prompt="a ball bounces", duration=0.64, steps=1, cfg_strength=2.0)
    audio = result.audio["scaled"]
    assert np.isfinite(np.asarray(audio)).all() and np.abs(np.asarray(audio)).max() > 0


def test_an_mmaudio_checkpoint_file_is_a_teacher_of_its_inferred_variant(tmp_path):
    from safetensors.torch import save_file

    net = MFMJTNetwork(NetworkConfig.variant("tiny"))
    randomize(net, 7)
    mmaudio_state = {k: v for k, v in net.state_dict().items() if not k.startswith("dt_embed.")}
    save_file(mmaudio_state, str(tmp_path / "mmaudio_tiny.safetensors"))
    teacher = load_teacher(tmp_path / "mmaudio_tiny.safetensors")
    assert teacher.config == NetworkConfig.variant("tiny") and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    z, clip, sync, text, t = _inputs(net)
    with torch.no_grad():  # MMAudio's network has no Δt input: the teacher ignores it, like None
        torch.testing.assert_close(teacher(z, clip, sync, text, t, t * 0.7), net(z, clip, sync, text, t))
    with pytest.raises(ValueError, match="not found on disk and not a known name"):
        load_teacher("no-such-teacher")
