"""Rigid-body physics of a scene: gravity, bounces, wall hits, collisions, rolling and hovering.

Events are solved exactly inside fixed sub-steps: in each sub-step the earliest contact (floor, wall
or object pair) is found in closed form, the objects advance to it, the contact is resolved and its
sound event recorded with its exact time; then the search repeats for the rest of the sub-step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mfmjt.toy.specs import ContinuousSound, ObjectSpec, ObjectStart, SceneConfig, SoundEvent
from mfmjt.toy.vocabulary import MATERIALS

WALL_RESTITUTION = 0.7
REST_SPEED = 50.0  # a floor bounce slower than this leaves the object resting
REF_SPEED = 600.0  # impact speed of strength 1
ROLL_DECEL = 25.0  # rolling resistance of balls (px/s^2)
SLIDE_DECEL = 400.0  # sliding friction of other shapes
MAX_EVENTS_PER_STEP = 16


@dataclass
class Simulation:
    """What the physics produced: frame-time positions, sound events and sustained sources."""

    positions: np.ndarray  # [T, n, 2] at frame times
    events: list[SoundEvent]
    continuous: list[ContinuousSound]
    step_times: np.ndarray  # [steps + 1]
    roll_speed: np.ndarray  # [steps + 1, n], |vx| of resting balls, else 0
    inits: list[ObjectStart]


def hover_position(init: ObjectStart, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) of a hovering object at times ``t``: linear drift plus a sinusoidal bob."""
    t = np.asarray(t, dtype=np.float64)
    x = init.x + init.vx * t
    y = init.y + init.hover_amp * np.sin(2 * math.pi * init.hover_freq * t + init.hover_phase)
    return x, y


