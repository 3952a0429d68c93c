"""What every extractor shares: the device, eval mode, no gradients, and batching of equal-length items."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def as_batch(waveforms: Sequence[np.ndarray], device: torch.device | str) -> torch.Tensor:
    """Stack mono waveforms of equal length into a float32 (B, L) tensor."""
    arrays = [np.asarray(w, dtype=np.float32) for w in waveforms]
    for i, a in enumerate(arrays):
        if a.ndim != 1:
            raise ValueError(f"waveform {i} has shape {a.shape}; pass mono 1-D arrays")
    lengths = {a.shape[0] for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"waveforms of one batch must have one length, got {sorted(lengths)}")
    return torch.from_numpy(np.stack(arrays)).to(device)


def to_numpy(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().float().cpu().numpy() for k, v in tensors.items()}


def run_grouped(waveforms: Sequence[np.ndarray], fn, device: torch.device | str) -> dict[str, np.ndarray]:
    """Run ``fn`` ((B, L) tensor -> dict of tensors) on each group of equal-length waveforms and put the
    outputs back in input order. Outputs whose shape depends on the length (frames) must agree."""
    if len(waveforms) == 0:
        raise ValueError("no waveforms given")
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(waveforms):
        groups.setdefault(int(np.shape(w)[-1]), []).append(i)
    out: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for indices in groups.values():
            result = to_numpy(fn(as_batch([waveforms[i] for i in indices], device)))
            for key, value in result.items():
                if key not in out:
                    out[key] = np.zeros((len(waveforms), *value.shape[1:]), dtype=np.float32)
                elif out[key].shape[1:] != value.shape[1:]:
                    raise ValueError(
                        f"{key!r} has shape {value.shape[1:]} for some waveforms and {out[key].shape[1:]} "
                        "for others; crop the waveforms to one length"
                    )
                out[key][indices] = value
    return out
