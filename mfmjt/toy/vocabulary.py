"""The scene vocabulary: colours (-> pitch), shapes (-> material -> timbre), backgrounds, off-screen."""

from __future__ import annotations

from dataclasses import dataclass

# name -> (RGB, pitch in Hz). Hues sit on multiples of 30 degrees with high saturation, so a hue
# histogram separates them; pitches are four semitones apart from A3 (220 Hz) up, so neighbouring
# colours fall in different bands of an 80-band mel spectrogram.
COLOURS: dict[str, tuple[tuple[int, int, int], float]] = {
    "red": ((235, 30, 30), 220.0),
    "orange": ((240, 135, 25), 277.2),
    "yellow": ((235, 235, 35), 349.2),
    "green": ((35, 215, 35), 440.0),
    "cyan": ((30, 220, 220), 554.4),
    "blue": ((40, 40, 245), 698.5),
    "purple": ((140, 40, 240), 880.0),
    "pink": ((240, 40, 140), 1108.7),
}

SHAPES: tuple[str, ...] = ("ball", "square", "triangle", "diamond")


@dataclass(frozen=True)
class Material:
    """Modal impact timbre: partial frequency ratios, amplitudes, decays, plus a noise burst."""

    name: str
    restitution: float
    partials: tuple[float, ...]  # frequency ratios to the colour's pitch
    amplitudes: tuple[float, ...]
    decays: tuple[float, ...]  # seconds (exponential time constants)
    noise_amount: float
    noise_decay: float  # seconds
    noise_band: tuple[float, float]  # Hz


# restitution, partial ratios, amplitudes, decays (s), noise amount, noise decay (s), noise band (Hz)
_M = Material
MATERIALS: dict[str, Material] = {
    "rubber": _M("rubber", 0.75, (1, 2, 3), (1, 0.35, 0.12), (0.1, 0.06, 0.04), 1.0, 0.004, (80, 2000)),
    "wood": _M("wood", 0.5, (1, 2.76, 5.4), (1, 0.5, 0.25), (0.05, 0.03, 0.02), 1.2, 0.006, (300, 3000)),
    "metal": _M("metal", 0.62, (1, 2.76, 5.4, 8.93), (1, 0.6, 0.4, 0.25), (0.45, 0.3, 0.2, 0.12), 0.8, 0.003,
                (2000, 7000)),
    "glass": _M("glass", 0.45, (2, 4.64, 8.5), (1, 0.5, 0.3), (0.2, 0.12, 0.07), 0.6, 0.002, (3000, 7500)),
}  # fmt: skip
del _M

SHAPE_MATERIAL: dict[str, str] = {"ball": "rubber", "square": "wood", "triangle": "metal", "diamond": "glass"}

# background kind -> caption suffix
BACKGROUNDS: dict[str, str] = {
    "wind": "with wind blowing in the background",
    "rain": "with rain in the background",
    "hiss": "with a steady hiss in the background",
}

# off-screen kind -> caption clause
OFFSCREEN_SOUNDS: dict[str, str] = {
    "beep": "a beep sounds off-screen",
    "knock": "someone knocks off-screen",
    "clap": "a clap comes from off-screen",
}

COUNT_WORDS = {1: "once", 2: "twice", 3: "three times", 4: "four times"}