class Physics:
    """The state of one scene's objects, stepped by :meth:`run` over ``n_frames`` video frames."""

    def __init__(
        self, objects: list[ObjectSpec], inits: list[ObjectStart], cfg: SceneConfig, n_frames: int
    ) -> None:
        n = len(objects)
        self.objects, self.inits, self.cfg, self.n_frames = objects, inits, cfg, n_frames
        self.g, self.W, self.floor = cfg.gravity, float(cfg.width), cfg.floor_y
        self.physical = [i for i, o in enumerate(objects) if o.motion != "hover"]
        self.release = [inits[i].release for i in range(n)]
        self.active: list[int] = []  # physical objects already released
        self.pos = np.array([[i.x, i.y] for i in inits], dtype=np.float64).reshape(n, 2)
        self.vel = np.array([[i.vx, i.vy] for i in inits], dtype=np.float64).reshape(n, 2)
        self.resting = np.array([i.resting for i in inits], dtype=bool)
        self.radius = np.array([o.radius for o in objects], dtype=np.float64)
        self.mass = self.radius**2
        self.restitution = np.array([MATERIALS[o.material].restitution for o in objects])
        self.events: list[SoundEvent] = []

    def emit(self, t: float, i: int, kind: str, speed: float, other: int = -1) -> None:
        """Record the sound event of object ``i`` at time ``t`` (if loud enough)."""
        cfg = self.cfg
        strength = min(1.0, speed / REF_SPEED)
        if strength < cfg.min_strength:
            return
        o = self.objects[i]
        self.events.append(
            SoundEvent(
                time=t,
                sample=math.ceil(t * cfg.sample_rate - 1e-9),
                frame=min(self.n_frames - 1, round(t * cfg.fps)),
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

    def advance(self, dt: float) -> None:
        """Move the released objects ballistically by ``dt`` seconds (resting ones slide along)."""
        pos, vel, g = self.pos, self.vel, self.g
        for i in self.active:
            pos[i, 0] += vel[i, 0] * dt
            if not self.resting[i]:
                pos[i, 1] += vel[i, 1] * dt + 0.5 * g * dt * dt
                vel[i, 1] += g * dt

    def earliest(self, limit: float) -> tuple[float, str, int, int]:
        """The first contact within ``limit`` seconds: (time, "floor" | "wall" | "pair" | "", i, j)."""
        pos, vel, radius, g, floor, W = self.pos, self.vel, self.radius, self.g, self.floor, self.W
        phys = self.active
        best = (limit, "", -1, -1)
        for i in phys:
            r = radius[i]
            if not self.resting[i]:  # floor: y + vy t + g t^2 / 2 = floor - r
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

    def resolve(self, t_abs: float, kind: str, i: int, j: int) -> None:
        """Apply the contact found by :meth:`earliest` at absolute time ``t_abs`` and emit its sound."""
        pos, vel, radius, resting, floor, W = (
            self.pos,
            self.vel,
            self.radius,
            self.resting,
            self.floor,
            self.W,
        )
        if kind == "floor":
            speed = max(vel[i, 1], 0.0)
            pos[i, 1] = floor - radius[i]
            bounce = self.restitution[i] * speed
            self.emit(t_abs, i, "floor", speed)
            if bounce < REST_SPEED:
                vel[i, 1] = 0.0
                resting[i] = True
            else:
                vel[i, 1] = -bounce
        elif kind == "wall":
            speed = abs(vel[i, 0])
            pos[i, 0] = np.clip(pos[i, 0], radius[i], W - radius[i])
            vel[i, 0] = -WALL_RESTITUTION * vel[i, 0]
            self.emit(t_abs, i, "wall", speed)
        else:
            mass, restitution = self.mass, self.restitution
            p = pos[j] - pos[i]
            dist = max(float(np.hypot(*p)), 1e-9)
            nrm = p / dist
            vn = float((vel[j] - vel[i]) @ nrm)  # < 0 when approaching
            speed = -vn
            e = 0.5 * (restitution[i] + restitution[j]) if speed >= REST_SPEED else 0.0
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
                    if vel[k, 1] < -REST_SPEED:
                        resting[k] = False
                    else:
                        vel[k, 1] = 0.0
                pos[k, 1] = min(pos[k, 1], floor - radius[k])
            self.emit(t_abs, i, "object", speed, other=j)
            self.emit(t_abs, j, "object", speed, other=i)

    def run(self) -> Simulation:
        """Step the whole clip; hovering objects move analytically and sustained sources are listed."""
        objects, inits, cfg, n_frames = self.objects, self.inits, self.cfg, self.n_frames
        n = len(objects)
        h = 1.0 / (cfg.fps * cfg.substeps)
        n_steps = n_frames * cfg.substeps
        positions = np.zeros((n_frames, n, 2))
        step_times = np.arange(n_steps + 1) * h
        roll_speed = np.zeros((n_steps + 1, n))
        pos, vel, resting = self.pos, self.vel, self.resting
        for step in range(n_steps):
            if step % cfg.substeps == 0:
                positions[step // cfg.substeps] = pos
            t0 = step * h
            self.active[:] = [i for i in self.physical if self.release[i] <= t0]
            remaining = h
            for _ in range(MAX_EVENTS_PER_STEP):
                tau, kind, i, j = self.earliest(remaining)
                if not kind:
                    break
                self.advance(tau)
                remaining -= tau
                self.resolve(t0 + h - remaining, kind, i, j)
            self.advance(remaining)
            for i in self.active:  # floor friction, applied once per sub-step
                if resting[i] and vel[i, 0] != 0.0:
                    decel = (ROLL_DECEL if objects[i].shape == "ball" else SLIDE_DECEL) * h
                    vel[i, 0] = (
                        0.0 if abs(vel[i, 0]) <= decel else vel[i, 0] - math.copysign(decel, vel[i, 0])
                    )
                if resting[i] and objects[i].shape == "ball":
                    roll_speed[step + 1, i] = abs(vel[i, 0])

        for k, o in enumerate(objects):  # hover objects move analytically
            if o.motion == "hover":
                xs, ys = hover_position(inits[k], np.arange(n_frames) / cfg.fps)
                positions[:, k, 0], positions[:, k, 1] = xs, ys

        duration = n_frames / cfg.fps
        continuous: list[ContinuousSound] = []
        for k, o in enumerate(objects):
            if o.motion == "hover":
                span = hover_visible_span(inits[k], o.radius, self.W, duration)
                if span is not None:
                    continuous.append(
                        ContinuousSound(k, "hum", span[0], span[1], o.colour, o.shape, o.pitch_hz)
                    )
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
        return Simulation(positions, self.events, continuous, step_times, roll_speed, inits)


def simulate(
    objects: list[ObjectSpec], inits: list[ObjectStart], cfg: SceneConfig, n_frames: int
) -> Simulation:
    """Run the physics of a scene's objects for ``n_frames`` video frames."""
    return Physics(objects, inits, cfg, n_frames).run()


def hover_visible_span(init: ObjectStart, r: float, W: float, duration: float) -> tuple[float, float] | None:
    """Time interval during which a hover object overlaps the frame horizontally."""
    if init.vx == 0.0:
        return (0.0, duration) if -r < init.x < W + r else None
    t_a, t_b = sorted(((-r - init.x) / init.vx, (W + r - init.x) / init.vx))
    start, end = max(t_a, 0.0), min(t_b, duration)
    return (start, end) if end > start else None
