"""Planning and stitching audio for clips longer than one window: overlapping windows, cross-faded.

:class:`mfmjt.pipeline.Pipeline` runs the request (decoding, encoders, sampling); this module only says
where the windows lie and how their audio is joined.

A request longer than one training-length window is cut into windows of exactly that length on the
latent-frame grid: a fixed hop of ``window - overlap`` latent frames, with the last window aligned to
the end of the clip (its overlap with the previous one can be larger). Every window is generated as
an ordinary clip of the training length: its own video features (the frames of its time span,
decoded in one pass over the file, see :func:`mfmjt.media.decode_video_windows`, or taken from
``Pipeline.decode_video``), the prompt, and
its slice of one noise sequence drawn from the request's seed for the whole length, so the windows
start from the same noise where they overlap. Joins are cross-faded over ``overlap`` latent frames,
centred in the overlap.

Cross-fade: ``adaptive`` by default. Whether two windows' waveforms agree in their overlap depends
on the codec and the sound: the embedded default's Griffin-Lim vocoder starts every window from the
same seeded phase, so its windows are mostly uncorrelated there (|ρ| 0.09 on average over a 2-minute
clip), and a linear fade dips by 3 dB; tones, though, can meet in or out of phase, and a vocoder whose
phase follows the latents (BigVGAN) can give correlated windows, for which an equal-power fade bulges
by up to 3 dB. The adaptive fade measures the windows' correlation ρ around each sample (over 160 ms)
and divides linear ramps by the power they give at that ρ: linear where the windows agree,
constant-power where they are uncorrelated, and a bounded boost down to ρ = -0.5. Over the 39 joins of
a 2-minute clip the power of every quarter of a fade stays within -1.5/+0.2 dB of the range spanned
by the two windows (equal-power: -3.6/+1.4 dB, linear: -5.6 dB). ``linear`` and ``equal_power`` are
available as fixed fades.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mfmjt import media

if TYPE_CHECKING:
    from mfmjt.pipeline import Pipeline

logger = logging.getLogger(__name__)

FADES = ("adaptive", "linear", "equal_power")
DEFAULT_OVERLAP = 1.0  # seconds cross-faded at each join
# the adaptive fade follows the windows' correlation over CORRELATION_SPAN latent frames (160 ms at 16 kHz);
# below MIN_CORRELATION it gives up (phase-opposed tones cannot be cross-faded without a dip or a jump)
CORRELATION_SPAN = 5
MIN_CORRELATION = -0.5
PAD_TOLERANCE = 0.2  # seconds of missing frames at a window's end that are filled by holding the last one


@dataclass(frozen=True)
class Window:
    """Latent frames ``[start, stop)`` of the whole clip."""

    index: int
    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class WindowPlan:
    """Where each window lies and where each join is faded, in latent frames."""

    total: int  # latent frames of the whole clip
    window: int  # latent frames per window (the training length)
    overlap: int  # latent frames cross-faded at each join
    windows: tuple[Window, ...]

    def fade(self, k: int) -> tuple[int, int]:
        """Latent frames ``[start, stop)`` of the cross-fade from window ``k - 1`` into window ``k``:
        ``overlap`` frames centred in the two windows' overlap."""
        if not 1 <= k < len(self.windows):
            raise IndexError(f"window {k} has no join with a previous window")
        shared_start, shared_stop = self.windows[k].start, self.windows[k - 1].stop
        start = shared_start + (shared_stop - shared_start - self.overlap) // 2
        return start, start + self.overlap


