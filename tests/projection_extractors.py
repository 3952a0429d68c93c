"""Small extractors that implement mfmjt/scoring/extractor.py with real computations, for the scorer's
tests and benchmark until the real ones (mfmjt.scoring.extractors, random weights) are at hand.

- audio: log-mel (Hann STFT, triangular mel filters) through a fixed random projection; per 0.96 s
  window ("frames"), averaged ("embedding"), and class logits (a second projection);
- text: character-trigram counts through a projection;
- video: per-frame colour means and motion energy through a projection;
- av_offset: the lag (in [-2, 2] s, 0.2 s grid like Synchformer's 21 classes) that best aligns the
  audio's energy envelope with the video's frame-difference energy; positive when the audio lags.
"""

from __future__ import annotations

import zlib

import numpy as np


def _mel_filters(n_fft: int, n_mels: int, rate: int) -> np.ndarray:
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(0.0), mel(rate / 2), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins - lower) / (centre - lower)
    down = (upper - bins) / (upper - centre)
    return np.clip(np.minimum(up, down), 0.0, None)


class ProjectionAudio:
    """An audio extractor: log-mel -> random projection. ``classes`` > 0 adds "logits"."""

    def __init__(self, name: str, sample_rate: int = 16_000, dim: int = 8, classes: int = 0, seed: int = 0):
        self.name, self.sample_rate, self.dim, self.classes = name, sample_rate, dim, classes
        self.weights = f"projection-seed{seed}"
        rng = np.random.default_rng(seed)
        self.n_fft, self.hop, self.n_mels = 512, 160, 32
        self.mel = _mel_filters(self.n_fft, self.n_mels, sample_rate)
        self.proj = rng.standard_normal((self.n_mels, dim)) / np.sqrt(self.n_mels)
        self.head = rng.standard_normal((dim, classes)) if classes else None
        self.calls = 0

    def _logmel(self, wave: np.ndarray) -> np.ndarray:
        x = np.pad(wave.astype(np.float64), (0, max(self.n_fft - len(wave), 0)))
        n = 1 + (len(x) - self.n_fft) // self.hop
        idx = np.arange(self.n_fft)[None] + self.hop * np.arange(n)[:, None]
        spec = np.abs(np.fft.rfft(x[idx] * np.hanning(self.n_fft), axis=1)) ** 2
        return np.log(spec @ self.mel.T + 1e-6)

    def audio(self, waveforms: list[np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        frames_per_window = int(0.96 * self.sample_rate) // self.hop
        embeddings, frames = [], []
        for wave in waveforms:
            z = self._logmel(wave) @ self.proj  # [T, dim]
            embeddings.append(z.mean(axis=0))
            n = max(len(z) // frames_per_window, 1)
            frames.append(
                np.stack([z[i * frames_per_window : (i + 1) * frames_per_window].mean(0) for i in range(n)])
            )
        out = {
            "embedding": np.stack(embeddings).astype(np.float32),
            "frames": np.stack(frames).astype(np.float32),
        }
        if self.head is not None:
            out["logits"] = (out["embedding"] @ self.head).astype(np.float32)
        return out


class ProjectionText:
    def __init__(self, name: str, audio: ProjectionAudio, seed: int = 1):
        self.name, self.sample_rate, self.weights = name, audio.sample_rate, audio.weights
        self._audio = audio
        self.proj = np.random.default_rng(seed).standard_normal((256, audio.dim))

    def audio(self, waveforms: list[np.ndarray]) -> dict[str, np.ndarray]:
        return self._audio.audio(waveforms)

    def text(self, captions: list[str]) -> dict[str, np.ndarray]:
        counts = np.zeros((len(captions), 256))
        for i, caption in enumerate(captions):
            for j in range(max(len(caption) - 2, 0)):
                counts[i, zlib.crc32(caption[j : j + 3].encode()) % 256] += 1
        return {"embedding": (counts @ self.proj).astype(np.float32)}


class ProjectionVideo:
    video_fps = 0.5  # ImageBind's rate in av-benchmark
    video_size = 32

    def __init__(self, name: str, audio: ProjectionAudio, seed: int = 2):
        self.name, self.sample_rate, self.weights = name, audio.sample_rate, audio.weights
        self._audio = audio
        self.proj = np.random.default_rng(seed).standard_normal((4, audio.dim))

    def audio(self, waveforms: list[np.ndarray]) -> dict[str, np.ndarray]:
        return self._audio.audio(waveforms)

    def video(self, clips: list[np.ndarray], fps: float) -> dict[str, np.ndarray]:
        feats = []
        for clip in clips:
            x = clip.astype(np.float64) / 255.0
            motion = np.abs(np.diff(x, axis=0)).mean() if len(x) > 1 else 0.0
            feats.append(np.concatenate([x.mean(axis=(0, 1, 2)), [motion]]))
        return {"embedding": (np.stack(feats) @ self.proj).astype(np.float32)}


class EnvelopeSync:
    """A DeSync extractor: cross-correlation of audio energy and video motion over 21 lags."""

    video_fps = 25.0
    video_size = 32

    def __init__(self, name: str = "synchformer", sample_rate: int = 16_000):
        self.name, self.sample_rate, self.weights = name, sample_rate, "envelope-correlation"
        self.grid = np.linspace(-2.0, 2.0, 21)
        self.calls: list[int] = []

    def av_offset(
        self, clips: list[np.ndarray], fps: float, waveforms: list[np.ndarray]
    ) -> dict[str, np.ndarray]:
        self.calls.append(len(clips))
        offsets = []
        for clip, wave in zip(clips, waveforms, strict=True):
            motion = np.abs(np.diff(clip.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))
            motion = np.concatenate([[0.0], motion])  # frame k: change into frame k
            hop = int(self.sample_rate / fps)
            n = len(clip)
            energy = np.array([np.square(wave[k * hop : (k + 1) * hop]).sum() for k in range(n)])
            a, v = energy - energy.mean(), motion - motion.mean()
            scores = []
            for lag in self.grid:
                shift = int(round(lag * fps))  # audio event at video time t + lag
                if shift >= 0:
                    scores.append((v[: n - shift] * a[shift:]).sum())
                else:
                    scores.append((v[-shift:] * a[: n + shift]).sum())
            offsets.append(self.grid[int(np.argmax(scores))])
        return {"offset": np.asarray(offsets, dtype=np.float32)}


def projection_extractors(seed: int = 0) -> dict[str, object]:
    """One of each, under the registry names the scorer asks for."""
    vggish = ProjectionAudio("vggish", 16_000, dim=8, seed=seed)
    panns = ProjectionAudio("panns", 16_000, dim=12, classes=10, seed=seed + 1)
    passt = ProjectionAudio("passt", 32_000, dim=12, classes=10, seed=seed + 2)
    return {
        "vggish": vggish,
        "panns": panns,
        "passt": passt,
        "imagebind": ProjectionVideo("imagebind", ProjectionAudio("imagebind", 16_000, dim=4, seed=seed + 3)),
        "ms_clap": ProjectionText("ms_clap", ProjectionAudio("ms_clap", 44_100, dim=6, seed=seed + 4)),
        "laion_clap": ProjectionText(
            "laion_clap", ProjectionAudio("laion_clap", 48_000, dim=6, seed=seed + 5)
        ),
        "synchformer": EnvelopeSync(),
    }
