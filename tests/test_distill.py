"""MeanFlow distillation: the target, the student's initialisation, teacher samples and the CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from stacks import randomize
from torch import nn

import mfmjt.sampler
from mfmjt.cli import main
from mfmjt.distill import (
    ENDPOINTS_META_NAME,
    SAMPLES_META_NAME,
    DistillationLoss,
    EndpointConfig,
    TeacherSampleConfig,
    fold_dt_embedding,
    load_teacher,
    student_from_teacher,
    teacher_endpoints,
    teacher_samples,
    teacher_velocity,
)
from mfmjt.feature_store import FeatureStore, FeatureStoreWriter
from mfmjt.meanflow import MeanFlowConfig, TimePairs, TrainingGuidance, meanflow_loss, sample_guidance
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


class AffineStudent3(AffineStudent):
    """AffineStudent taking any number of conditions (ignored), with "no condition" features and a
    guidance embedding, as the endpoint term calls it."""

    config = NetworkConfig.variant("tiny", guidance_embed=True)

    def __init__(self) -> None:
        super().__init__()
        self.empty_clip_feat = torch.zeros(1, 2, dtype=torch.float64)
        self.empty_sync_feat = torch.zeros(1, 2, dtype=torch.float64)
        self.empty_string_feat = torch.zeros(1, 2, dtype=torch.float64)
        self.seen_scaled: list[torch.Tensor] = []

    def forward(self, z, *conditions_t_dt, cfg_strength=None, scaled=None):
        if scaled is not None:
            self.seen_scaled.append(scaled.detach().clone())
        *_, t, dt = conditions_t_dt  # one condition (the MeanFlow term) or three (the endpoint term)
        return super().forward(z, None, t, dt, cfg_strength, scaled)


def _endpoint_case(n_items: int = 5, k: int = 2):
    g = torch.Generator().manual_seed(9)
    b, shape = 4, (3, 2)
    endpoints = torch.randn(n_items, k, 2, *shape, generator=g, dtype=torch.float64)
    index = torch.tensor([3, 0, 4, 3])
    batch = {
        "index": index,
        "clip_f": torch.randn(b, 1, 2, generator=g, dtype=torch.float64),
        "sync_f": torch.randn(b, 1, 2, generator=g, dtype=torch.float64),
        "text_f": torch.randn(b, 1, 2, generator=g, dtype=torch.float64),
        "has_video": torch.tensor([True, False, True, True]),
    }
    return b, shape, endpoints.numpy(), batch


def test_endpoint_term_is_the_one_step_distance_to_the_teachers_endpoint_in_closed_form():
    b, shape, endpoints, batch = _endpoint_case(k=1)
    student = AffineStudent3()
    teacher = LinearTeacher(0.8, -1.3)
    config = EndpointConfig(weight=0.7, noises=1, cfg_strength=4.5, guidance="scaled")
    x = torch.zeros(b, *shape, dtype=torch.float64)
    uncond = (torch.zeros(1, *shape, dtype=torch.float64),)
    guidance = TrainingGuidance(
        torch.full((b,), 4.5, dtype=torch.float64), torch.ones(b, dtype=torch.bool), uncond
    )
    out = DistillationLoss(teacher, meanflow_weight=0.0, endpoints=endpoints, endpoint_config=config)(
        student, x, (x,), config=MeanFlowConfig(), guidance=guidance, batch=batch
    )
    p, q, s_, gg = (float(w.detach()) for w in (student.p, student.q, student.s, student.g))
    eps = torch.from_numpy(endpoints[batch["index"].numpy(), 0, 0])
    x_teacher = torch.from_numpy(endpoints[batch["index"].numpy(), 0, 1])
    # one step from ε: x̂ = ε - u(ε, r=0, t=1, ω) with u = p·ε + q·1 + s·0 + g·(ω - 1)
    one_step = eps - (p * eps + q + gg * (4.5 - 1))
    expected = (one_step - x_teacher).square().mean(dim=(1, 2))
    torch.testing.assert_close(
        out.per_sample, expected.float().to(out.per_sample.dtype), rtol=1e-5, atol=1e-7
    )
    torch.testing.assert_close(out.loss, 0.7 * expected.mean().to(out.loss.dtype), rtol=1e-5, atol=1e-7)
    assert torch.equal(student.seen_strength[-1], torch.full((b,), 4.5))  # told the endpoints' ω
    assert student.seen_scaled[-1].all()  # and their rule
    out.loss.backward()
    assert float(student.p.grad) != 0  # the term trains the student
    assert student.s.grad is None or float(student.s.grad) == 0  # it only sees r = 0


def test_endpoint_term_with_the_adaptive_weight_is_err_over_detached_err_plus_c_to_the_p():
    b, shape, endpoints, batch = _endpoint_case(k=1)
    teacher = LinearTeacher(0.8, -1.3)
    x = torch.zeros(b, *shape, dtype=torch.float64)
    uncond = (torch.zeros(1, *shape, dtype=torch.float64),)
    guidance = TrainingGuidance(
        torch.full((b,), 4.5, dtype=torch.float64), torch.ones(b, dtype=torch.bool), uncond
    )
    losses, grads = {}, {}
    for power in (0.0, 1.0, 0.5):
        student = AffineStudent3()
        config = EndpointConfig(weight=0.7, noises=1, adaptive_power=power, adaptive_eps=0.01)
        out = DistillationLoss(teacher, meanflow_weight=0.0, endpoints=endpoints, endpoint_config=config)(
            student, x, (x,), config=MeanFlowConfig(), guidance=guidance, batch=batch
        )
        out.loss.backward()
        losses[power], grads[power] = out.loss.detach(), float(student.p.grad)
        err = out.per_sample.double()  # the unweighted per-sample error, whatever the weight
    for power in (1.0, 0.5):
        expected = 0.7 * (err / (err + 0.01) ** power).mean()
        torch.testing.assert_close(losses[power].double(), expected, rtol=1e-5, atol=1e-8)
    # p = 1: every sample's gradient is that of log(e + c), so large errors no longer dominate
    assert abs(grads[1.0]) < abs(grads[0.0])
    with pytest.raises(ValueError, match="adaptive"):
        EndpointConfig(adaptive_power=-1.0)


def test_endpoint_term_adds_to_the_weighted_meanflow_term_and_draws_one_noise_per_row():
    b, shape, endpoints, batch = _endpoint_case(k=2)
    b_, x, eps, cond, uncond, pairs, guidance = _analytic_case()
    x, eps = x[:b, :3, :2], eps[:b, :3, :2]
    cond, uncond = cond[:b, :3, :2], uncond[:, :3, :2]
    pairs = TimePairs(r=pairs.r[:b], t=pairs.t[:b], mean=pairs.mean[:b])
    guidance = TrainingGuidance(guidance.strength[:b], guidance.scaled[:b], (uncond,))
    teacher = LinearTeacher(0.8, -1.3)
    config = EndpointConfig(weight=2.0, noises=2, cfg_strength=3.0, guidance="standard")
    student = AffineStudent3()
    meanflow_only = DistillationLoss(teacher)(
        student, x, (cond,), config=MeanFlowConfig(), guidance=guidance, pairs=pairs, noise=eps
    )
    g = torch.Generator().manual_seed(4)
    both = DistillationLoss(teacher, meanflow_weight=0.5, endpoints=endpoints, endpoint_config=config)(
        student, x, (cond,), config=MeanFlowConfig(), guidance=guidance, pairs=pairs, noise=eps, generator=g,
        batch=batch,
    )  # fmt: skip
    k = torch.randint(2, (b,), generator=torch.Generator().manual_seed(4)).numpy()  # the same draw
    idx = batch["index"].numpy()
    e, x_teacher = torch.from_numpy(endpoints[idx, k, 0]), torch.from_numpy(endpoints[idx, k, 1])
    p, q, gg = (float(w.detach()) for w in (student.p, student.q, student.g))
    endpoint = (e - (p * e + q + gg * 2.0) - x_teacher).square().mean(dim=(1, 2)).mean()
    expected = 0.5 * meanflow_only.loss + 2.0 * endpoint
    torch.testing.assert_close(both.loss, expected.to(both.loss.dtype), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(both.per_sample, meanflow_only.per_sample)  # the log keeps the MeanFlow error
    assert not student.seen_scaled[-1].any()  # standard rule on the endpoint rows


def test_a_fixed_guidance_strength_and_a_shifted_range_are_drawn_as_configured():
    fixed = MeanFlowConfig(guidance_min=4.5, guidance_max=4.5, guidance_unguided_share=0.0)
    strength, _ = sample_guidance(256, fixed, torch.Generator().manual_seed(0))
    assert torch.equal(strength, torch.full((256,), 4.5))
    ranged = MeanFlowConfig(guidance_min=2.0, guidance_max=3.0, guidance_unguided_share=0.25)
    strength, _ = sample_guidance(4096, ranged, torch.Generator().manual_seed(0))
    guided = strength[strength != 1]
    assert guided.min() >= 2.0 and guided.max() <= 3.0 and abs(guided.mean().item() - 2.5) < 0.02
    assert abs((strength == 1).float().mean().item() - 0.25) < 0.03
    default, _ = sample_guidance(64, MeanFlowConfig(guidance_max=3.0), torch.Generator().manual_seed(1))
    assert default.min() >= 1.0  # the old range U[1, max] is the default
    with pytest.raises(ValueError, match="guidance_min"):
        MeanFlowConfig(guidance_min=3.5, guidance_max=3.0)


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


def test_teacher_endpoints_are_the_teachers_euler_samples_made_once_and_resumed(tmp_path, monkeypatch):
    teacher = fold_dt_embedding(_random_flow_matching_net()).requires_grad_(False)
    config = EndpointConfig(weight=1.0, noises=2, steps=3, cfg_strength=2.5, seed=5, chunk=4)
    store = FeatureStore(make_store(tmp_path / "a"))
    ends = np.array(teacher_endpoints(store, teacher, "t", config, progress=False))
    n = len(store)
    assert ends.shape == (n, 2, 2, 16, 20)
    # item 4, noise 1: flat index 1·N + 4; by hand, three Euler steps of the scaled-CFG velocity
    i, k = 4, 1
    noise = torch.randn(16, 20, generator=torch.Generator().manual_seed(5 + k * n + i))
    np.testing.assert_array_equal(ends[i, k, 0], noise.numpy())
    b = store.get_batch([i])
    has_video = bool(b["has_video"][0])
    clip = b["clip_f"] if has_video else teacher.empty_clip_feat.expand_as(b["clip_f"])
    sync = b["sync_f"] if has_video else teacher.empty_sync_feat.expand_as(b["sync_f"])
    z = noise[None]
    with torch.no_grad():
        for t0, t1 in ((1.0, 2 / 3), (2 / 3, 1 / 3), (1 / 3, 0.0)):
            t = torch.tensor([t0])
            v_c = teacher(z, clip, sync, b["text_f"], t, torch.zeros(1))
            v_u = teacher(z, teacher.empty_clip_feat.expand_as(clip), teacher.empty_sync_feat.expand_as(sync),
                          teacher.empty_string_feat.expand_as(b["text_f"]), t, torch.zeros(1))  # fmt: skip
            s = (v_c * v_u).sum() / (v_u * v_u).sum()
            z = z - (t0 - t1) * (2.5 * v_c + (1 - 2.5) * s * v_u)
    np.testing.assert_allclose(ends[i, k, 1], z[0].numpy(), rtol=1e-4, atol=1e-5)

    other = FeatureStore(make_store(tmp_path / "b"))
    real_sample, calls = mfmjt.sampler.sample, []

    def interrupted(*args, **kwargs):
        calls.append(args[1].shape[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(mfmjt.sampler, "sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        teacher_endpoints(other, teacher, "t", config, progress=False)
    assert json.loads((other.path / ENDPOINTS_META_NAME).read_text())["done"] == 4
    monkeypatch.setattr(mfmjt.sampler, "sample", real_sample)
    resumed = np.array(teacher_endpoints(other, teacher, "t", config, progress=False))
    np.testing.assert_allclose(resumed, ends, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(mfmjt.sampler, "sample", None)  # reused: sampling again would fail
    again = np.array(teacher_endpoints(other, teacher, "t", replace_weight(config, 3.0), progress=False))
    assert np.array_equal(again, resumed)
    with pytest.raises(ValueError, match="teacher endpoints made with"):
        teacher_endpoints(
            other, teacher, "t", EndpointConfig(weight=1.0, noises=2, steps=4, seed=5), progress=False
        )


def replace_weight(config: EndpointConfig, weight: float) -> EndpointConfig:
    from dataclasses import replace

    return replace(config, weight=weight)


def test_distill_cli_runs_resumes_exports_and_the_student_generates_in_one_step(tmp_path, monkeypatch):
    teacher = MFMJTNetwork(NetworkConfig.variant("tiny", **MICRO))
    randomize(teacher, 5)
    teacher_dir = save_network(teacher, tmp_path / "teacher", objective="flow_matching", variant="tiny")
    store = make_store(tmp_path / "store", with_codec=True)
    run = tmp_path / "run"
    args = [
        "distill", "--teacher", str(teacher_dir), "--store", str(store), "--out", str(run), "--steps", "4",
        "--batch-size", "3", "--x-source", "teacher", "--teacher-sample-steps", "2", "--no-progress",
        "--checkpoint-every", "2", "--meanflow-weight", "1", "--endpoint-weight", "0", "--guidance-min", "1",
        "--guidance-max", "3", "--guidance-unguided-share", "0.25",
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
        "meanflow_weight": 1.0,
        "endpoints": asdict(EndpointConfig(weight=0.0, noises=1)),
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
