"""How much memory an MMAudio-size pipeline needs, from parameter counts, told before it loads.

The weights are counted exactly on the meta device (no allocation): the network in its run dtype, the
feature stack (CLIP, Synchformer, VAE, vocoder) in float32, as :class:`mfmjt.pipeline.Pipeline` keeps
them. Working memory (activations of one request of 8 s, allocator slack, the Python process) is a
per-mode allowance measured by ``benchmarks/model_memory.py`` (docs/models.md), scaled with the
duration. On a CPU the estimate is logged before loading, and loading stops with
:class:`InsufficientMemoryError` when the machine has less memory in total than the estimate.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_GIB = 2**30
# Parameters of open_clip's DFN5B ViT-H/14-384 (visual 632,682,240 + text), counted by the reference
# run of open_clip (shared/reference/mmaudio/clip_facts.json); building it needs its Hub config.
CLIP_PARAMETERS = 986_714_881
# Memory beyond the weights for one 8 s request, scaled linearly with longer durations. Measured by
# benchmarks/model_memory.py (docs/models.md), CPU float32, one step with CFG + VAE + vocoder: peak RSS
# minus weights is 0.8 GiB (16k) and 1.0 GiB (44k), 0.5 GiB of which is the Python process with torch.
# That run leaves out the video encoders, which run before the network (so their activations do not add
# to the decoder's): CLIP's largest activation, the MLP hidden state of its 64-frame chunk, is
# 64 · 730 tokens · 5120 · 4 B = 0.96 GB, about 1.5 GB per layer with the residual stream and q, k, v
# (not measured). The allowance covers that stage.
WORKING_BYTES_8S: dict[str, int] = {"16k": int(2.5 * _GIB), "44k": int(2.5 * _GIB)}


class InsufficientMemoryError(MemoryError):
    """The machine has less memory than the pipeline needs; the message says how much and what to do."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Parameter counts per part and the bytes a pipeline needs for one request."""

    variant: str
    network_dtype: torch.dtype
    parameters: dict[str, int]  # part -> parameter (and buffer) count
    weight_bytes: dict[str, int]  # part -> bytes in the dtype it runs in
    working_bytes: int
    duration: float

    @property
    def total_bytes(self) -> int:
        return sum(self.weight_bytes.values()) + self.working_bytes

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / 1e6:,.0f}M" for k, v in self.parameters.items())
        dtype = str(self.network_dtype).removeprefix("torch.")
        return (
            f"MMAudio {self.variant} needs about {self.total_bytes / _GIB:.1f} GiB of memory: "
            f"{sum(self.weight_bytes.values()) / _GIB:.1f} GiB of weights (parameters: {parts}; network in "
            f"{dtype}, features in float32) and about {self.working_bytes / _GIB:.1f} GiB to generate "
            f"{self.duration:g} s"
        )


def _count(module: torch.nn.Module) -> int:
    return sum(t.numel() for t in module.state_dict().values())


@cache
def feature_parameters(audio_mode: str) -> dict[str, int]:
    """Parameter counts of the feature stack of ``audio_mode`` ('16k' or '44k')."""
    from mfmjt.features.synchformer import SynchformerConfig, SynchformerEncoder
    from mfmjt.features.vae import VAE
    from mfmjt.features.vocoder import BigVGANVocoder

    with torch.device("meta"):
        return {
            "clip": CLIP_PARAMETERS,
            "synchformer": _count(SynchformerEncoder(SynchformerConfig.full())),
            "vae": _count(VAE(audio_mode)),
            "vocoder": _count(BigVGANVocoder(audio_mode)),
        }


@cache
def network_parameters(variant: str) -> int:
    from mfmjt.config import NetworkConfig
    from mfmjt.model.network import MFMJTNetwork

    with torch.device("meta"):
        return _count(MFMJTNetwork(NetworkConfig.variant(variant)))


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def estimate_pipeline_memory(
    variant: str, dtype: torch.dtype = torch.float32, duration: float = 8.0
) -> MemoryEstimate:
    """Memory for MMAudio ``variant`` with its network in ``dtype`` generating ``duration`` seconds."""
    from mfmjt.weights import pipeline_weights

    audio_mode = pipeline_weights(variant).audio_mode
    parameters = {"network": network_parameters(variant), **feature_parameters(audio_mode)}
    weight_bytes = {k: v * (_dtype_bytes(dtype) if k == "network" else 4) for k, v in parameters.items()}
    working = int(WORKING_BYTES_8S[audio_mode] * max(1.0, duration / 8.0))
    return MemoryEstimate(variant, dtype, parameters, weight_bytes, working, duration)


def total_memory_bytes() -> int | None:
    """Physical memory of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory_bytes() -> int | None:
    """Memory available to a new allocation without swapping (Linux ``MemAvailable``), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory_before_loading(estimate: MemoryEstimate, device: torch.device | str) -> None:
    """On a CPU: log what the pipeline needs; warn when less is available now; raise
    :class:`InsufficientMemoryError` when the machine has less in total. GPUs are left to torch."""
    if torch.device(device).type != "cpu":
        return
    message = estimate.describe()
    total, available = total_memory_bytes(), available_memory_bytes()
    advice = (
        "Use a GPU (the network then runs in bfloat16), a smaller model such as mmaudio-small-44k, or a "
        "machine with more memory."
    )
    if total is not None and total < estimate.total_bytes:
        raise InsufficientMemoryError(
            f"{message}; this machine has {total / _GIB:.1f} GiB in total. {advice}"
        )
    if available is not None and available < estimate.total_bytes:
        logger.warning(
            "%s; only %.1f GiB are free now, expect swapping. %s", message, available / _GIB, advice
        )
    else:
        logger.info("%s.", message)
