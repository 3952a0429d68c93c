"""The data of a scene: its configuration, objects, sound events and the generated clip."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mfmjt.toy.vocabulary import COLOURS

FLOOR_HEIGHT = 12  # pixels: the floor band at the bottom of the frame


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn. ``duration`` fixes the length; otherwise it is drawn in [min, max]."""

    width: int = 128
    height: int = 128
    fps: float = 24.0
    sample_rate: int = 16_000
    duration: float | None = None
    min_duration: float = 2.0
    max_duration: float = 10.0
    min_objects: int = 1
    max_objects: int = 3
    gravity: float = 700.0  # px/s^2
    substeps: int = 8  # physics steps per video frame (contacts are solved exactly inside a step)
    throw_prob: float = 0.25
    roll_prob: float = 0.15  # balls only
    hover_prob: float = 0.15
    background_prob: float = 0.25
    offscreen_prob: float = 0.2
    text_only_prob: float = 0.0
    min_strength: float = 0.05  # quieter impacts make no sound and are not listed

    def __post_init__(self) -> None:
        if self.width < 32 or self.height < 32:
            raise ValueError(f"frame size must be at least 32x32, got {self.width}x{self.height}")
        if self.fps <= 0 or self.sample_rate <= 0 or self.substeps < 1:
            raise ValueError("fps, sample_rate and substeps must be positive")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"duration must be positive, got {self.duration}")
        if not 0 < self.min_duration <= self.max_duration:
            raise ValueError(
                f"need 0 < min_duration <= max_duration, got {self.min_duration}, {self.max_duration}"
            )
        if not 1 <= self.min_objects <= self.max_objects <= len(COLOURS):
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {len(COLOURS)}")
        probs = (
            self.throw_prob,
            self.roll_prob,
            self.hover_prob,
            self.background_prob,
            self.offscreen_prob,
            self.text_only_prob,
        )
        if (
            any(not 0.0 <= p <= 1.0 for p in probs)
            or self.throw_prob + self.roll_prob + self.hover_prob > 1.0
        ):
            raise ValueError("probabilities must lie in [0, 1] and throw+roll+hover must not exceed 1")

    @property
    def floor_y(self) -> float:
        """y of the floor surface."""
        return float(self.height - FLOOR_HEIGHT)


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a scene."""

    id: int
    shape: str
    colour: str
    material: str
    radius: float  # half extent in pixels
    motion: str  # "fall" | "throw" | "roll" | "hover"
    pitch_hz: float

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class SoundEvent:
    """A sounding impact (or off-screen sound) with its exact time."""

    time: float  # seconds; the exact contact time
    sample: int  # first audio sample of the sound (ceil(time * sample_rate))
    frame: int  # index of the video frame nearest to the contact
    object_id: int  # -1 for off-screen sounds
    kind: str  # "floor" | "wall" | "object" | "offscreen"
    colour: str | None
    shape: str | None
    material: str  # timbre class: a material name, or the off-screen kind
    pitch_hz: float
    strength: float  # 0..1, impact speed / reference speed
    speed: float = 0.0  # normal speed at contact, px/s
    other_id: int = -1  # the partner of an object-object collision


@dataclass(frozen=True)
class ContinuousSound:
    """A sustained source: a hovering object's hum or a ball's rolling rumble."""

    object_id: int
    kind: str  # "hum" | "roll"
    start: float
    end: float
    colour: str
    shape: str
    pitch_hz: float


@dataclass
class Scene:
    """A generated clip: video frames (None for text-only samples), audio, caption, ground truth."""

    seed: int
    frames: np.ndarray | None  # uint8 [T, H, W, 3]
    fps: float
    audio: np.ndarray  # float32 [samples]
    sample_rate: int
    caption: str
    duration: float
    events: list[SoundEvent] = field(default_factory=list)
    continuous: list[ContinuousSound] = field(default_factory=list)
    objects: list[ObjectSpec] = field(default_factory=list)
    background: str | None = None
    positions: np.ndarray | None = None  # float [T, n_objects, 2]: object centres (x, y) at frame times

    @property
    def has_video(self) -> bool:
        return self.frames is not None


@dataclass(frozen=True)
class ObjectStart:
    """Initial state of one object (hover objects move analytically from it)."""

    x: float
    y: float
    vx: float
    vy: float
    resting: bool
    hover_amp: float = 0.0
    hover_freq: float = 0.0
    hover_phase: float = 0.0
    release: float = 0.0  # a falling object hangs still above the frame until this time
