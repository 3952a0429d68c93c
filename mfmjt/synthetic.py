"""Procedurally generated audio-visual scenes with ground-truth sound events.

A scene is a short clip (128x128 at 24 fps by default) of coloured objects that fall under gravity,
bounce off the floor and walls, collide, roll or hover, with a 16 kHz mono soundtrack made from
those events and a caption that names them ("a red ball bounces twice, a blue square falls and hits
the ground"). Everything is a deterministic function of ``(seed, SceneConfig)``.

Sound design, chosen so that a model can learn it from video and text:

- pitch is tied to the object's colour (:data:`COLOURS`), timbre to its shape through a material
  (:data:`SHAPE_MATERIAL`: ball = rubber, square = wood, triangle = metal, diamond = glass);
- loudness is proportional to the normal speed at impact;
- contact times are solved analytically inside the physics step, so an impact sound starts on the
  exact audio sample of the contact (not on a video frame boundary);
- hovering objects hum while visible, balls rumble while they roll along the floor;
- some scenes add background noise (wind, rain, hiss) or off-screen sounds (beep, knock, clap);
- text-only samples (``frames is None``) carry a caption and audio but no video, for text-to-audio.

Coordinates are pixels, x to the right and y downwards; the floor is a band at the bottom of the
frame and the frame edges are walls.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "MATERIALS",
    "OFFSCREEN_SOUNDS",
    "SHAPES",
    "SHAPE_MATERIAL",
    "ContinuousSound",
    "Material",
    "ObjectSpec",
    "Scene",
    "SceneConfig",
    "SoundEvent",
    "caption_vocabulary",
    "detect_onsets",
    "make_scene",
    "make_text_sample",
    "write_scene_mp4",
]

# --------------------------------------------------------------------------------------------------
# Vocabulary: colours (-> pitch), shapes (-> material -> timbre), backgrounds, off-screen sounds
# --------------------------------------------------------------------------------------------------

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

_COUNT_WORDS = {1: "once", 2: "twice", 3: "three times", 4: "four times"}

# Physics and mixing constants (pixels, seconds).
_FLOOR_HEIGHT = 12
_WALL_RESTITUTION = 0.7
_REST_SPEED = 50.0  # a floor bounce slower than this leaves the object resting
_REF_SPEED = 600.0  # impact speed of strength 1
_ROLL_DECEL = 25.0  # rolling resistance of balls (px/s^2)
_SLIDE_DECEL = 400.0  # sliding friction of other shapes
_IMPACT_GAIN = 0.6
_CHOKE_TIME = 0.004  # a new impact damps the object's previous ringing with this time constant
_HUM_GAIN = 0.05
_ROLL_GAIN = 0.12
_MAX_EVENTS_PER_STEP = 16


# --------------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------------


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
        return float(self.height - _FLOOR_HEIGHT)


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


def caption_vocabulary() -> list[str]:
    """Every word a caption can contain, sorted."""
    words = set(COLOURS) | set(SHAPES)
    phrases = [
        *BACKGROUNDS.values(),
        *OFFSCREEN_SOUNDS.values(),
        *_COUNT_WORDS.values(),
        "a an the and then falls hits ground bounces several times is thrown lands rolls along floor",
        "wall walls hovers hums flies across humming still room quiet silence",
    ]
    for phrase in phrases:
        words.update(phrase.replace(",", " ").split())
    return sorted(words)


# --------------------------------------------------------------------------------------------------
# Scene generation
# --------------------------------------------------------------------------------------------------


def make_scene(seed: int, config: SceneConfig | None = None) -> Scene:
    """Generate the scene of ``seed``: layout, physics, video, audio and caption."""
    config = config or SceneConfig()
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    layout_seq, audio_seq, extra_seq = np.random.SeedSequence(int(seed)).spawn(3)
    rng = np.random.default_rng(layout_seq)

    duration = config.duration
    if duration is None:
        duration = float(rng.uniform(config.min_duration, config.max_duration))
    n_frames = max(1, round(duration * config.fps))
    duration = n_frames / config.fps
    n_samples = round(duration * config.sample_rate)
    text_only = bool(rng.random() < config.text_only_prob)

    objects, init = _draw_objects(rng, config, duration)
    sim = _simulate(objects, init, config, n_frames)

    extra_rng = np.random.default_rng(extra_seq)
    background = None
    if extra_rng.random() < config.background_prob:
        background = str(extra_rng.choice(list(BACKGROUNDS)))
    offscreen_events: list[SoundEvent] = []
    if extra_rng.random() < config.offscreen_prob:
        offscreen_events = _draw_offscreen(extra_rng, config, duration)

    events = sorted(sim.events + offscreen_events, key=lambda e: (e.time, e.object_id))
    audio = _render_audio(
        objects, sim, events, background, config, n_samples, np.random.default_rng(audio_seq)
    )
    caption = _caption(objects, sim.events, sim.continuous, offscreen_events, background)
    frames = None if text_only else _render_video(objects, sim, config, int(extra_rng.integers(1 << 31)))
    logger.debug("scene %d: %.2f s, %d events, caption %r", seed, duration, len(events), caption)
    return Scene(
        seed=int(seed),
        frames=frames,
        fps=config.fps,
        audio=audio,
        sample_rate=config.sample_rate,
        caption=caption,
        duration=duration,
        events=events,
        continuous=sim.continuous,
        objects=objects,
        background=background,
        positions=sim.positions.astype(np.float32),
    )


def make_text_sample(seed: int, config: SceneConfig | None = None) -> Scene:
    """A text-to-audio sample: the scene of ``seed`` without video (same caption and audio)."""
    return make_scene(seed, replace(config or SceneConfig(), text_only_prob=1.0))


@dataclass(frozen=True)
class _Init:
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


def _draw_objects(
    rng: np.random.Generator, cfg: SceneConfig, duration: float
) -> tuple[list[ObjectSpec], list[_Init]]:
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    colours = rng.choice(list(COLOURS), size=n, replace=False)
    objects: list[ObjectSpec] = []
    inits: list[_Init] = []
    W, H, floor = float(cfg.width), float(cfg.height), cfg.floor_y
    for colour in colours:
        shape = str(rng.choice(SHAPES))
        r = float(rng.uniform(6.0, 12.0)) * min(W, H) / 128.0
        u = rng.random()
        if u < cfg.hover_prob:
            motion = "hover"
        elif u < cfg.hover_prob + cfg.throw_prob:
            motion = "throw"
        elif u < cfg.hover_prob + cfg.throw_prob + cfg.roll_prob:
            motion = "roll"
        else:
            motion = "fall"
        if motion == "roll":
            shape = "ball"
        for _ in range(50):
            init = _draw_init(rng, motion, r, W, H, floor, duration)
            if motion == "hover" or all(
                o.motion == "hover" or math.hypot(init.x - i.x, init.y - i.y) > r + o.radius + 2.0
                for o, i in zip(objects, inits, strict=True)
            ):
                break
        else:
            continue  # no free spot: drop the object
        material = SHAPE_MATERIAL[shape]
        objects.append(
            ObjectSpec(
                id=len(objects),
                shape=shape,
                colour=str(colour),
                material=material,
                radius=r,
                motion=motion,
                pitch_hz=COLOURS[str(colour)][1],
            )
        )
        inits.append(init)
    return objects, inits


def _draw_init(
    rng: np.random.Generator, motion: str, r: float, W: float, H: float, floor: float, duration: float
) -> _Init:
    if motion == "fall":
        x = float(rng.uniform(r + 1, W - r - 1))
        if rng.random() < 0.5:  # dropped later from above the frame, to spread events over the clip
            return _Init(
                x=x,
                y=float(rng.uniform(-1.5 * H, -r - 1)),
                vx=float(rng.normal(0.0, 25.0)),
                vy=0.0,
                resting=False,
                release=float(rng.uniform(0.0, 0.7 * duration)),
            )
        return _Init(
            x=x,
            y=float(rng.uniform(-1.5 * H, 0.45 * H)),
            vx=float(rng.normal(0.0, 25.0)),
            vy=0.0,
            resting=False,
        )
    if motion == "throw":
        left = rng.random() < 0.5
        x = r + 1.0 if left else W - r - 1.0
        vx = float(rng.uniform(80.0, 220.0)) * (1 if left else -1)
        return _Init(
            x=x,
            y=float(rng.uniform(0.4 * H, floor - r - 1)),
            vx=vx,
            vy=-float(rng.uniform(150.0, 450.0)),
            resting=False,
        )
    if motion == "roll":
        vx = float(rng.uniform(60.0, 200.0)) * (1 if rng.random() < 0.5 else -1)
        return _Init(x=float(rng.uniform(r + 1, W - r - 1)), y=floor - r, vx=vx, vy=0.0, resting=True)
    # hover: enter from a side or start inside, drift horizontally, bob up and down
    left = rng.random() < 0.5
    if rng.random() < 0.5:
        x = -r - float(rng.uniform(0.0, 30.0)) if left else W + r + float(rng.uniform(0.0, 30.0))
        speed = float(rng.uniform(W + 2 * r + 30.0, 2.0 * (W + 2 * r + 30.0))) / max(duration, 1.0)
    else:
        x = float(rng.uniform(r + 1, W - r - 1))
        speed = float(rng.uniform(5.0, 30.0))
    return _Init(
        x=x,
        y=float(rng.uniform(0.15 * H, 0.5 * H)),
        vx=speed if left else -speed,
        vy=0.0,
        resting=False,
        hover_amp=float(rng.uniform(3.0, 10.0)),
        hover_freq=float(rng.uniform(0.5, 2.0)),
        hover_phase=float(rng.uniform(0.0, 2 * math.pi)),
    )


# --------------------------------------------------------------------------------------------------
# Physics: event-driven inside fixed sub-steps
# --------------------------------------------------------------------------------------------------


@dataclass
class _Simulation:
    positions: np.ndarray  # [T, n, 2] at frame times
    events: list[SoundEvent]
    continuous: list[ContinuousSound]
    step_times: np.ndarray  # [steps + 1]
    roll_speed: np.ndarray  # [steps + 1, n], |vx| of resting balls, else 0
    inits: list[_Init]


def _hover_position(init: _Init, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=np.float64)
    x = init.x + init.vx * t
    y = init.y + init.hover_amp * np.sin(2 * math.pi * init.hover_freq * t + init.hover_phase)
    return x, y


def _simulate(objects: list[ObjectSpec], inits: list[_Init], cfg: SceneConfig, n_frames: int) -> _Simulation:
    n = len(objects)
    g, W, floor = cfg.gravity, float(cfg.width), cfg.floor_y
    h = 1.0 / (cfg.fps * cfg.substeps)
    n_steps = n_frames * cfg.substeps
    physical = [i for i, o in enumerate(objects) if o.motion != "hover"]
    release = [inits[i].release for i in range(n)]
    phys: list[int] = []  # physical objects already released (the closures below read it)
    pos = np.array([[i.x, i.y] for i in inits], dtype=np.float64).reshape(n, 2)
    vel = np.array([[i.vx, i.vy] for i in inits], dtype=np.float64).reshape(n, 2)
    resting = np.array([i.resting for i in inits], dtype=bool)
    radius = np.array([o.radius for o in objects], dtype=np.float64)
    mass = radius**2
    restitution = np.array([MATERIALS[o.material].restitution for o in objects])
    positions = np.zeros((n_frames, n, 2))
    step_times = np.arange(n_steps + 1) * h
    roll_speed = np.zeros((n_steps + 1, n))
    events: list[SoundEvent] = []

    def emit(t: float, i: int, kind: str, speed: float, other: int = -1) -> None:
        strength = min(1.0, speed / _REF_SPEED)
        if strength < cfg.min_strength:
            return
        o = objects[i]
        events.append(
            SoundEvent(
                time=t,
                sample=math.ceil(t * cfg.sample_rate - 1e-9),
                frame=min(n_frames - 1, round(t * cfg.fps)),
                object_id=i,
                kind=kind,
                colour=o.colour,
                shape=o.shape,
                material=o.material,
                pitch_hz=o.pitch_hz,
                strength=strength,
                speed=speed,
                other_id=other,
            )
        )

    def advance(dt: float) -> None:
        for i in phys:
            pos[i, 0] += vel[i, 0] * dt
            if not resting[i]:
                pos[i, 1] += vel[i, 1] * dt + 0.5 * g * dt * dt
                vel[i, 1] += g * dt

    def earliest(limit: float) -> tuple[float, str, int, int]:
        best = (limit, "", -1, -1)
        for i in phys:
            r = radius[i]
            if not resting[i]:  # floor: y + vy t + g t^2 / 2 = floor - r
                d = floor - r - pos[i, 1]
                vy = vel[i, 1]
                if d <= 0.0:
                    t = 0.0 if vy > 0 else math.inf
                else:
                    s = math.sqrt(vy * vy + 2 * g * d)
                    t = 2 * d / (vy + s) if vy > 0 else (s - vy) / g
                if t < best[0]:
                    best = (t, "floor", i, -1)
            vx = vel[i, 0]  # walls (x is linear in time)
            if vx < 0:
                t = max(0.0, (pos[i, 0] - r) / -vx)
            elif vx > 0:
                t = max(0.0, (W - r - pos[i, 0]) / vx)
            else:
                t = math.inf
            if t < best[0]:
                best = (t, "wall", i, -1)
        for a_idx, i in enumerate(phys):  # pairs: |p + v t| = r_i + r_j (relative acceleration ignored)
            for j in phys[a_idx + 1 :]:
                p = pos[j] - pos[i]
                v = vel[j] - vel[i]
                pv = float(p @ v)
                if pv >= 0.0:
                    continue
                R = radius[i] + radius[j]
                c = float(p @ p) - R * R
                a = float(v @ v)
                if c <= 0.0:
                    t = 0.0
                else:
                    disc = pv * pv - a * c
                    if disc < 0.0:
                        continue
                    t = c / (-pv + math.sqrt(disc))  # stable smaller root
                if t < best[0]:
                    best = (t, "pair", i, j)
        return best

    def resolve(t_abs: float, kind: str, i: int, j: int) -> None:
        if kind == "floor":
            speed = max(vel[i, 1], 0.0)
            pos[i, 1] = floor - radius[i]
            bounce = restitution[i] * speed
            emit(t_abs, i, "floor", speed)
            if bounce < _REST_SPEED:
                vel[i, 1] = 0.0
                resting[i] = True
            else:
                vel[i, 1] = -bounce
        elif kind == "wall":
            speed = abs(vel[i, 0])
            pos[i, 0] = np.clip(pos[i, 0], radius[i], W - radius[i])
            vel[i, 0] = -_WALL_RESTITUTION * vel[i, 0]
            emit(t_abs, i, "wall", speed)
        else:
            p = pos[j] - pos[i]
            dist = max(float(np.hypot(*p)), 1e-9)
            nrm = p / dist
            vn = float((vel[j] - vel[i]) @ nrm)  # < 0 when approaching
            speed = -vn
            e = 0.5 * (restitution[i] + restitution[j]) if speed >= _REST_SPEED else 0.0
            impulse = -(1 + e) * vn / (1 / mass[i] + 1 / mass[j])
            vel[i] -= impulse / mass[i] * nrm
            vel[j] += impulse / mass[j] * nrm
            overlap = radius[i] + radius[j] - dist
            if overlap > 0:  # push apart so the pair does not stick
                pos[i] -= 0.5 * (overlap + 1e-6) * nrm
                pos[j] += 0.5 * (overlap + 1e-6) * nrm
            for k in (i, j):
                if resting[k]:
                    pos[k, 1] = floor - radius[k]
                    if vel[k, 1] < -_REST_SPEED:
                        resting[k] = False
                    else:
                        vel[k, 1] = 0.0
                pos[k, 1] = min(pos[k, 1], floor - radius[k])
            emit(t_abs, i, "object", speed, other=j)
            emit(t_abs, j, "object", speed, other=i)

    for step in range(n_steps):
        if step % cfg.substeps == 0:
            positions[step // cfg.substeps] = pos
        t0 = step * h
        phys[:] = [i for i in physical if release[i] <= t0]
        remaining = h
        for _ in range(_MAX_EVENTS_PER_STEP):
            tau, kind, i, j = earliest(remaining)
            if not kind:
                break
            advance(tau)
            remaining -= tau
            resolve(t0 + h - remaining, kind, i, j)
        advance(remaining)
        for i in phys:  # floor friction, applied once per sub-step
            if resting[i] and vel[i, 0] != 0.0:
                decel = (_ROLL_DECEL if objects[i].shape == "ball" else _SLIDE_DECEL) * h
                vel[i, 0] = 0.0 if abs(vel[i, 0]) <= decel else vel[i, 0] - math.copysign(decel, vel[i, 0])
            if resting[i] and objects[i].shape == "ball":
                roll_speed[step + 1, i] = abs(vel[i, 0])

    for k, o in enumerate(objects):  # hover objects move analytically
        if o.motion == "hover":
            xs, ys = _hover_position(inits[k], np.arange(n_frames) / cfg.fps)
            positions[:, k, 0], positions[:, k, 1] = xs, ys

    duration = n_frames / cfg.fps
    continuous: list[ContinuousSound] = []
    for k, o in enumerate(objects):
        if o.motion == "hover":
            span = _hover_visible_span(inits[k], o.radius, W, duration)
            if span is not None:
                continuous.append(ContinuousSound(k, "hum", span[0], span[1], o.colour, o.shape, o.pitch_hz))
        rolling = np.nonzero(roll_speed[:, k] > 5.0)[0]
        if rolling.size:
            continuous.append(
                ContinuousSound(
                    k,
                    "roll",
                    float(step_times[rolling[0]]),
                    float(step_times[rolling[-1]]),
                    o.colour,
                    o.shape,
                    o.pitch_hz,
                )
            )
    return _Simulation(positions, events, continuous, step_times, roll_speed, inits)


def _hover_visible_span(init: _Init, r: float, W: float, duration: float) -> tuple[float, float] | None:
    """Time interval during which a hover object overlaps the frame horizontally."""
    if init.vx == 0.0:
        return (0.0, duration) if -r < init.x < W + r else None
    t_a, t_b = sorted(((-r - init.x) / init.vx, (W + r - init.x) / init.vx))
    start, end = max(t_a, 0.0), min(t_b, duration)
    return (start, end) if end > start else None


def _draw_offscreen(rng: np.random.Generator, cfg: SceneConfig, duration: float) -> list[SoundEvent]:
    kind = str(rng.choice(list(OFFSCREEN_SOUNDS)))
    t = float(rng.uniform(0.1, max(0.2, duration - 0.5)))
    times = [t, t + 0.18] if kind == "knock" else [t]
    pitch = {"beep": float(rng.choice([880.0, 1175.0, 1568.0])), "knock": 150.0, "clap": 0.0}[kind]
    return [
        SoundEvent(
            time=ti,
            sample=math.ceil(ti * cfg.sample_rate - 1e-9),
            frame=min(round(duration * cfg.fps) - 1, round(ti * cfg.fps)),
            object_id=-1,
            kind="offscreen",
            colour=None,
            shape=None,
            material=kind,
            pitch_hz=pitch,
            strength=0.5,
        )
        for ti in times
        if ti < duration
    ]


# --------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------


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
    return _IMPACT_GAIN * strength * wave / norm


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


def _render_audio(
    objects: list[ObjectSpec],
    sim: _Simulation,
    events: list[SoundEvent],
    background: str | None,
    cfg: SceneConfig,
    n_samples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    sr = cfg.sample_rate
    out = np.zeros(n_samples)
    tracks = np.zeros((len(objects), n_samples))  # one per object: a new hit chokes the old ringing
    choke = np.exp(-np.arange(int(0.03 * sr)) / (_CHOKE_TIME * sr))
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
            x, _ = _hover_position(sim.inits[o.id], t)
            vis = np.clip(
                (np.minimum(x + o.radius, cfg.width) - np.maximum(x - o.radius, 0.0)) / (2 * o.radius), 0, 1
            )
            vib = 0.01 * np.sin(2 * math.pi * 5.0 * t)
            phase = 2 * math.pi * o.pitch_hz * np.cumsum(1.0 + vib) / sr
            buzz = sum(np.sin(k * phase) / k for k in range(1, 7) if k * o.pitch_hz < 0.45 * sr)
            out += _HUM_GAIN * vis * (0.8 + 0.2 * np.sin(2 * math.pi * 3.0 * t)) * buzz
        else:
            speed = np.interp(t, sim.step_times, sim.roll_speed[:, o.id])
            rotation = np.cumsum(speed / (2 * math.pi * o.radius)) / sr  # turns
            rumble = _band_noise(rng, n_samples, sr, 40.0, 400.0)
            out += (
                _ROLL_GAIN
                * np.clip(speed / 200.0, 0, 1)
                * (1 + 0.3 * np.sin(2 * math.pi * rotation))
                * rumble
            )
    if background is not None:
        out += _background(background, n_samples, sr, rng)
    peak = float(np.max(np.abs(out))) if n_samples else 0.0
    if peak > 0.98:  # rare: scale the whole clip, keeping relative loudness
        out *= 0.98 / peak
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------


def _count_phrase(n: int) -> str:
    return _COUNT_WORDS.get(n, "several times")


def _caption(
    objects: list[ObjectSpec],
    events: list[SoundEvent],
    continuous: list[ContinuousSound],
    offscreen: list[SoundEvent],
    background: str | None,
) -> str:
    clauses: list[tuple[float, str]] = []
    mentioned: set[frozenset[int]] = set()
    for o in sorted(
        objects, key=lambda ob: min([e.time for e in events if e.object_id == ob.id], default=math.inf)
    ):
        mine = [e for e in events if e.object_id == o.id]
        srcs = {c.kind: c for c in continuous if c.object_id == o.id}
        subject = f"{'an' if o.colour[0] in 'aeiou' else 'a'} {o.name}"
        if o.motion == "hover":
            if "hum" in srcs:
                verb = "hovers and hums" if srcs["hum"].start == 0.0 else "flies across, humming"
                clauses.append((srcs["hum"].start, f"{subject} {verb}"))
            continue
        n_floor = sum(e.kind == "floor" for e in mine)
        n_wall = sum(e.kind == "wall" for e in mine)
        partners = [e.other_id for e in mine if e.kind == "object"]
        parts: list[str] = []
        if o.motion == "roll":
            parts.append("rolls along the floor")
        elif n_floor:
            lead = "is thrown and " if o.motion == "throw" else ""
            if n_floor == 1:
                parts.append(lead + ("lands" if o.motion == "throw" else "falls and hits the ground"))
            else:
                parts.append(f"{lead}bounces {_count_phrase(n_floor)}")
            if "roll" in srcs:
                parts.append("rolls")
        if n_wall:
            parts.append("hits the wall" if n_wall == 1 else "hits the walls")
        fresh = [p for p in partners if frozenset((o.id, p)) not in mentioned]
        if fresh:  # name each colliding pair once, in the clause of the object listed first
            mentioned.add(frozenset((o.id, fresh[0])))
            parts.append(f"hits the {objects[fresh[0]].name}")
        if parts:
            start = min([e.time for e in mine] + [c.start for c in srcs.values()])
            body = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
            clauses.append((start, f"{subject} {body}"))
    clauses.sort(key=lambda c: c[0])
    if offscreen:
        clauses.append((offscreen[0].time, OFFSCREEN_SOUNDS[offscreen[0].material]))
    text = ", ".join(c[1] for c in clauses) if clauses else "a quiet room"
    if background is not None:
        text += ", " + BACKGROUNDS[background] if clauses else " " + BACKGROUNDS[background]
    return text


# --------------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------------


def _render_video(objects: list[ObjectSpec], sim: _Simulation, cfg: SceneConfig, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    W, H, floor = cfg.width, cfg.height, int(cfg.floor_y)
    # a desaturated wall with a vertical gradient and a grey floor band: objects are the only
    # saturated pixels of a frame
    wall = rng.uniform(40, 110) + rng.uniform(-12, 12, size=3)
    shade = np.linspace(1.1, 0.85, H)[:, None, None]
    bg = np.broadcast_to(wall[None, None, :] * shade, (H, W, 3)).copy()
    bg[floor:] = rng.uniform(120, 170)
    bg[floor : floor + 1] *= 0.6
    bg = np.clip(bg, 0, 255).astype(np.float32)
    frames = np.empty((len(sim.positions), H, W, 3), dtype=np.uint8)
    for f, pos in enumerate(sim.positions):
        img = bg.copy()
        for o, (x, y) in zip(objects, pos, strict=True):
            _draw_shape(img, o.shape, x, y, o.radius, np.asarray(COLOURS[o.colour][0], dtype=np.float32))
        frames[f] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return frames


def _draw_shape(img: np.ndarray, shape: str, cx: float, cy: float, r: float, rgb: np.ndarray) -> None:
    """Alpha-blend an anti-aliased shape centred at (cx, cy) with half extent r into ``img``."""
    H, W = img.shape[:2]
    x0, x1 = max(0, int(math.floor(cx - r - 1))), min(W, int(math.ceil(cx + r + 2)))
    y0, y1 = max(0, int(math.floor(cy - r - 1))), min(H, int(math.ceil(cy + r + 2)))
    if x0 >= x1 or y0 >= y1:
        return
    dy, dx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx += 0.5 - cx  # pixel centres relative to the shape centre
    dy += 0.5 - cy
    if shape == "ball":
        dist = np.sqrt(dx * dx + dy * dy) - r
    elif shape == "square":
        dist = np.maximum(np.abs(dx), np.abs(dy)) - r
    elif shape == "diamond":
        dist = (np.abs(dx) + np.abs(dy) - r) / math.sqrt(2.0)
    elif shape == "triangle":  # apex up, base on the bottom edge of the box
        side = (2.0 * np.abs(dx) + dy - r) / math.sqrt(5.0)  # edges through (0, -r) and (+-r, r)
        dist = np.maximum(side, dy - r)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
    region = img[y0:y1, x0:x1]
    img[y0:y1, x0:x1] = region + alpha * (rgb - region)


def write_scene_mp4(scene: Scene, path: str | Path, *, crf: int = 18) -> Path:
    """Write the scene as a browser-playable mp4: H.264 yuv420p video and AAC mono audio."""
    import av

    if scene.frames is None:
        raise ValueError("this scene is a text-only sample (no frames); there is no video to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = scene.frames
    T, H, W, _ = frames.shape
    pad_h, pad_w = H % 2, W % 2  # yuv420p needs even sizes: repeat the last row/column
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    rate = Fraction(scene.fps).limit_denominator(1001)
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        vstream = container.add_stream("libx264", rate=rate)
        vstream.width, vstream.height = W + pad_w, H + pad_h
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"crf": str(crf), "preset": "medium"}
        astream = container.add_stream("aac", rate=scene.sample_rate, layout="mono")
        chunk = astream.codec_context.frame_size or 1024
        audio = scene.audio.astype(np.float32)
        samples_per_frame = scene.sample_rate / float(rate)
        a_pos = 0
        for i in range(T):  # interleave: audio up to the end of each video frame
            vframe = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            vframe.pts = i
            container.mux(vstream.encode(vframe))
            a_end = min(audio.size, round((i + 1) * samples_per_frame))
            while a_pos + chunk <= a_end or (i == T - 1 and a_pos < audio.size):
                block = audio[a_pos : a_pos + chunk]
                aframe = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
                aframe.sample_rate = scene.sample_rate
                aframe.pts = a_pos
                container.mux(astream.encode(aframe))
                a_pos += block.size
        container.mux(vstream.encode(None))
        container.mux(astream.encode(None))
    logger.debug("wrote %s (%d frames, %.2f s)", path, T, scene.duration)
    return path


# --------------------------------------------------------------------------------------------------
# Analysis helper
# --------------------------------------------------------------------------------------------------


def detect_onsets(
    audio: np.ndarray,
    sample_rate: int,
    *,
    n_fft: int = 128,
    hop: int = 16,
    history_ms: float = 20.0,
    threshold_db: float = 2.0,
    min_gap_ms: float = 25.0,
    floor: float = 1e-5,
    dynamic_range_db: float = 80.0,
) -> np.ndarray:
    """Onset times (seconds) of a mono waveform, by spectral flux against recent maxima.

    Frame ``k`` holds samples ``[k * hop, k * hop + n_fft)`` and stands for the time its last ``hop``
    samples start, ``(k * hop + n_fft - hop) / sample_rate``, so new sound shows at once (1 ms
    resolution at 16 kHz). In every frequency bin its log power is compared with the loudest frame
    of the preceding ``history_ms``; an onset is a frame whose mean rise (each bin clipped to
    [0, 20] dB) exceeds ``threshold_db``. Decaying or sustained sounds never rise above their own
    past, so only new sounds trigger it, even while another object still rings. Sound present from
    the start of the clip is not an onset. Levels are floored at ``floor`` (power) and at
    ``dynamic_range_db`` below the loudest bin of the clip, so faint noise does not count.
    """
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size < n_fft:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    window = np.hanning(n_fft + 2)[1:-1]
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    floor = max(floor, float(power.max()) * 10.0 ** (-dynamic_range_db / 10.0))
    level = 10.0 * np.log10(power + floor)
    hist = max(1, round(history_ms / 1000.0 * sample_rate / hop))
    past = np.concatenate([np.repeat(level[:1], hist, axis=0), level])[:-1]  # no onset at t = 0
    past_max = np.lib.stride_tricks.sliding_window_view(past, hist, axis=0).max(axis=-1)
    rise = np.clip(level - past_max, 0.0, 20.0).mean(axis=1)
    onsets: list[float] = []
    gap = min_gap_ms / 1000.0
    for k in np.nonzero(rise > threshold_db)[0]:
        t = (k * hop + n_fft - hop) / sample_rate
        if not onsets or t - onsets[-1] >= gap:
            onsets.append(t)
    return np.asarray(onsets)
