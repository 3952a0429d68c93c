"""Input checks shared by the audio modules: one ValueError naming the tensor and its expected shape."""

from __future__ import annotations

import torch


def check_float_tensor(
    name: str, x: object, expected: str, ndim: int, sizes: dict[int, int] | None = None
) -> torch.Tensor:
    """Return ``x`` if it is a floating-point tensor with ``ndim`` dims and the given ``sizes``.

    ``expected`` is the shape as the user should read it (e.g. ``"[B, samples]"``); ``sizes`` maps a
    dimension index to its required size.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape {expected}, got dtype {x.dtype}")
    if x.dim() != ndim or any(x.shape[d] != n for d, n in (sizes or {}).items()):
        raise ValueError(f"{name} must have shape {expected}, got {list(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must have shape {expected} with no empty dimension, got {list(x.shape)}")
    return x