def plan_windows(total: int, window: int, overlap: int) -> WindowPlan:
    """Windows of ``window`` latent frames covering ``[0, total)``: hop ``window - overlap``, the last
    one ending at ``total``. One window (of ``total`` frames) when the clip fits in one."""
    if total < 1 or window < 1:
        raise ValueError(f"need total >= 1 and window >= 1 latent frames, got {total} and {window}")
    if not 1 <= overlap <= window // 3:
        raise ValueError(
            f"overlap must be from 1 to a third of the window ({window // 3}) frames, got {overlap}"
        )
    if total <= window:
        return WindowPlan(total, window, overlap, (Window(0, 0, total),))
    hop = window - overlap
    count = 1 + math.ceil((total - window) / hop)
    starts = [k * hop for k in range(count - 1)] + [total - window]
    return WindowPlan(total, window, overlap, tuple(Window(k, s, s + window) for k, s in enumerate(starts)))


def crossfade_gains(
    n: int, kind: str = "adaptive", correlation: float | np.ndarray = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(fade-out, fade-in) gains for ``n`` samples, taken at sample centres (mirror images).

    ``linear``: they sum to one (constant level for identical signals); ``equal_power``: sin/cos, their
    squares sum to one (constant power for uncorrelated signals); ``adaptive``: the linear ramps
    divided by the power they give two signals of equal level with this ``correlation`` (a number or
    one per sample, clamped to [``MIN_CORRELATION``, 1]): linear at 1, constant-power at 0.
    """
    if kind not in FADES:
        raise ValueError(f"fade must be one of {FADES}, got {kind!r}")
    x = (np.arange(n, dtype=np.float64) + 0.5) / n
    if kind == "equal_power":
        fade_out, fade_in = np.cos(0.5 * np.pi * x), np.sin(0.5 * np.pi * x)
    else:
        fade_out, fade_in = 1.0 - x, x
        if kind == "adaptive":
            rho = np.clip(np.asarray(correlation, dtype=np.float64), MIN_CORRELATION, 1.0)
            norm = np.sqrt(fade_out**2 + fade_in**2 + 2.0 * rho * fade_out * fade_in)
            fade_out, fade_in = fade_out / norm, fade_in / norm
    return fade_out.astype(np.float32), fade_in.astype(np.float32)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised correlation of two equally long signals (0 when either is silent)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    energy = math.sqrt(float(a64 @ a64) * float(b64 @ b64))
    return float(a64 @ b64) / energy if energy > 0 else 0.0


def local_correlation(a: np.ndarray, b: np.ndarray, block: int, span: int = CORRELATION_SPAN) -> np.ndarray:
    """Correlation of ``a`` and ``b`` around each sample: over ``span`` blocks of ``block`` samples
    centred on each block, linearly interpolated between block centres."""
    starts = np.arange(0, len(a), block)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    sums = [np.add.reduceat(x, starts) for x in (a64 * b64, a64 * a64, b64 * b64)]
    kernel = np.ones(span)
    ab, aa, bb = (np.convolve(x, kernel, mode="same") for x in sums)
    energy = np.sqrt(aa * bb)
    rho = np.divide(ab, energy, out=np.zeros_like(ab), where=energy > 0)
    centres = np.minimum(starts + 0.5 * block, len(a))
    return np.interp(np.arange(len(a)), centres, rho)


class Stitcher:
    """Writes windows' audio into one buffer, cross-fading each into the previous one."""

    def __init__(
        self, plan: WindowPlan, samples_per_latent: int, channels: int, fade: str = "adaptive"
    ) -> None:
        if fade not in FADES:
            raise ValueError(f"fade must be one of {FADES}, got {fade!r}")
        self.plan = plan
        self.spl = samples_per_latent
        self.fade = fade
        self.audio = np.zeros((channels, plan.total * samples_per_latent), dtype=np.float32)
        self.end = 0  # samples written so far
        self.correlations: list[list[float]] = []  # per join, per channel: the windows' agreement

    def add(self, k: int, audio: np.ndarray) -> None:
        """Window ``k``'s audio ``[channels, samples]``, starting at its first latent frame."""
        offset = self.plan.windows[k].start * self.spl
        start = 0
        if k > 0:
            f0, f1 = (f * self.spl for f in self.plan.fade(k))
            if self.end < f1 or offset + audio.shape[1] < f1:
                raise ValueError(f"windows {k - 1} and {k} do not both cover their cross-fade")
            rhos = []
            for c in range(self.audio.shape[0]):
                before, after = self.audio[c, f0:f1], audio[c, f0 - offset : f1 - offset]
                rhos.append(correlation(before, after))
                rho = local_correlation(before, after, self.spl) if self.fade == "adaptive" else 0.0
                fade_out, fade_in = crossfade_gains(f1 - f0, self.fade, rho)
                self.audio[c, f0:f1] = before * fade_out + after * fade_in
            self.correlations.append(rhos)
            start = f1
        stop = offset + audio.shape[1]
        self.audio[:, start:stop] = audio[:, start - offset :]
        self.end = stop


def window_latents(pipe: Pipeline) -> int:
    """The window length in latent frames: the model's ``window_seconds`` when it states one (a
    saved model's recommended ``window``, else the duration of its training items), else the network's
    ``latent_seq_len`` (8 s for MMAudio)."""
    seconds = pipe.window_seconds
    if seconds:
        return round(float(seconds) * pipe.audio_mode.latent_rate)
    return int(pipe.network.config.latent_seq_len)


@dataclass(frozen=True)
class LongFormRequest:
    """A request that needs more than one window."""

    plan: WindowPlan
    duration: float  # seconds of audio that will be returned
    message: str


def plan_request(
    pipe: Pipeline,
    video: str | Path | None,
    duration: float | None,
    default_duration: float,
    overlap: float = DEFAULT_OVERLAP,
    *,
    available: float | None = None,
    message: str | None = None,
) -> LongFormRequest | None:
    """The window plan for a request, or None when it fits in one window (the ordinary path).

    The video's length is ``available`` (seconds, e.g. of a clip already decoded), else measured from
    packet timestamps (:func:`mfmjt.media.probe_video_duration`, no decoding; the same rule for the
    length as decoding). Files that cannot be probed are left to the ordinary path, which reports what
    is wrong with them. ``message`` replaces the note on what was cut (e.g. the decoder's own).
    """
    rate = pipe.audio_mode.latent_rate
    window = window_latents(pipe)
    if duration is not None and math.ceil(duration * rate) <= window:
        return None
    limit, given = pipe.max_duration, message
    message = ""
    if video is None:
        requested = default_duration if duration is None else duration
        used = min(requested, limit)
        if requested > limit:
            message = f"Generated the first {limit:g} s: the limit of this demo."
    else:
        if available is None:
            try:
                available = media.probe_video_duration(video)
            except media.MediaError:
                return None
        used = min(available, limit, math.inf if duration is None else duration)
        if duration is not None and used < duration:
            if limit < duration and available > limit:
                message = f"requested {duration:.2f} s exceeds the {limit:.2f} s limit; "
                message += f"using the first {used:.2f} s"
            else:
                message = f"the video is shorter than the requested {duration:.2f} s; using {used:.2f} s"
        elif duration is None and available > limit:
            message = f"the video is longer than the {limit:.2f} s limit; using the first {used:.2f} s"
    total = math.ceil(used * rate - 1e-9)
    if total <= window:
        return None
    plan = plan_windows(total, window, max(1, min(round(overlap * rate), window // 3)))
    return LongFormRequest(plan, used, given if given is not None else message)


def window_seed_noise(seed: int, total: int, latent_dim: int) -> torch.Tensor:
    """The request's noise for the whole clip ``[1, total, latent_dim]``; window k takes its slice."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, total, latent_dim, generator=generator)


def hold_last(frames: torch.Tensor, count: int) -> torch.Tensor:
    """``frames`` extended to ``count`` by repeating the last one."""
    if len(frames) >= count:
        return frames[:count]
    return torch.cat([frames, frames[-1:].expand(count - len(frames), *frames.shape[1:])])
