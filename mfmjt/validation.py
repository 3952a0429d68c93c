"""Cheap validation during training, on items held out of the training stream.

For every held-out item the network generates its latent in one step from fixed noise,
x̂ = ε - u(ε, r=0, t=1) (in the network's normalised latent space), and is scored against the
stored posterior mean x (normalised the same way):

- ``val_one_step_mse``: mean squared error of x̂ (0 is perfect; an untrained network that outputs
  u = 0 scores about 1 + E[x²]);
- ``val_one_step_cos``: mean cosine similarity of x̂ and x per item;
- ``val_fm_loss``: the flow-matching error |u(z_t, t, t) - (ε - x)|² at t = 0.25, 0.5, 0.75.

Noise comes from its own generator with a fixed seed, so every validation of a run sees the same
noise and the training random stream is untouched (resumed runs stay exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mfmjt.data.mix import StoreMix
from mfmjt.model import MFMJTNetwork

VALIDATION_NOISE_SEED = 1_234_567
FM_TIMES = (0.25, 0.5, 0.75)


@torch.no_grad()
def validate(
    net: MFMJTNetwork,
    mix: StoreMix,
    indices: Sequence[int] | np.ndarray,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Validation metrics of ``net`` on global ``indices`` of ``mix`` (see the module docstring)."""
    indices = np.asarray(indices, dtype=np.int64)
    if not indices.size:
        raise ValueError("no held-out items to validate on")
    was_training = net.training
    net.eval()
    generator = torch.Generator().manual_seed(VALIDATION_NOISE_SEED)
    sums = {"val_one_step_mse": 0.0, "val_one_step_cos": 0.0, "val_fm_loss": 0.0}
    try:
        for start in range(0, len(indices), batch_size):
            batch = mix.get_batch(indices[start : start + batch_size])
            b = {k: v.to(device) for k, v in batch.items()}
            x = net.normalize(b["latent_mean"].float())
            noise = torch.randn(x.shape, generator=generator).to(device)
            no_video = ~b["has_video"].view(-1, 1, 1)
            clip_f = torch.where(no_video, net.empty_clip_feat.expand_as(b["clip_f"]), b["clip_f"])
            sync_f = torch.where(no_video, net.empty_sync_feat.expand_as(b["sync_f"]), b["sync_f"])
            conditions = net.preprocess_conditions(clip_f, sync_f, b["text_f"], x.shape[1])
            x_hat = noise - net.predict(noise, 1.0, 1.0, conditions).float()
            sums["val_one_step_mse"] += (x_hat - x).square().mean(dim=(1, 2)).sum().item()
            cos = torch.nn.functional.cosine_similarity(x_hat.flatten(1), x.flatten(1), dim=1)
            sums["val_one_step_cos"] += cos.sum().item()
            fm = 0.0
            for t in FM_TIMES:
                z = (1 - t) * x + t * noise
                u = net.predict(z, t, 0.0, conditions).float()
                fm += (u - (noise - x)).square().mean(dim=(1, 2)).sum().item()
            sums["val_fm_loss"] += fm / len(FM_TIMES)
    finally:
        net.train(was_training)
    return {k: v / len(indices) for k, v in sums.items()}


__all__ = ["validate"]
