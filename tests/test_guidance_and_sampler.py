"""Guidance arithmetic (Eq. 7-9) and the MeanFlow sampler (Eq. 6)."""

from __future__ import annotations

import pytest
import torch
from stacks import randomize

from mfmjt.guidance import guide, projection_scale
from mfmjt.model import Conditions, MFMJTNetwork, NetworkConfig
from mfmjt.sampler import sample, time_grid


def test_standard_cfg_is_the_linear_blend():
    u_c, u_u = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    torch.testing.assert_close(guide(u_c, u_u, 4.5, "standard"), 4.5 * u_c - 3.5 * u_u)


def test_scaled_cfg_equals_standard_when_predictions_align():
    u_u = torch.randn(2, 5, 3)
    u_c = 1.0 * u_u  # s = 1
    torch.testing.assert_close(guide(u_c, u_u, 2.5, "scaled"), guide(u_c, u_u, 2.5, "standard"))


def test_scale_is_the_per_sample_projection_coefficient():
    u_u = torch.randn(3, 4, 2)
    u_c = torch.stack([2.0 * u_u[0], -0.5 * u_u[1], torch.zeros(4, 2)])
    s = projection_scale(u_c, u_u)
    assert s.shape == (3, 1, 1)
    torch.testing.assert_close(s.flatten(), torch.tensor([2.0, -0.5, 0.0]))
    w = 1.5
    expected = w * u_c + (1 - w) * s * u_u
    torch.testing.assert_close(guide(u_c, u_u, w, "scaled"), expected)


def test_scaled_cfg_is_finite_when_unconditional_prediction_vanishes():
    u_c = torch.randn(2, 5, 3)
    u_u = torch.zeros(2, 5, 3)
    u_u[1] = 1e-30  # underflows when squared
    out = guide(u_c, u_u, 4.5, "scaled")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, 4.5 * u_c)  # s·u_∅ ~ 0


def test_scaled_cfg_removes_the_component_orthogonal_to_nothing():
    """With u_∅ orthogonal to u_c, s = 0: scaled guidance is ω·u_c, standard adds (1-ω)·u_∅."""
    u_c = torch.tensor([[[1.0, 0.0]]])
    u_u = torch.tensor([[[0.0, 1.0]]])
    torch.testing.assert_close(guide(u_c, u_u, 3.0, "scaled"), 3.0 * u_c)
    torch.testing.assert_close(guide(u_c, u_u, 3.0, "standard"), torch.tensor([[[3.0, -2.0]]]))


def test_omega_one_needs_no_unconditional_prediction():
    u_c = torch.randn(1, 4, 2)
    assert guide(u_c, None, 1.0, "scaled") is u_c


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_invalid_guidance_strength_is_rejected(bad):
    with pytest.raises(ValueError, match="cfg_strength"):
        guide(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), bad)


def test_time_grid_runs_from_noise_to_data():
    grid = time_grid(4)
    assert grid.dtype == torch.float64
    assert grid.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError, match="steps"):
        time_grid(0)


class CountingNetwork(MFMJTNetwork):
    """A tiny network that records the batch size of every forward."""

    def __init__(self) -> None:
        super().__init__(NetworkConfig.variant("tiny"))
        randomize(self, 0)
        self.calls: list[int] = []

    def inner_velocity(self, latent, tau, conditions, dt=None, *guidance):
        self.calls.append(latent.shape[0])
        return super().inner_velocity(latent, tau, conditions, dt, *guidance)


class GuidedCountingNetwork(CountingNetwork):
    """The same, with a (random) guidance embedding: guidance learnt in training."""

    def __init__(self) -> None:
        MFMJTNetwork.__init__(self, NetworkConfig.variant("tiny", guidance_embed=True))
        randomize(self, 0)
        self.calls = []


