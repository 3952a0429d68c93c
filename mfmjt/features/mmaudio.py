"""MMAudio's feature stack built from its resolved files: CLIP, Synchformer, the VAE and the vocoder."""

from __future__ import annotations

from typing import Any

import torch

from mfmjt.features.audio import MMAudioCodec
from mfmjt.features.base import FeatureStack
from mfmjt.features.clip import clip_encoders_from_pretrained
from mfmjt.features.synchformer import SynchformerEncoder
from mfmjt.hub import resolve_pipeline_files
from mfmjt.weights import mmaudio_name


def mmaudio_feature_stack(files: Any, device: torch.device | str = "cpu") -> FeatureStack:
    """CLIP, Synchformer and the audio codec from files resolved by :func:`mfmjt.hub.resolve_pipeline_files`
    (or :func:`mfmjt.hub.resolve_mmaudio_files`): for ``files.audio_mode`` '16k' the 16 kHz VAE and BigVGAN,
    for '44k' the 44.1 kHz VAE and BigVGAN v2 (its ``config.json`` in ``files.vocoder_config``)."""
    mode = getattr(files, "audio_mode", "16k")
    if files.vocoder is None:
        raise ValueError(f"the resolved MMAudio files have no vocoder checkpoint (audio mode {mode})")
    clip, text = clip_encoders_from_pretrained(files.clip_model, device=device)
    codec = MMAudioCodec.from_files(
        files.vae, files.vocoder, getattr(files, "vocoder_config", None), mode=mode
    )
    return FeatureStack(
        clip=clip,
        sync=SynchformerEncoder.from_checkpoint(files.synchformer, device=device),
        text=text,
        codec=codec,
    )


def load_mmaudio_features(
    name: str = "mmaudio-16k", device: torch.device | str = "cpu", **resolve: Any
) -> FeatureStack:
    """The feature stack behind any MMAudio name: 'mmaudio-16k', 'mmaudio-44k', or a network name
    ('mmaudio-large-44k-v2', ...: its stack, without loading the network). ``resolve``: local_dir,
    cache_dir, offline, verify, as :func:`mfmjt.hub.resolve_file`. ``stack.codec.sample_rate`` tells
    the mode."""
    variant, _ = mmaudio_name(name)
    return mmaudio_feature_stack(resolve_pipeline_files(variant, network=False, **resolve), device)
