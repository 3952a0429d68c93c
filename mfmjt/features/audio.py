"""MMAudio's 16 kHz audio codec: waveform <-> VAE latents, behind :class:`~mfmjt.features.base.AudioCodec`.

encode: waveform ``[B, samples]`` -> log-mel ``[B, 80, samples // 256]`` -> VAE posterior -> (mean, std)
``[B, N, 20]`` with ``N = (samples // 256) // 2`` (31.25 latents/s).
decode: latent ``[B, N, 20]`` (un-normalised, i.e. after the network's latent_std/mean) -> VAE decoder
-> log-mel ``[B, 80, 2N]`` -> BigVGAN -> waveform ``[B, 512 N]``.

Loading: :meth:`MMAudioCodec.from_state_dicts` takes the checkpoints' own layouts (``v1-16.pth`` raw
VAE weights, ``best_netG.pt`` weight-norm generator, optionally still wrapped under ``'generator'``);
:meth:`MMAudioCodec.from_files` reads them with :func:`read_state_dict`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mfmjt.features._checks import check_float_tensor
from mfmjt.features.mel import MelConfig, MelConverter
from mfmjt.features.vae import VAE, VAEConfig, load_vae
from mfmjt.features.vocoder import BigVGANConfig, BigVGANVocoder, load_vocoder

log = logging.getLogger(__name__)


def read_state_dict(path: str | PathLike[str], key: str | None = None) -> dict[str, Any]:
    """Read a checkpoint on CPU: ``.safetensors``, or a torch pickle with ``weights_only=True``.

    ``key`` selects a nested dict (e.g. ``'generator'`` in BigVGAN's ``best_netG.pt``) when present.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    if key is not None and key in state:
        state = state[key]
    return dict(state)


class MMAudioCodec(nn.Module):
    """Mel converter + VAE + BigVGAN; implements the ``AudioCodec`` protocol (channel-last latents)."""

    def __init__(self, mel: MelConverter, vae: VAE, vocoder: BigVGANVocoder) -> None:
        super().__init__()
        mc, vc, gc = mel.config, vae.config, vocoder.config
        if mc.n_mels != vc.data_dim or mc.n_mels != gc.num_mels or mc.hop_size != gc.hop_size:
            raise ValueError(
                f"mel ({mc.n_mels} bins, hop {mc.hop_size}), VAE ({vc.data_dim} bins) and "
                f"vocoder ({gc.num_mels} bins, hop {gc.hop_size}) do not fit together"
            )
        self.mel = mel
        self.vae = vae
        self.vocoder = vocoder
        self.sample_rate: int = mc.sample_rate
        self.latent_dim: int = vc.embed_dim
        self.samples_per_latent: int = mc.hop_size * vc.time_downsample
        self.latent_rate: float = mc.sample_rate / self.samples_per_latent

    @classmethod
    def from_state_dicts(
        cls,
        vae_state_dict: Mapping[str, torch.Tensor],
        vocoder_state_dict: Mapping[str, Any],
        *,
        mode: str = "16k",
        vae_config: VAEConfig | None = None,
        vocoder_config: BigVGANConfig | None = None,
        vae_weights_normalized: bool | None = None,
    ) -> MMAudioCodec:
        """Build from checkpoint state dicts (strict loads; see :func:`load_vae`, :func:`load_vocoder`)."""
        if mode != "16k":
            raise ValueError(
                f"only the '16k' codec is implemented (the 44k vocoder is BigVGAN v2), got {mode!r}"
            )
        vae = load_vae(vae_state_dict, vae_config or VAEConfig.preset(mode), vae_weights_normalized)
        vocoder = load_vocoder(vocoder_state_dict, vocoder_config or BigVGANConfig.preset(mode))
        return cls(MelConverter(MelConfig.preset(mode)), vae, vocoder).eval().requires_grad_(False)

    @classmethod
    def from_files(
        cls, vae_path: str | PathLike[str], vocoder_path: str | PathLike[str], **kwargs: Any
    ) -> MMAudioCodec:
        """Build from ``v1-16.pth`` and ``best_netG.pt`` (or ``.safetensors`` copies); kwargs as above."""
        log.info("loading the audio codec from %s and %s", vae_path, vocoder_path)
        return cls.from_state_dicts(
            read_state_dict(vae_path), read_state_dict(vocoder_path, key="generator"), **kwargs
        )

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveform ``[B, samples]`` -> posterior (mean, std), each ``[B, samples // 512, latent_dim]``."""
        check_float_tensor(
            "waveform", waveform, f"[B, samples] with samples >= {self.samples_per_latent}", ndim=2
        )
        if waveform.shape[1] < self.samples_per_latent:
            raise ValueError(
                f"waveform must have shape [B, samples] with samples >= "
                f"{self.samples_per_latent}, got {list(waveform.shape)}"
            )
        mel = self.mel(waveform).to(self.vae.data_mean.dtype)  # [B, n_mels, T]
        posterior = self.vae.encode(mel)  # [B, latent_dim, T // 2]
        return posterior.mean.transpose(1, 2), posterior.std.transpose(1, 2)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Un-normalised latent ``[B, N, latent_dim]`` -> waveform ``[B, N * samples_per_latent]``."""
        check_float_tensor("latent", latent, f"[B, N, {self.latent_dim}]", ndim=3, sizes={2: self.latent_dim})
        z = latent.to(self.vae.data_mean.device, self.vae.data_mean.dtype).transpose(1, 2)  # [B, C, N]
        mel = self.vae.decode(z)  # [B, n_mels, 2N]
        return self.vocoder(mel.to(self.vocoder.conv_pre.weight.dtype)).squeeze(1)  # [B, samples]