def conditions_for(net: MFMJTNetwork, b: int = 2, seed: int = 0) -> tuple[Conditions, Conditions]:
    g = torch.Generator().manual_seed(seed)
    cond = net.preprocess_conditions(
        torch.randn(b, 16, 32, generator=g),
        torch.randn(b, 48, 24, generator=g),
        torch.randn(b, 77, 32, generator=g),
        50,
    )
    return cond, net.empty_conditions(b, 50, 16, 48)


@torch.no_grad()
def test_one_step_is_z1_minus_u_at_r0_t1():
    net = CountingNetwork().eval()
    cond, empty = conditions_for(net)
    noise = torch.randn(2, 50, 20)
    out = sample(net, noise, cond, empty, steps=1, cfg_strength=1.0, guidance="scaled")
    expected = noise - net.predict(noise, 1.0, 1.0, cond)
    torch.testing.assert_close(out["scaled"], expected)
    assert net.calls[-1] == 2  # one conditional forward only when ω = 1


@torch.no_grad()
def test_guided_step_batches_conditional_and_unconditional_in_one_forward():
    net = CountingNetwork().eval()
    cond, empty = conditions_for(net)
    noise = torch.randn(2, 50, 20)
    out = sample(net, noise, cond, empty, steps=1, cfg_strength=1.5, guidance="standard")
    assert net.calls == [4]
    u_c, u_u = net.predict(noise, 1.0, 1.0, cond), net.predict(noise, 1.0, 1.0, empty)
    torch.testing.assert_close(out["standard"], noise - (1.5 * u_c - 0.5 * u_u), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_both_returns_standard_and_scaled_from_the_same_noise_and_forwards():
    net = CountingNetwork().eval()
    cond, empty = conditions_for(net)
    noise = torch.randn(2, 50, 20)
    both = sample(net, noise, cond, empty, steps=3, cfg_strength=4.5, guidance="both")
    calls_both = list(net.calls)
    assert calls_both == [4, 8, 8]  # shared first step, then both trajectories in one forward
    standard = sample(net, noise, cond, empty, steps=3, cfg_strength=4.5, guidance="standard")["standard"]
    scaled = sample(net, noise, cond, empty, steps=3, cfg_strength=4.5, guidance="scaled")["scaled"]
    torch.testing.assert_close(both["standard"], standard, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both["scaled"], scaled, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both["standard"], both["scaled"])


@torch.no_grad()
def test_multi_step_follows_eq6_with_dt_of_each_interval():
    net = CountingNetwork().eval()
    with torch.no_grad():
        net.dt_embed.mlp[2].weight.normal_()  # make Δt matter
    cond, _ = conditions_for(net, b=1)
    noise = torch.randn(1, 50, 20)
    out = sample(net, noise, cond, steps=2, cfg_strength=1.0, guidance="standard")["standard"]
    z = noise - 0.5 * net.predict(noise, 1.0, 0.5, cond)
    z = z - 0.5 * net.predict(z, 0.5, 0.5, cond)
    torch.testing.assert_close(out, z)


@torch.no_grad()
def test_same_seed_gives_the_same_sample():
    net = CountingNetwork().eval()
    cond, empty = conditions_for(net)

    def run(seed: int) -> torch.Tensor:
        noise = torch.randn(2, 50, 20, generator=torch.Generator().manual_seed(seed))
        return sample(net, noise, cond, empty, steps=2, cfg_strength=2.5, guidance="scaled")["scaled"]

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_sampler_rejects_bad_requests():
    net = CountingNetwork().eval()
    cond, empty = conditions_for(net)
    noise = torch.randn(2, 50, 20)
    with pytest.raises(ValueError, match="guidance"):
        sample(net, noise, cond, empty, guidance="loud")
    with pytest.raises(ValueError, match="unconditional"):
        sample(net, noise, cond, None, cfg_strength=2.0)
    with pytest.raises(ValueError, match="steps"):
        sample(net, noise, cond, empty, steps=0)
    with pytest.raises(ValueError, match="noise batch"):
        sample(net, noise[:1], cond, empty)
    with pytest.raises(ValueError, match="latent must have shape"):
        sample(net, torch.randn(2, 49, 20), cond, empty)


@torch.no_grad()
def test_guidance_in_network_is_one_forward_per_step_with_omega_and_mode():
    net = GuidedCountingNetwork().eval()
    cond, _ = conditions_for(net)
    noise = torch.randn(2, 50, 20)
    out = sample(net, noise, cond, steps=2, cfg_strength=2.5, guidance="scaled")["scaled"]
    assert net.calls == [2, 2]  # no unconditional branch
    z = noise - 0.5 * net.predict(noise, 1.0, 0.5, cond, 2.5, True)
    z = z - 0.5 * net.predict(z, 0.5, 0.5, cond, 2.5, True)
    torch.testing.assert_close(out, z)
    net.calls.clear()
    both = sample(net, noise, cond, steps=2, cfg_strength=2.5, guidance="both")
    assert net.calls == [4, 4]  # both modes batched
    torch.testing.assert_close(both["scaled"], out, atol=1e-5, rtol=1e-5)
    standard = sample(net, noise, cond, steps=2, cfg_strength=2.5, guidance="standard")["standard"]
    torch.testing.assert_close(both["standard"], standard, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both["standard"], both["scaled"])
    unguided = sample(net, noise, cond, steps=1, cfg_strength=1.0, guidance="both")
    assert torch.equal(unguided["standard"], unguided["scaled"])
    torch.testing.assert_close(unguided["scaled"], noise - net.predict(noise, 1.0, 1.0, cond))


@torch.no_grad()
def test_a_guidance_embedded_network_can_still_use_two_pass_cfg_but_a_plain_one_cannot_go_one_pass():
    net = GuidedCountingNetwork().eval()
    cond, empty = conditions_for(net)
    noise = torch.randn(2, 50, 20)
    out = sample(net, noise, cond, empty, cfg_strength=1.5, guidance="standard", guidance_in_network=False)
    u_c, u_u = net.predict(noise, 1.0, 1.0, cond), net.predict(noise, 1.0, 1.0, empty)
    torch.testing.assert_close(out["standard"], noise - (1.5 * u_c - 0.5 * u_u), atol=1e-5, rtol=1e-5)
    plain = CountingNetwork().eval()
    with pytest.raises(ValueError, match="guidance embedding"):
        sample(plain, noise, cond, empty, guidance_in_network=True)
    with pytest.raises(ValueError, match="no guidance embedding"):
        plain.predict(noise, 1.0, 1.0, cond, 1.5)


# ------------------------------------------------------------------ the sampler over any velocity model
class _Batch:
    """Conditions as the sampler sees them: a batch size, concatenation and repetition."""

    def __init__(self, c: torch.Tensor) -> None:
        self.c = c

    @property
    def batch_size(self) -> int:
        return self.c.shape[0]

    def cat(self, other: _Batch) -> _Batch:
        return _Batch(torch.cat([self.c, other.c]))

    def repeat(self, times: int) -> _Batch:
        return _Batch(self.c.repeat(times, *([1] * (self.c.dim() - 1))))


class _Linear:
    """u(z, t) = z - c: the flow whose Euler steps have a closed form (no network anywhere)."""

    def predict(self, latent, t, dt, conditions, cfg_strength=None, scaled=False):
        return latent - conditions.c


def test_the_sampler_integrates_any_velocity_model_in_closed_form():
    z1, c, u = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.zeros(2, 3, 4)
    out = sample(_Linear(), z1, _Batch(c), _Batch(u), steps=4, cfg_strength=2.0, guidance="standard")
    # each step h = 1/4 maps z to z - h (w (z - c) + (1 - w)(z - 0)) = (1 - h) z + h w c, four times
    expected = z1.clone()
    for _ in range(4):
        expected = 0.75 * expected + 0.25 * 2.0 * c
    torch.testing.assert_close(out["standard"], expected)


def test_the_sampler_imports_nothing_of_the_network():
    import subprocess
    import sys

    code = "import sys, mfmjt.sampler; print(any(m.startswith('mfmjt.model') for m in sys.modules))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"
