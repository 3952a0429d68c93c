"""A full-size 44.1 kHz pipeline (real-size VAE 44k, BigVGAN v2 and small_44k network, random weights;
the small random CLIP and Synchformer of tests/stacks.py) generates audio end to end on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from stacks import randomize, small_random_pipeline

from mfmjt.config import SequenceLengths
from mfmjt.features.audio import MMAudioCodec
from mfmjt.features.base import FeatureStack
from mfmjt.features.mel import MelConverter
from mfmjt.features.vae import VAE
from mfmjt.features.vocoder import BigVGANVocoder
from mfmjt.model import MFMJTNetwork, NetworkConfig
from mfmjt.pipeline import Pipeline


@pytest.fixture(scope="module")
def full_size_44k_pipeline() -> Pipeline:
    torch.manual_seed(0)
    small = small_random_pipeline().features  # CLIP (32-dim), Synchformer (48-dim tokens), CLIP text
    codec = MMAudioCodec(MelConverter("44k"), VAE("44k").remove_weight_norm(), BigVGANVocoder("44k")).eval()
    features = FeatureStack(small.clip, small.sync, small.text, codec)
    # small_44k at its real size; only the input projections take the small encoders' feature widths
    net = MFMJTNetwork(NetworkConfig.variant("small_44k", clip_dim=32, sync_dim=48, text_dim=32))
    randomize(net, 3)
    return Pipeline(net, features, name="full-size 44k", audio_mode="44k", device="cpu", max_duration=3.0)


@pytest.mark.slow
def test_full_size_44k_pipeline_generates_the_requested_duration(full_size_44k_pipeline, tmp_path):
    pipe = full_size_44k_pipeline
    assert sum(p.numel() for p in pipe.features.codec.parameters()) == 305_479_682 + 122_152_752
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = pipe.generate(prompt="rain on a tin roof", duration=1.5, guidance="standard", seed=0)
    finally:
        torch.set_num_threads(threads)
    assert pipe.sample_rate == result.sample_rate == 44_100
    wave = result.audio["standard"]
    lengths = SequenceLengths.for_duration(1.5, "44k")
    assert lengths.latent == 65 and wave.shape == (65 * 1024,)  # whole latent frames
    assert wave.dtype == np.float32 and np.isfinite(wave).all() and np.abs(wave).max() <= 1.0
    assert wave.std() > 0
    (path,) = pipe.save_audio(result, tmp_path, "rain")
    info = soundfile.info(str(path))
    assert (info.samplerate, info.frames) == (44_100, round(1.5 * 44_100))  # cut to the request
