"""MMAudio's audio codecs (16 kHz and 44.1 kHz): waveform <-> VAE latents, behind
:class:`~mfmjt.features.base.AudioCodec`. Inference only, like MMAudio's.

encode: waveform ``[B, samples]`` -> log-mel ``[B, n_mels, samples // hop]`` -> VAE posterior -> (mean,
std) ``[B, N, latent_dim]`` with ``N = (samples // hop) // 2``.
decode: latent ``[B, N, latent_dim]`` (un-normalised, i.e. after the network's latent_std/mean) -> VAE
decoder -> log-mel ``[B, n_mels, 2N]`` -> BigVGAN -> waveform ``[B, 2 hop N]``.

| mode | mel | VAE | vocoder | latents |
|---|---|---|---|---|
| 16k | 80 bins, hop 256, log10 | ``v1-16.pth`` (20-dim) | BigVGAN v1 ``best_netG.pt`` | 31.25/s |
| 44k | 128 bins, hop 512, ln | ``v1-44.pth`` (40-dim) | BigVGAN v2 ``bigvgan_generator.pt`` | 43.07/s |

Loading: :meth:`MMAudioCodec.from_state_dicts` takes the checkpoints' own layouts (raw VAE weights,
weight-norm generator, optionally still wrapped under ``'generator'``); :meth:`MMAudioCodec.from_files`
reads them with :func:`read_state_dict` (and the v2 generator's ``config.json`` when given).
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

CODEC_MODES = ("16k", "44k")


def read_state_dict(
    path: str | PathLike[str], key: str | None = None, *, mmap: bool = False
) -> dict[str, Any]:
    """Read a checkpoint on CPU: ``.safetensors``, or a torch pickle with ``weights_only=True``.

    ``key`` selects a nested dict (e.g. ``'generator'`` in BigVGAN's ``best_netG.pt``) when present.
    ``mmap``: map a torch (zip) checkpoint instead of reading it into memory (for loading large networks).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not (mmap and "mmap" in str(err)):
                raise
            log.debug("%s is in the legacy torch format (no mmap); reading it whole", path)
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
        """Build from checkpoint state dicts (strict loads; see :func:`load_vae`, :func:`load_vocoder`).

        ``mode`` ('16k' or '44k') picks the mel settings and the default VAE and vocoder sizes.
        """
        if mode not in CODEC_MODES:
            raise ValueError(f"unknown codec mode {mode!r}; choose one of {list(CODEC_MODES)}")
        vae = load_vae(vae_state_dict, vae_config or VAEConfig.preset(mode), vae_weights_normalized)
        vocoder = load_vocoder(vocoder_state_dict, vocoder_config or BigVGANConfig.preset(mode))
        return cls(MelConverter(MelConfig.preset(mode)), vae, vocoder).eval().requires_grad_(False)

    @classmethod
    def from_files(
        cls,
        vae_path: str | PathLike[str],
        vocoder_path: str | PathLike[str],
        vocoder_config_path: str | PathLike[str] | None = None,
        **kwargs: Any,
    ) -> MMAudioCodec:
        """Build from the VAE and generator checkpoints (``v1-16.pth`` + ``best_netG.pt``, or
        ``v1-44.pth`` + ``bigvgan_generator.pt`` with ``mode='44k'``; ``.safetensors`` copies work too).

        ``vocoder_config_path``: the generator's ``config.json`` (BigVGAN v2 repositories ship one); it
        sets the vocoder sizes unless ``vocoder_config`` is passed. Other kwargs as :meth:`from_state_dicts`.
        """
        log.info("loading the audio codec from %s and %s", vae_path, vocoder_path)
        if vocoder_config_path is not None and kwargs.get("vocoder_config") is None:
            kwargs["vocoder_config"] = BigVGANConfig.from_json(vocoder_config_path)
        return cls.from_state_dicts(
            read_state_dict(vae_path), read_state_dict(vocoder_path, key="generator"), **kwargs
        )

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveform ``[B, samples]`` -> posterior (mean, std), each ``[B, samples // samples_per_latent,
        latent_dim]``."""
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
