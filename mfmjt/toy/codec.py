"""The toy domain's audio codec: 16 kHz audio <-> 20-dim latents at 31.25 fps, fitted, no network.

Each latent frame holds four 8 ms sub-frames of an 80-band log-mel spectrogram: their mean levels
(the temporal envelope, 4 dims) and a PCA of the level-free spectral shapes (16 dims) fitted on
training audio. Decoding inverts the PCA, maps mel to linear magnitudes (non-negative least
squares) and recovers phase with fast Griffin-Lim from a seeded initial phase. The fitted state is
saved to safetensors with the config in the metadata.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mfmjt.features.mel import slaney_mel_filterbank
from mfmjt.toy._fields import from_dict_strict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodecConfig:
    """Analysis/synthesis settings of :class:`OfflineAudioCodec` (16 kHz, 31.25 latents per second)."""

    sample_rate: int = 16_000
    n_fft: int = 512
    hop_length: int = 128  # 8 ms sub-frames
    n_mels: int = 80
    samples_per_latent: int = 512  # 4 sub-frames per latent frame
    latent_dim: int = 20  # sub_frames envelope dims + (latent_dim - sub_frames) PCA dims
    log_floor: float = 1e-5
    griffin_lim_iters: int = 32
    griffin_lim_momentum: float = 0.99
    nnls_iters: int = 10
    posterior_std: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples_per_latent % self.hop_length:
            raise ValueError("samples_per_latent must be a multiple of hop_length")
        if self.n_fft < self.hop_length or self.n_fft % 2:
            raise ValueError("n_fft must be even and at least hop_length")
        if not self.sub_frames < self.latent_dim <= self.sub_frames * self.n_mels:
            raise ValueError(f"latent_dim must lie in ({self.sub_frames}, {self.sub_frames * self.n_mels}]")
        if self.griffin_lim_iters < 0 or self.nnls_iters < 0 or self.posterior_std < 0:
            raise ValueError("iteration counts and posterior_std must be non-negative")

    @property
    def sub_frames(self) -> int:
        return self.samples_per_latent // self.hop_length

    @property
    def latent_rate(self) -> float:
        return self.sample_rate / self.samples_per_latent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        return from_dict_strict(cls, data)


class OfflineAudioCodec(torch.nn.Module):
    """Deterministic waveform <-> latent codec: ``[B, samples]`` <-> ``[B, ceil(samples/512), 20]``.

    Latent channels ``0..3`` are the mean log-mel levels of the four 8 ms sub-frames (the envelope),
    the rest are PCA coefficients of the stacked level-free log-mel shapes. Fit with :meth:`fit`.
    """

    def __init__(self, config: CodecConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CodecConfig()
        self.sample_rate = cfg.sample_rate
        self.latent_dim = cfg.latent_dim
        width = cfg.sub_frames * cfg.n_mels
        self.register_buffer("pca_mean", torch.zeros(width))
        self.register_buffer("pca_components", torch.zeros(cfg.latent_dim - cfg.sub_frames, width))
        mel = slaney_mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, 0.0, cfg.sample_rate / 2).float()
        self.register_buffer("mel_basis", mel, persistent=False)
        self.register_buffer("mel_pinv", torch.linalg.pinv(mel), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)

    # -- properties ------------------------------------------------------------------------------

    @property
    def latent_rate(self) -> float:
        """Latent frames per second (31.25)."""
        return self.config.latent_rate

    @property
    def is_fitted(self) -> bool:
        return bool(self.pca_components.abs().sum() > 0)

    def latent_length(self, num_samples: int) -> int:
        """Latent frames covering ``num_samples`` samples (MMAudio: ceil(duration * 31.25))."""
        return math.ceil(num_samples / self.config.samples_per_latent)

    # -- analysis --------------------------------------------------------------------------------

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` -> complex ``[B, L // hop + 1, n_freq]``, frame ``m`` centred at sample ``m * hop``."""
        spec = torch.stft(
            x,
            self.config.n_fft,
            self.config.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return spec.transpose(1, 2)

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(
            spec.transpose(1, 2),
            self.config.n_fft,
            self.config.hop_length,
            window=self.window,
            center=True,
            length=length,
        )

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, sub_frames * N, n_mels]`` of ``[B, samples]``, zero-padded to whole latent frames."""
        if not isinstance(waveform, torch.Tensor) or waveform.ndim != 2:
            shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
            raise ValueError(f"expected a waveform tensor [B, samples], got {shape}")
        cfg = self.config
        n = self.latent_length(waveform.shape[1])
        if n == 0:
            raise ValueError("the waveform is empty")
        x = F.pad(
            waveform.to(self.window.device, torch.float32),
            (0, n * cfg.samples_per_latent - waveform.shape[1]),
        )
        mag = self._stft(x)[:, :-1].abs() * (2.0 / self.window.sum())  # a sine of amplitude a peaks near a
        return torch.log((mag @ self.mel_basis.T).clamp_min(cfg.log_floor))

    def _split(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel -> (envelope ``[B, N, sub]``, level-free shapes ``[B, N, sub * n_mels]``)."""
        cfg = self.config
        B = log_mel.shape[0]
        frames = log_mel.reshape(B, -1, cfg.sub_frames, cfg.n_mels)
        envelope = frames.mean(-1)
        return envelope, (frames - envelope.unsqueeze(-1)).flatten(2)

    # -- codec -----------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        waveforms: Sequence[np.ndarray | torch.Tensor] | torch.Tensor,
        config: CodecConfig | None = None,
        *,
        max_frames: int = 200_000,
    ) -> OfflineAudioCodec:
        """Fit the PCA on training audio: 1-D waveforms at the config's sample rate, or ``[B, samples]``."""
        codec = cls(config)
        items = (
            list(waveforms)
            if not isinstance(waveforms, torch.Tensor)
            else list(waveforms.reshape(-1, waveforms.shape[-1]))
        )
        if not items:
            raise ValueError("fit needs at least one waveform")
        rows = []
        with torch.no_grad():
            for w in items:
                w = torch.as_tensor(np.asarray(w, dtype=np.float32) if not isinstance(w, torch.Tensor) else w)
                rows.append(codec._split(codec.log_mel(w.reshape(1, -1).float()))[1][0])
        data = torch.cat(rows).double()
        if data.shape[0] > max_frames:  # deterministic subsample
            data = data[torch.linspace(0, data.shape[0] - 1, max_frames).long()]
        k = codec.config.latent_dim - codec.config.sub_frames
        if data.shape[0] < k:
            raise ValueError(f"fit needs at least {k} latent frames of audio, got {data.shape[0]}")
        mean = data.mean(0)
        centred = data - mean
        evals, evecs = torch.linalg.eigh(centred.T @ centred / data.shape[0])
        comps = evecs[:, -k:].flip(1).T  # [k, width], largest variance first
        sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
        comps = comps * sign  # deterministic sign: largest entry positive
        codec.pca_mean.copy_(mean.float())
        codec.pca_components.copy_(comps.float())
        explained = float(evals[-k:].sum() / evals.sum().clamp_min(1e-12))
        logger.info(
            "fitted offline codec on %d frames; PCA keeps %.1f%% of shape variance",
            data.shape[0],
            100 * explained,
        )
        return codec

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(
                "the codec is not fitted: use OfflineAudioCodec.fit(waveforms) or OfflineAudioCodec.load"
            )

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, samples]`` -> (mean, std), each ``[B, ceil(samples / 512), latent_dim]``; std is constant."""
        self._require_fitted()
        envelope, shapes = self._split(self.log_mel(waveform))
        mean = torch.cat([envelope, (shapes - self.pca_mean) @ self.pca_components.T], dim=-1)
        return mean, torch.full_like(mean, self.config.posterior_std)

    @torch.no_grad()
    def decode_log_mel(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, N, latent_dim]`` -> log-mel ``[B, sub_frames * N, n_mels]``."""
        self._require_fitted()
        cfg = self.config
        if latent.ndim != 3 or latent.shape[-1] != cfg.latent_dim:
            raise ValueError(f"expected a latent [B, N, {cfg.latent_dim}], got {tuple(latent.shape)}")
        latent = latent.to(self.pca_mean.device, torch.float32)
        B, N, _ = latent.shape
        envelope = latent[..., : cfg.sub_frames]
        shapes = (latent[..., cfg.sub_frames :] @ self.pca_components + self.pca_mean).reshape(
            B, N, cfg.sub_frames, -1
        )
        return (shapes + envelope.unsqueeze(-1)).reshape(B, N * cfg.sub_frames, cfg.n_mels)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, N, latent_dim]`` -> waveform ``[B, N * 512]`` (fast Griffin-Lim, seeded phase)."""
        cfg = self.config
        mel = self.decode_log_mel(latent).clamp(max=10.0).exp()
        linear = (mel @ self.mel_pinv.T).clamp_min(0.0)
        for _ in range(cfg.nnls_iters):  # multiplicative non-negative least squares
            linear = linear * (mel @ self.mel_basis) / ((linear @ self.mel_basis.T) @ self.mel_basis + 1e-12)
        mag = linear * (self.window.sum() / 2.0)
        mag = torch.cat([mag, mag[:, -1:]], dim=1)  # the STFT of L samples has L // hop + 1 frames
        length = latent.shape[1] * cfg.samples_per_latent
        gen = torch.Generator().manual_seed(cfg.seed)  # same initial phase for every batch item
        phase = (2 * math.pi) * torch.rand(mag.shape[1:], generator=gen).to(mag.device)
        spec = torch.polar(mag, phase)
        previous = None
        for _ in range(cfg.griffin_lim_iters):
            consistent = self._stft(self._istft(spec, length))
            target = (
                consistent
                if previous is None
                else consistent + cfg.griffin_lim_momentum * (consistent - previous)
            )
            previous = consistent
            spec = mag * target / (target.abs() + 1e-9)
        return self._istft(spec, length).clamp(-1.0, 1.0)

    # -- persistence -----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the fitted state to safetensors, with the config as JSON metadata."""
        from safetensors.torch import save_file

        self._require_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(
            tensors,
            str(path),
            metadata={"format": "mfmjt-offline-codec", "config": json.dumps(self.config.to_dict())},
        )
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> OfflineAudioCodec:
        """Read a codec written by :meth:`save`."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no codec file at {path}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "mfmjt-offline-codec" or "config" not in meta:
            raise ValueError(f"{path} is not an mfmjt offline codec (missing metadata)")
        codec = cls(CodecConfig.from_dict(json.loads(meta["config"])))
        codec.load_state_dict(load_file(str(path)), strict=True)
        return codec.to(device)
