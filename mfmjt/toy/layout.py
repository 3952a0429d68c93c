"""Random draws of a scene's content: its objects, how each starts moving, and off-screen sounds."""

from __future__ import annotations

import math

import numpy as np

from mfmjt.toy.specs import ObjectSpec, ObjectStart, SceneConfig, SoundEvent
from mfmjt.toy.vocabulary import COLOURS, OFFSCREEN_SOUNDS, SHAPE_MATERIAL, SHAPES


def draw_objects(
    rng: np.random.Generator, cfg: SceneConfig, duration: float
) -> tuple[list[ObjectSpec], list[ObjectStart]]:
    """The objects of a scene and their starts; an object that finds no free spot is dropped."""
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    colours = rng.choice(list(COLOURS), size=n, replace=False)
    objects: list[ObjectSpec] = []
    inits: list[ObjectStart] = []
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
            init = _draw_start(rng, motion, r, W, H, floor, duration)
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


def _draw_start(
    rng: np.random.Generator, motion: str, r: float, W: float, H: float, floor: float, duration: float
) -> ObjectStart:
    if motion == "fall":
        x = float(rng.uniform(r + 1, W - r - 1))
        if rng.random() < 0.5:  # dropped later from above the frame, to spread events over the clip
            return ObjectStart(
                x=x,
                y=float(rng.uniform(-1.5 * H, -r - 1)),
                vx=float(rng.normal(0.0, 25.0)),
                vy=0.0,
                resting=False,
                release=float(rng.uniform(0.0, 0.7 * duration)),
            )
        return ObjectStart(
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
        return ObjectStart(
            x=x,
            y=float(rng.uniform(0.4 * H, floor - r - 1)),
            vx=vx,
            vy=-float(rng.uniform(150.0, 450.0)),
            resting=False,
        )
    if motion == "roll":
        vx = float(rng.uniform(60.0, 200.0)) * (1 if rng.random() < 0.5 else -1)
        return ObjectStart(x=float(rng.uniform(r + 1, W - r - 1)), y=floor - r, vx=vx, vy=0.0, resting=True)
    # hover: enter from a side or start inside, drift horizontally, bob up and down
    left = rng.random() < 0.5
    if rng.random() < 0.5:
        x = -r - float(rng.uniform(0.0, 30.0)) if left else W + r + float(rng.uniform(0.0, 30.0))
        speed = float(rng.uniform(W + 2 * r + 30.0, 2.0 * (W + 2 * r + 30.0))) / max(duration, 1.0)
    else:
        x = float(rng.uniform(r + 1, W - r - 1))
        speed = float(rng.uniform(5.0, 30.0))
    return ObjectStart(
        x=x,
        y=float(rng.uniform(0.15 * H, 0.5 * H)),
        vx=speed if left else -speed,
        vy=0.0,
        resting=False,
        hover_amp=float(rng.uniform(3.0, 10.0)),
        hover_freq=float(rng.uniform(0.5, 2.0)),
        hover_phase=float(rng.uniform(0.0, 2 * math.pi)),
    )


def draw_offscreen(rng: np.random.Generator, cfg: SceneConfig, duration: float) -> list[SoundEvent]:
    """An off-screen sound (a knock is two) at a random time of the clip."""
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
