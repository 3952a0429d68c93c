"""Audio metrics against the ground truth of toy scenes: temporal sync, pitch class, Fréchet distance.

The miniature counterparts of the paper's metrics (§3.3), computed against the exact ground truth
that :mod:`mfmjt.toy.scene` scenes carry:

- **Temporal sync** (for DeSync). Onsets detected in the audio (:func:`mfmjt.toy.onsets.detect_onsets`
  at ``ONSET_THRESHOLD_DB``) are matched one-to-one, greedily by time difference, to the reference
  onsets within ±``ONSET_TOLERANCE_S`` (50 ms): precision, recall, F1 and the mean absolute offset of
  matched pairs. Reference onsets are the *audible on-screen* impacts, strength ≥
  ``AUDIBLE_STRENGTH`` (0.2, an impact speed of 120 px/s), merged into one onset when they start
  within ``MERGE_S`` (30 ms) of each other (an object-object collision is two events at one time).
  Quieter impacts, the starts of hums and rolling, and off-screen sounds are *don't-care*: a
  detection near one is neither a hit nor a false alarm. Off-screen sounds are scored separately
  (``offscreen_recall``): their timing is not in the video, so a model can only guess it.
- **Semantics** (for IB). For matched onsets of a single object, the dominant frequency of the
  sound that starts there (the spectrum of the 5–45 ms after the detected onset minus that of the
  40 ms before it) names a colour: the nearest, in log frequency, of the eight colour pitches times
  the material's strongest partial (glass rings at twice its pitch). ``pitch_accuracy`` is the share
  whose colour is right; chance is 1/8.
- **Distribution** (for FD). Fréchet distance between Gaussians fitted to the frames of a fixed
  64-band log-mel (32 ms window, 10 ms hop, floor -60 dB) of generated vs real audio, pooled over
  the evaluation set; independent of any model's codec.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mfmjt.onsets import ONSET_THRESHOLD_DB  # noqa: F401 (re-exported: the toy metrics' threshold)
from mfmjt.toy.specs import SoundEvent
from mfmjt.toy.vocabulary import COLOURS, MATERIALS

AUDIBLE_STRENGTH = 0.2
MERGE_S = 0.030
ONSET_TOLERANCE_S = 0.050

PITCH_WINDOW_S = (0.005, 0.045)  # after the onset: past the noise burst, within the shortest decay
PITCH_BAND_HZ = (100.0, 3000.0)
MEL_BANDS = 64
MEL_FFT = 512
MEL_HOP = 160
MEL_FLOOR = 1e-6  # -60 dB re a full-scale sine: below it counts as silence

_COLOUR_NAMES = tuple(COLOURS)
_COLOUR_PITCHES = np.array([pitch for _, pitch in COLOURS.values()])


@dataclass(frozen=True)
class OnsetReference:
    """Ground truth for onset scoring (see the module docstring)."""

    times: tuple[float, ...]  # one per merged group of audible on-screen impacts: its first time
    sources: tuple[tuple[SoundEvent, ...], ...]  # the events of each group
    offscreen: tuple[float, ...]
    ignore: tuple[float, ...]  # don't-care times


def reference_onsets(
    events: Sequence[SoundEvent],
    duration: float,
    continuous_starts: Sequence[float] = (),
    *,
    min_strength: float = AUDIBLE_STRENGTH,
    merge_s: float = MERGE_S,
) -> OnsetReference:
    """Group audible on-screen impacts before ``duration``; everything else becomes don't-care."""
    audible = sorted(
        (e for e in events if e.object_id >= 0 and e.strength >= min_strength and e.time < duration),
        key=lambda e: e.time,
    )
    groups: list[list[SoundEvent]] = []
    for e in audible:
        if groups and e.time - groups[-1][0].time < merge_s:
            groups[-1].append(e)
        else:
            groups.append([e])
    quiet = [e.time for e in events if e.object_id >= 0 and e.strength < min_strength]
    offscreen = [e.time for e in events if e.object_id < 0 and e.time < duration]
    late = [e.time for e in events if e.time >= duration]  # their sound may begin inside the window
    return OnsetReference(
        times=tuple(float(g[0].time) for g in groups),
        sources=tuple(tuple(g) for g in groups),
        offscreen=tuple(float(t) for t in offscreen),
        ignore=tuple(float(t) for t in (*quiet, *offscreen, *late, *continuous_starts) if t > 0.0),
    )


