"""Procedurally generated audio-visual scenes with ground-truth sound events.

A scene is a short clip (128x128 at 24 fps by default) of coloured objects that fall under gravity,
bounce off the floor and walls, collide, roll or hover, with a 16 kHz mono soundtrack made from
those events and a caption that names them ("a red ball bounces twice, a blue square falls and hits
the ground"). Everything is a deterministic function of ``(seed, SceneConfig)``.

Sound design, chosen so that a model can learn it from video and text:

- pitch is tied to the object's colour (:data:`~mfmjt.toy.vocabulary.COLOURS`), timbre to its shape
  through a material (:data:`~mfmjt.toy.vocabulary.SHAPE_MATERIAL`: ball = rubber, square = wood,
  triangle = metal, diamond = glass);
- loudness is proportional to the normal speed at impact;
- contact times are solved analytically inside the physics step, so an impact sound starts on the
  exact audio sample of the contact (not on a video frame boundary);
- hovering objects hum while visible, balls rumble while they roll along the floor;
- some scenes add background noise (wind, rain, hiss) or off-screen sounds (beep, knock, clap);
- text-only samples (``frames is None``) carry a caption and audio but no video, for text-to-audio.

Coordinates are pixels, x to the right and y downwards; the floor is a band at the bottom of the
frame and the frame edges are walls. The parts: :mod:`~mfmjt.toy.layout` (random content),
:mod:`~mfmjt.toy.physics`, :mod:`~mfmjt.toy.sound`, :mod:`~mfmjt.toy.captions`,
:mod:`~mfmjt.toy.render`.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from mfmjt.toy.captions import caption
from mfmjt.toy.layout import draw_objects, draw_offscreen
from mfmjt.toy.physics import simulate
from mfmjt.toy.render import render_video
from mfmjt.toy.sound import render_audio
from mfmjt.toy.specs import Scene, SceneConfig, SoundEvent
from mfmjt.toy.vocabulary import BACKGROUNDS

logger = logging.getLogger(__name__)


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

    objects, init = draw_objects(rng, config, duration)
    sim = simulate(objects, init, config, n_frames)

    extra_rng = np.random.default_rng(extra_seq)
    background = None
    if extra_rng.random() < config.background_prob:
        background = str(extra_rng.choice(list(BACKGROUNDS)))
    offscreen_events: list[SoundEvent] = []
    if extra_rng.random() < config.offscreen_prob:
        offscreen_events = draw_offscreen(extra_rng, config, duration)

    events = sorted(sim.events + offscreen_events, key=lambda e: (e.time, e.object_id))
    audio = render_audio(
        objects, sim, events, background, config, n_samples, np.random.default_rng(audio_seq)
    )
    text = caption(objects, sim.events, sim.continuous, offscreen_events, background)
    frames = None if text_only else render_video(objects, sim, config, int(extra_rng.integers(1 << 31)))
    logger.debug("scene %d: %.2f s, %d events, caption %r", seed, duration, len(events), text)
    return Scene(
        seed=int(seed),
        frames=frames,
        fps=config.fps,
        audio=audio,
        sample_rate=config.sample_rate,
        caption=text,
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
