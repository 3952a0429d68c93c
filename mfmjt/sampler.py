"""MeanFlow sampling (paper Eq. 6): z_r = z_t - (t - r)·u(z_t, r, t), from t=1 (noise) to t=0.

One step is the special case z_0 = z_1 - u(z_1, 0, 1). A flow-matching network (Δt ignored)
sampled with many steps is plain Euler integration. A network with a guidance embedding (guidance
learnt in training) is guided in one forward per step and mode; others use CFG's two forwards.

The sampler knows only tensors: it drives any :class:`VelocityModel` (the MF-MJT network is one)
over any :class:`BatchConditions`, and imports nothing of the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch

from mfmjt.guidance import check_cfg_strength, check_guidance, guide, needs_unconditional

ProgressCallback = Callable[[int, int], None]
C = TypeVar("C", bound="BatchConditions")


class BatchConditions(Protocol):
    """A batch of conditions the velocity model reads (``mfmjt.model.network.Conditions`` is one)."""

    @property
    def batch_size(self) -> int: ...

    def cat(self: C, other: C) -> C: ...

    def repeat(self: C, times: int) -> C: ...


class VelocityModel(Protocol):
    """What the sampler calls: the average velocity u(z_t, r = t - Δt, t) (t = 1 noise, t = 0 data),
    optionally guided at ω in one forward (``scaled``: the guidance rule per row)."""

    def predict(
        self,
        latent: torch.Tensor,
        t: torch.Tensor,
        dt: torch.Tensor,
        conditions: Any,
        cfg_strength: float | None = None,
        scaled: bool | torch.Tensor = False,
    ) -> torch.Tensor: ...


def learnt_guidance(net: Any) -> bool:
    """Whether ``net`` has guidance learnt in training (a guidance embedding in its config)."""
    return bool(getattr(getattr(net, "config", None), "guidance_embed", False))


def time_grid(steps: int) -> torch.Tensor:
    """``steps + 1`` equally spaced times from 1 to 0, in float64 (exact for the time adapter)."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    return torch.linspace(1.0, 0.0, int(steps) + 1, dtype=torch.float64)


def predict_pair(
    net: VelocityModel,
    z: torch.Tensor,
    t: torch.Tensor,
    dt: torch.Tensor,
    pair_conditions: BatchConditions,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(u_c, u_∅) from one batched forward.

    ``pair_conditions`` is either the conditional batch alone (no guidance: u_∅ is None) or the
    conditional batch followed by the unconditional one (``cond.cat(uncond)``), twice ``z``'s batch.
    """
    b = z.shape[0]
    if pair_conditions.batch_size == b:
        return net.predict(z, t, dt, pair_conditions).float(), None
    if pair_conditions.batch_size != 2 * b:
        raise ValueError(
            f"conditions batch {pair_conditions.batch_size} must be {b} or {2 * b} for latent batch {b}"
        )
    u = net.predict(torch.cat([z, z]), t, dt, pair_conditions).float()
    return u[:b], u[b:]


@torch.no_grad()
def sample(
    net: VelocityModel,
    noise: torch.Tensor,
    conditions: BatchConditions,
    unconditional: BatchConditions | None = None,
    *,
    steps: int = 1,
    cfg_strength: float = 1.5,
    guidance: str = "scaled",
    progress: ProgressCallback | None = None,
    guidance_in_network: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Integrate from ``noise`` (z_1, ``[B, N, C]``) to data; returns ``{mode: z_0}`` (standardised latents).

    ``guidance="both"`` returns the standard and the scaled result from the same noise; their first
    step shares one forward, later steps batch both trajectories into one forward. ω = 1 runs the
    conditional branch only. ``guidance_in_network`` (default: whether the network has a guidance
    embedding) passes ω and the mode to the network instead; ``unconditional`` is then not used.
    """
    modes = check_guidance(guidance)
    w = check_cfg_strength(cfg_strength)
    grid = time_grid(steps).to(noise.device)
    if noise.shape[0] != conditions.batch_size:
        raise ValueError(
            f"noise batch {noise.shape[0]} differs from the conditions batch {conditions.batch_size}"
        )
    if guidance_in_network is None:
        guidance_in_network = learnt_guidance(net)
    if guidance_in_network:
        return _sample_guidance_in_network(net, noise, conditions, grid, w, modes, progress)
    guided = needs_unconditional(w)
    if guided and unconditional is None:
        raise ValueError(f"cfg_strength {w} != 1 needs unconditional conditions")
    single = conditions.cat(unconditional) if guided else conditions
    m = len(modes) if guided else 1  # without guidance every mode follows the same trajectory
    multi = (
        single
        if m == 1
        else (conditions.repeat(m).cat(unconditional.repeat(m)) if guided else conditions.repeat(m))
    )
    state = noise.float()
    states: list[torch.Tensor] = [state] * m
    for i in range(int(steps)):
        t, h = grid[i], grid[i] - grid[i + 1]
        if i == 0 or m == 1:  # all trajectories still share z_1 at the first step
            u_c, u_u = predict_pair(net, states[0], t, h, single)
            states = [states[0] - h.item() * guide(u_c, u_u, w, modes[j]) for j in range(m)]
        else:
            u_c, u_u = predict_pair(net, torch.cat(states), t, h, multi)
            u_cs = u_c.chunk(m)
            u_us = u_u.chunk(m) if u_u is not None else [None] * m
            states = [states[j] - h.item() * guide(u_cs[j], u_us[j], w, modes[j]) for j in range(m)]
        if progress is not None:
            progress(i + 1, int(steps))
    return {mode: states[j if guided else 0] for j, mode in enumerate(modes)}


def _sample_guidance_in_network(
    net: VelocityModel,
    noise: torch.Tensor,
    conditions: BatchConditions,
    grid: torch.Tensor,
    w: float,
    modes: tuple[str, ...],
    progress: ProgressCallback | None,
) -> dict[str, torch.Tensor]:
    """One forward per step for all modes at once: the network is told ω and the mode (a network
    without a guidance embedding refuses ω itself)."""
    steps = len(grid) - 1
    m = len(modes) if needs_unconditional(w) else 1  # at ω = 1 the modes coincide
    b = noise.shape[0]
    batch_conditions = conditions.repeat(m) if m > 1 else conditions
    scaled = torch.tensor([mode == "scaled" for mode in modes[:m]], device=noise.device).repeat_interleave(b)
    state = noise.float().repeat(m, *([1] * (noise.dim() - 1)))
    for i in range(steps):
        t, h = grid[i], grid[i] - grid[i + 1]
        state = state - h.item() * net.predict(state, t, h, batch_conditions, w, scaled).float()
        if progress is not None:
            progress(i + 1, steps)
    chunks = state.chunk(m)
    return {mode: chunks[j if m > 1 else 0] for j, mode in enumerate(modes)}