def match_onsets(
    reference: Sequence[float], detected: Sequence[float], tolerance: float = ONSET_TOLERANCE_S
) -> list[tuple[int, int]]:
    """One-to-one greedy matching: pairs (reference index, detected index) within ``tolerance``,
    closest pairs first (ties: lower reference, then detected index); sorted by reference index."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    det = np.asarray(detected, dtype=np.float64).reshape(-1)
    if ref.size == 0 or det.size == 0:
        return []
    gap = np.abs(ref[:, None] - det[None, :])
    candidates = sorted((float(gap[i, j]), i, j) for i, j in zip(*np.nonzero(gap <= tolerance), strict=True))
    used_r: set[int] = set()
    used_d: set[int] = set()
    pairs = []
    for _, i, j in candidates:
        if i not in used_r and j not in used_d:
            used_r.add(i)
            used_d.add(j)
            pairs.append((int(i), int(j)))
    return sorted(pairs)


@dataclass(frozen=True)
class OnsetScore:
    """Onset counts of one clip (or a sum of clips)."""

    tp: int
    fp: int
    fn: int
    offsets: tuple[float, ...]  # detected - reference, seconds, per matched pair
    pairs: tuple[tuple[int, int], ...]  # (reference index, detected index)
    offscreen_hits: int = 0
    offscreen_total: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else None

    @property
    def offset_ms(self) -> float | None:
        """Mean absolute offset of matched pairs."""
        return 1000.0 * float(np.mean(np.abs(self.offsets))) if self.offsets else None

    @property
    def bias_ms(self) -> float | None:
        """Mean signed offset (positive: detected late)."""
        return 1000.0 * float(np.mean(self.offsets)) if self.offsets else None


def score_onsets(
    reference: OnsetReference, detected: Sequence[float], tolerance: float = ONSET_TOLERANCE_S
) -> OnsetScore:
    """Match ``detected`` to the reference, then off-screen sounds; unmatched detections within
    ``tolerance`` of a don't-care time are dropped, the rest are false alarms."""
    det = np.asarray(detected, dtype=np.float64).reshape(-1)
    pairs = match_onsets(reference.times, det, tolerance)
    rest = np.setdiff1d(np.arange(det.size), [j for _, j in pairs])
    off_pairs = match_onsets(reference.offscreen, det[rest], tolerance)
    rest = np.setdiff1d(rest, rest[[j for _, j in off_pairs]])
    ignore = np.asarray(reference.ignore, dtype=np.float64)
    fp = sum(not (ignore.size and np.abs(ignore - det[j]).min() <= tolerance) for j in rest)
    return OnsetScore(
        tp=len(pairs),
        fp=int(fp),
        fn=len(reference.times) - len(pairs),
        offsets=tuple(float(det[j] - reference.times[i]) for i, j in pairs),
        pairs=tuple(pairs),
        offscreen_hits=len(off_pairs),
        offscreen_total=len(reference.offscreen),
    )


def sum_scores(scores: Sequence[OnsetScore]) -> OnsetScore:
    """Pooled counts over clips (micro average); ``pairs`` are dropped (they index single clips)."""
    return OnsetScore(
        tp=sum(s.tp for s in scores),
        fp=sum(s.fp for s in scores),
        fn=sum(s.fn for s in scores),
        offsets=tuple(o for s in scores for o in s.offsets),
        pairs=(),
        offscreen_hits=sum(s.offscreen_hits for s in scores),
        offscreen_total=sum(s.offscreen_total for s in scores),
    )


# --------------------------------------------------------------------------------------------------
# Pitch class
# --------------------------------------------------------------------------------------------------


