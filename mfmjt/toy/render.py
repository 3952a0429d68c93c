"""Video of a scene: anti-aliased shapes over a plain wall and floor, and the scene's mp4 file."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from mfmjt.toy.physics import Simulation
from mfmjt.toy.specs import ObjectSpec, Scene, SceneConfig
from mfmjt.toy.vocabulary import COLOURS

logger = logging.getLogger(__name__)


def render_video(objects: list[ObjectSpec], sim: Simulation, cfg: SceneConfig, seed: int) -> np.ndarray:
    """uint8 frames ``[T, H, W, 3]`` of the simulated positions; ``seed`` draws the wall and floor."""
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
    """Write the scene as an mp4 (H.264 yuv420p, AAC mono) with :func:`mfmjt.media.write_video`."""
    from mfmjt import media

    if scene.frames is None:
        raise ValueError("this scene is a text-only sample (no frames); there is no video to write")
    path = media.write_video(path, scene.frames, scene.fps, scene.audio, scene.sample_rate, crf=crf)
    logger.debug("wrote %s (%d frames, %.2f s)", path, len(scene.frames), scene.duration)
    return path
