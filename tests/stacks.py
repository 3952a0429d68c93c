"""Small random-weight stacks built from the full-size classes, for tests of the pipeline and app."""

from __future__ import annotations

import json

import torch
from conftest import GOLDENS
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from safetensors.torch import load_file

from mfmjt.features.audio import MMAudioCodec
from mfmjt.features.base import FeatureStack
from mfmjt.features.clip import ClipTextEncoder, ClipVisualEncoder
from mfmjt.features.synchformer import SynchformerConfig, SynchformerEncoder
from mfmjt.features.vae import VAEConfig
from mfmjt.features.vocoder import BigVGANConfig
from mfmjt.model import MFMJTNetwork, NetworkConfig
from mfmjt.pipeline import Pipeline


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random, like the reference goldens: matrices N(0, 1/fan_in), vectors N(0, 0.05²)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_((p[0].numel() ** -0.5 if p.dim() >= 2 else 0.05) * torch.randn(p.shape, generator=g))


def small_random_pipeline(max_duration: float = 3.0, *, one_window: bool = True) -> Pipeline:
    """CLIP (open_clip, 2 layers), Synchformer (the golden's shrunk config), VAE + BigVGAN (reduced
    widths from the goldens) and a tiny network sized to their feature dims.

    With ``one_window`` the stack counts as trained at ``max_duration``, so every clip is generated in
    one pass; without it the tiny network's 1.6 s applies and longer clips are generated in windows.
    """
    torch.manual_seed(0)
    clip_model = CLIP(
        embed_dim=32,
        vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=14, image_size=378),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
        quick_gelu=True,
    ).eval()
    audio_meta = json.loads((GOLDENS / "golden_audio.json").read_text())
    codec = MMAudioCodec.from_state_dicts(
        load_file(str(GOLDENS / "golden_vae16k_small.state_raw.safetensors")),
        load_file(str(GOLDENS / "golden_bigvgan16k_small.state_weightnorm.safetensors")),
        vae_config=VAEConfig(**audio_meta["vae16k_small"]["constructor_kwargs"]),
        vocoder_config=BigVGANConfig.from_dict(audio_meta["bigvgan16k_small"]["config"]),
    )
    sync = SynchformerEncoder(SynchformerConfig.golden_small())
    randomize(sync, 1)
    features = FeatureStack(ClipVisualEncoder(clip_model), sync, ClipTextEncoder(clip_model), codec)
    net = MFMJTNetwork(NetworkConfig.variant("tiny", clip_dim=32, sync_dim=48, text_dim=32))
    randomize(net, 2)
    return Pipeline(
        net,
        features,
        name="small random stack",
        device="cpu",
        max_duration=max_duration,
        window_seconds=max_duration if one_window else None,
    )