def _strongest_partial(material: str) -> float:
    if material not in MATERIALS:
        raise ValueError(f"no pitch class for {material!r}: only impacts of {sorted(MATERIALS)}")
    m = MATERIALS[material]
    return float(m.partials[int(np.argmax(m.amplitudes))])


def dominant_frequency(
    audio: np.ndarray,
    sample_rate: int,
    onset: float,
    window: tuple[float, float] = PITCH_WINDOW_S,
    band: tuple[float, float] = PITCH_BAND_HZ,
    n_fft: int = 8192,
) -> float:
    """Peak frequency (Hz) of the power that appears at ``onset``: the spectrum of
    ``onset + window`` minus that of the equally long stretch ending ``window[0]`` before the onset
    (so sounds already ringing cancel). NaN when nothing new sounds in ``band``."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    length = round((window[1] - window[0]) * sample_rate)
    taper = np.hanning(length)

    def power(start_s: float) -> np.ndarray:
        start = round(start_s * sample_rate)
        seg = np.zeros(length)
        lo, hi = max(start, 0), min(start + length, x.size)
        if hi > lo:
            seg[lo - start : hi - start] = x[lo:hi]
        return np.abs(np.fft.rfft(seg * taper, n_fft)) ** 2

    new = np.maximum(power(onset + window[0]) - power(onset - window[1] + window[0]), 0.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    inside = (freqs >= band[0]) & (freqs <= band[1])
    if not np.any(new[inside] > 0):
        return math.nan
    return float(freqs[inside][np.argmax(new[inside])])


def colour_from_frequency(freq: float, material: str) -> str | None:
    """The colour whose pitch times the material's strongest partial is nearest (log scale)."""
    if not (math.isfinite(freq) and freq > 0):
        return None
    expected = _COLOUR_PITCHES * _strongest_partial(material)
    return _COLOUR_NAMES[int(np.argmin(np.abs(np.log(expected / freq))))]


def pitch_checks(
    audio: np.ndarray,
    sample_rate: int,
    reference: OnsetReference,
    detected: Sequence[float],
    score: OnsetScore,
) -> list[bool]:
    """Right/wrong colour for each matched onset of a single on-screen object."""
    det = np.asarray(detected, dtype=np.float64).reshape(-1)
    checks = []
    for i, j in score.pairs:
        group = reference.sources[i]
        if len({e.object_id for e in group}) != 1:
            continue  # two objects at once: the dominant pitch is ambiguous
        event = group[0]
        freq = dominant_frequency(audio, sample_rate, float(det[j]))
        checks.append(colour_from_frequency(freq, event.material) == event.colour)
    return checks


# --------------------------------------------------------------------------------------------------
# Fréchet distance of log-mel frames
# --------------------------------------------------------------------------------------------------


def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """HTK mel triangles from 0 Hz to Nyquist, peak 1, ``[n_mels, n_fft // 2 + 1]``."""
    mel = np.linspace(0.0, 2595.0 * np.log10(1.0 + sample_rate / 2.0 / 700.0), n_mels + 2)
    edges = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))


def log_mel_frames(audio: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """Fixed 64-band log-mel ``[frames, 64]`` (natural log of power; a full-scale sine ≈ 0)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size < MEL_FFT:
        x = np.pad(x, (0, MEL_FFT - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, MEL_FFT)[::MEL_HOP]
    window = np.hanning(MEL_FFT)
    spec = np.abs(np.fft.rfft(frames * window, axis=1)) * (2.0 / window.sum())
    mel = (spec**2) @ _mel_filterbank(sample_rate, MEL_FFT, MEL_BANDS).T
    return np.log(np.maximum(mel, MEL_FLOOR)).astype(np.float32)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||μa − μb||² + Tr(Σa + Σb − 2(Σa Σb)^½) of Gaussians fitted to the rows of ``a`` and ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two [n >= 2, d] arrays of equal d, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = root_a @ cov_b @ root_a  # similar to Σa Σb, symmetric: Tr((Σa Σb)^½) = Σ sqrt(eig)
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum()
    diff = mu_a - mu_b
    return max(0.0, float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root))
