"""Procedural scenes: determinism, shapes, physics-exact event times, sound design, mp4 output."""

from __future__ import annotations

import colorsys
import math

import av
import numpy as np
import pytest

from mfmjt.onsets import detect_onsets
from mfmjt.toy.captions import caption_vocabulary
from mfmjt.toy.render import write_scene_mp4
from mfmjt.toy.scene import make_scene, make_text_sample
from mfmjt.toy.specs import SceneConfig
from mfmjt.toy.vocabulary import COLOURS, MATERIALS

# Scenes with impacts only (no hum, rolling, background or off-screen sounds): every onset in the
# audio must come from a listed event.
IMPACTS_ONLY = SceneConfig(
    duration=4.0, hover_prob=0.0, roll_prob=0.0, background_prob=0.0, offscreen_prob=0.0
)
SINGLE_OBJECT = SceneConfig(
    duration=4.0, max_objects=1, hover_prob=0.0, roll_prob=0.0, background_prob=0.0, offscreen_prob=0.0
)
SYNC_TOLERANCE_S = 0.010  # the sync precision the default model should learn
ISOLATION_S = 0.030  # events closer than this merge into one onset


def _isolated(events: list, min_strength: float) -> list:
    times = np.array([e.time for e in events])
    out = []
    for e in events:
        others = times[np.abs(times - e.time) > 1e-9]
        if e.strength >= min_strength and (others.size == 0 or np.abs(others - e.time).min() >= ISOLATION_S):
            out.append(e)
    return out


def test_same_seed_gives_identical_scene() -> None:
    cfg = SceneConfig(duration=2.0)
    a, b = make_scene(11, cfg), make_scene(11, cfg)
    assert np.array_equal(a.frames, b.frames)
    assert np.array_equal(a.audio, b.audio)
    assert a.caption == b.caption and a.events == b.events and a.objects == b.objects


def test_different_seeds_give_different_scenes() -> None:
    cfg = SceneConfig(duration=2.0)
    a, b = make_scene(1, cfg), make_scene(2, cfg)
    assert not np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.audio, b.audio)


@pytest.mark.parametrize("duration", [1.0, 2.5, 4.0, 8.0])
def test_scene_arrays_follow_the_config(duration: float) -> None:
    cfg = SceneConfig(duration=duration)
    scene = make_scene(3, cfg)
    n_frames = round(duration * cfg.fps)
    assert scene.frames.shape == (n_frames, cfg.height, cfg.width, 3) and scene.frames.dtype == np.uint8
    assert scene.audio.shape == (round(duration * cfg.sample_rate),) and scene.audio.dtype == np.float32
    assert scene.duration == pytest.approx(duration)
    assert scene.positions.shape == (n_frames, len(scene.objects), 2)
    assert np.abs(scene.audio).max() <= 1.0


def test_random_duration_lies_in_the_configured_range() -> None:
    cfg = SceneConfig(min_duration=2.0, max_duration=3.0)
    for seed in range(5):
        assert 2.0 - 1 / cfg.fps <= make_scene(seed, cfg).duration <= 3.0 + 1 / cfg.fps


def test_floor_contacts_are_exact_not_frame_quantised() -> None:
    # Between frames an airborne object follows y(t) = y_k + v t + g t^2 / 2. Fitting v to the two
    # frames before a floor event predicts the contact time. Measured error 1e-7 s (positions are
    # float32); quantising contacts to frames would be off by up to 42 ms.
    cfg = SINGLE_OBJECT
    checked = 0
    for seed in range(12):
        scene = make_scene(seed, cfg)
        obj = scene.objects[0]
        floor_events = [e for e in scene.events if e.kind == "floor"]
        for prev, ev in zip([None, *floor_events], floor_events, strict=False):
            k = math.floor(ev.time * cfg.fps)
            start = 0.0 if prev is None else prev.time
            if k < 1 or (k - 1) / cfg.fps <= start:  # need two airborne frames on this arc
                continue
            if any(e.kind == "object" and (k - 1) / cfg.fps <= e.time <= ev.time for e in scene.events):
                continue
            y0, y1 = scene.positions[k - 1 : k + 1, 0, 1].astype(np.float64)
            if y0 == y1:  # still hanging before its release
                continue
            h = 1.0 / cfg.fps
            v = (y1 - y0) / h + 0.5 * cfg.gravity * h  # velocity at frame k
            d = cfg.floor_y - obj.radius - y1
            tau = (-v + math.sqrt(v * v + 2 * cfg.gravity * d)) / cfg.gravity
            assert k / cfg.fps + tau == pytest.approx(ev.time, abs=1e-5)
            checked += 1
    assert checked >= 5


def test_impact_sound_starts_on_the_contact_sample() -> None:
    for seed in range(6):
        scene = make_scene(seed, SINGLE_OBJECT)
        if not scene.events:
            continue
        first = scene.events[0]
        assert first.sample == math.ceil(first.time * scene.sample_rate - 1e-9)
        assert np.all(scene.audio[: first.sample] == 0.0), "nothing may sound before the first contact"
        assert np.abs(scene.audio[first.sample : first.sample + 4]).max() > 0.0


