"""The soundtrack of a scene: modal impacts, hums, rolling rumble, backgrounds and off-screen sounds.

Pitch comes from the object's colour and timbre from its material; loudness follows the impact
speed. Every object has its own track so that a new hit chokes the ringing of the previous one.
"""

from __future__ import annotations

import math

import numpy as np

from mfmjt.toy.physics import Simulation, hover_position
from mfmjt.toy.specs import ObjectSpec, SceneConfig, SoundEvent
from mfmjt.toy.vocabulary import MATERIALS, Material

IMPACT_GAIN = 0.6
CHOKE_TIME = 0.004  # a new impact damps the object's previous ringing with this time constant
HUM_GAIN = 0.05
ROLL_GAIN = 0.12


def _band_noise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """White noise band-limited to [lo, hi] Hz in the frequency domain, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec[(f < lo) | (f > hi)] = 0.0
    x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def _impact_sound(
    material: Material, pitch: float, strength: float, frac: float, sr: int, rng: np.random.Generator
) -> np.ndarray:
    """One impact; ``frac`` in [0, 1) is the sub-sample delay of the first sample after contact."""
    length = int(min(2.0, 7.0 * max(material.decays)) * sr)
    t = (np.arange(length) + frac) / sr
    bright = 0.4 + 0.6 * strength  # harder hits excite upper partials more
    wave = np.zeros(length)
    for k, (ratio, amp, decay) in enumerate(
        zip(material.partials, material.amplitudes, material.decays, strict=True)
    ):
        f = pitch * ratio
        if f < 0.45 * sr:
            wave += amp * bright**k * np.exp(-t / decay) * np.sin(2 * math.pi * f * t)
    n_noise = min(length, max(16, int(8 * material.noise_decay * sr)))
    noise = _band_noise(rng, n_noise, sr, *material.noise_band) * np.exp(-t[:n_noise] / material.noise_decay)
    wave[:n_noise] += material.noise_amount * noise
    norm = sum(material.amplitudes) + material.noise_amount
    return IMPACT_GAIN * strength * wave / norm


def _offscreen_sound(kind: str, pitch: float, frac: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "knock":
        return _impact_sound(MATERIALS["wood"], pitch, 0.6, frac, sr, rng)
    if kind == "clap":
        n = int(0.08 * sr)
        t = (np.arange(n) + frac) / sr
        return 0.3 * _band_noise(rng, n, sr, 800.0, 5000.0) * np.exp(-t / 0.012)
    n = int(0.15 * sr)  # beep: a short sine with 2 ms ramps
    t = (np.arange(n) + frac) / sr
    ramp = np.clip(np.minimum(t, t[-1] - t) / 0.002, 0.0, 1.0)
    return 0.15 * ramp * np.sin(2 * math.pi * pitch * t)


def _background(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    if kind == "wind":
        gust = 0.6 + 0.4 * np.sin(2 * math.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 2 * math.pi))
        return 0.03 * gust * _band_noise(rng, n, sr, 60.0, 600.0)
    if kind == "hiss":
        return 0.01 * _band_noise(rng, n, sr, 2000.0, 7500.0)
    out = 0.006 * _band_noise(rng, n, sr, 1000.0, 7000.0)  # rain: a bed of hiss plus many small drops
    drop = _band_noise(rng, 64, sr, 1500.0, 6000.0) * np.exp(-np.arange(64) / (0.0015 * sr))
    for start in rng.integers(0, max(1, n - 64), size=int(120 * n / sr)):
        out[start : start + 64] += 0.015 * rng.uniform(0.2, 1.0) * drop
    return out


def render_audio(
    objects: list[ObjectSpec],
    sim: Simulation,
    events: list[SoundEvent],
    background: str | None,
    cfg: SceneConfig,
    n_samples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """The float32 soundtrack of ``n_samples`` samples: events, sustained sources, background."""
    sr = cfg.sample_rate
    out = np.zeros(n_samples)
    tracks = np.zeros((len(objects), n_samples))  # one per object: a new hit chokes the old ringing
    choke = np.exp(-np.arange(int(0.03 * sr)) / (CHOKE_TIME * sr))
    for ev in events:
        if ev.sample >= n_samples:
            continue
        frac = ev.sample - ev.time * sr  # in [0, 1): sub-sample phase of the first sample
        if ev.object_id < 0:
            snd = _offscreen_sound(ev.material, ev.pitch_hz, frac, sr, rng)
            track = out
        else:
            snd = _impact_sound(MATERIALS[ev.material], ev.pitch_hz, ev.strength, frac, sr, rng)
            track = tracks[ev.object_id]
            tail = track[ev.sample : ev.sample + choke.size]
            tail *= choke[: tail.size]
            track[ev.sample + choke.size :] = 0.0
        end = min(n_samples, ev.sample + snd.size)
        track[ev.sample : end] += snd[: end - ev.sample]
    out += tracks.sum(axis=0)

    t = np.arange(n_samples) / sr
    for src in sim.continuous:
        o = objects[src.object_id]
        if src.kind == "hum":
            # loudness follows the visible fraction of the object's width (exact: x(t) is linear)
            x, _ = hover_position(sim.inits[o.id], t)
            vis = np.clip(
                (np.minimum(x + o.radius, cfg.width) - np.maximum(x - o.radius, 0.0)) / (2 * o.radius), 0, 1
            )
            vib = 0.01 * np.sin(2 * math.pi * 5.0 * t)
            phase = 2 * math.pi * o.pitch_hz * np.cumsum(1.0 + vib) / sr
            buzz = sum(np.sin(k * phase) / k for k in range(1, 7) if k * o.pitch_hz < 0.45 * sr)
            out += HUM_GAIN * vis * (0.8 + 0.2 * np.sin(2 * math.pi * 3.0 * t)) * buzz
        else:
            speed = np.interp(t, sim.step_times, sim.roll_speed[:, o.id])
            rotation = np.cumsum(speed / (2 * math.pi * o.radius)) / sr  # turns
            rumble = _band_noise(rng, n_samples, sr, 40.0, 400.0)
            out += (
                ROLL_GAIN * np.clip(speed / 200.0, 0, 1) * (1 + 0.3 * np.sin(2 * math.pi * rotation)) * rumble
            )
    if background is not None:
        out += _background(background, n_samples, sr, rng)
    peak = float(np.max(np.abs(out))) if n_samples else 0.0
    if peak > 0.98:  # rare: scale the whole clip, keeping relative loudness
        out *= 0.98 / peak
    return out.astype(np.float32)