def test_onsets_in_the_audio_land_on_event_times() -> None:
    # Recall on clear events and precision on all detected onsets, both within +-10 ms.
    hits = total = on_event = detected = 0
    for seed in range(8):
        scene = make_scene(seed, IMPACTS_ONLY)
        onsets = detect_onsets(scene.audio, scene.sample_rate)
        times = np.array([e.time for e in scene.events])
        for ev in _isolated(scene.events, 0.2):
            total += 1
            hits += bool(onsets.size) and np.abs(onsets - ev.time).min() <= SYNC_TOLERANCE_S
        detected += onsets.size
        on_event += sum(np.abs(times - t).min() <= SYNC_TOLERANCE_S for t in onsets)
    assert total >= 20
    assert hits / total >= 0.95  # measured 259/260 over 40 seeds
    assert on_event == detected  # no onset without an event


def test_loudness_grows_with_impact_speed() -> None:
    peaks, strengths = [], []
    for seed in range(10):
        scene = make_scene(seed, SINGLE_OBJECT)
        for ev in _isolated(scene.events, 0.05):
            window = scene.audio[ev.sample : ev.sample + int(0.02 * scene.sample_rate)]
            peaks.append(np.sqrt(np.mean(window**2)))
            strengths.append(ev.strength)
    ranks = np.corrcoef(np.argsort(np.argsort(peaks)), np.argsort(np.argsort(strengths)))[0, 1]
    assert ranks > 0.7  # Spearman; materials differ in level, so not exactly 1


def test_pitch_is_set_by_colour() -> None:
    checked = 0
    for seed in range(12):
        scene = make_scene(seed, SINGLE_OBJECT)
        for ev in _isolated(scene.events, 0.3)[:2]:
            seg = scene.audio[ev.sample + 160 : ev.sample + 160 + 2048]  # after the noise burst
            if seg.size < 2048:
                continue
            spectrum = np.abs(np.fft.rfft(seg * np.hanning(seg.size), 16384))
            freqs = np.fft.rfftfreq(16384, 1 / scene.sample_rate)
            expected = COLOURS[ev.colour][1] * MATERIALS[ev.material].partials[0]
            assert freqs[spectrum.argmax()] == pytest.approx(expected, rel=0.03)
            checked += 1
    assert checked >= 5


def test_colours_are_distinct_hues_and_pitches() -> None:
    hues = [colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360 for rgb, _ in COLOURS.values()]
    assert len({round(h / 30) % 12 for h in hues}) == len(COLOURS)
    pitches = sorted(p for _, p in COLOURS.values())
    assert min(b / a for a, b in zip(pitches, pitches[1:], strict=False)) > 1.2


@pytest.mark.slow
def test_caption_names_every_sounding_object_with_known_words() -> None:
    vocabulary = set(caption_vocabulary())
    for seed in range(30):
        scene = make_text_sample(seed, SceneConfig(duration=3.0))
        words = scene.caption.replace(",", " ").split()
        assert set(words) <= vocabulary, scene.caption
        for obj in scene.objects:
            sounding = any(e.object_id == obj.id for e in scene.events) or any(
                c.object_id == obj.id for c in scene.continuous
            )
            if sounding:
                assert f"{obj.colour} {obj.shape}" in scene.caption, scene.caption


def test_text_only_sample_has_audio_and_caption_but_no_frames() -> None:
    scene = make_text_sample(5, SceneConfig(duration=2.0))
    video = make_scene(5, SceneConfig(duration=2.0))
    assert scene.frames is None and not scene.has_video
    assert np.array_equal(scene.audio, video.audio) and scene.caption == video.caption
    with pytest.raises(ValueError, match="text-only"):
        write_scene_mp4(scene, "unused.mp4")


@pytest.mark.slow
def test_some_scenes_have_background_offscreen_and_continuous_sounds() -> None:
    scenes = [make_text_sample(s, SceneConfig(duration=2.0)) for s in range(40)]
    assert any(s.background for s in scenes)
    assert any(e.kind == "offscreen" for s in scenes for e in s.events)
    assert {c.kind for s in scenes for c in s.continuous} == {"hum", "roll"}


def test_mp4_has_one_h264_video_and_one_aac_audio_stream(tmp_path) -> None:
    scene = make_scene(3, SceneConfig(duration=2.0))
    path = write_scene_mp4(scene, tmp_path / "clip.mp4")
    with av.open(str(path)) as container:
        video, audio = container.streams.video, container.streams.audio
        assert len(video) == 1 and len(audio) == 1
        assert video[0].codec_context.name == "h264" and video[0].codec_context.pix_fmt == "yuv420p"
        assert (video[0].codec_context.width, video[0].codec_context.height) == (128, 128)
        assert audio[0].codec_context.name == "aac" and audio[0].codec_context.sample_rate == 16_000
        assert sum(1 for _ in container.decode(video=0)) == len(scene.frames)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        SceneConfig(min_duration=3.0, max_duration=2.0)
    with pytest.raises(ValueError):
        SceneConfig(hover_prob=0.6, throw_prob=0.6)
    with pytest.raises(ValueError):
        make_scene(-1)
