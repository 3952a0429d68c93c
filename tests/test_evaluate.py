"""Evaluation metrics: onset matching and scoring, pitch class, Fréchet distance, the scene cache,
the real-audio sanity check and ``mfmjt evaluate`` end to end on a model trained in the test."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from mfmjt.cli import build_parser, main
from mfmjt.feature_store import FeatureStore
from mfmjt.pipeline import load_pipeline
from mfmjt.toy.codec import OfflineAudioCodec
from mfmjt.toy.evaluate import HELD_OUT_SEED, evaluate_references, held_out_scenes, score_clips
from mfmjt.toy.extract import ExtractConfig, extract_synthetic, fit_offline_stack, offline_stack_with_codec
from mfmjt.toy.metrics import (
    colour_from_frequency,
    dominant_frequency,
    frechet_distance,
    match_onsets,
    reference_onsets,
    score_onsets,
)
from mfmjt.toy.scene import make_scene
from mfmjt.toy.specs import SceneConfig, SoundEvent
from mfmjt.toy.vocabulary import COLOURS, MATERIALS
from mfmjt.train import TrainConfig, train

SR = 16_000


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the test machine's two cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def event(time: float, object_id: int = 0, strength: float = 0.5) -> SoundEvent:
    colour = "red" if object_id < 0 else list(COLOURS)[object_id]
    return SoundEvent(
        time=time,
        sample=math.ceil(time * SR),
        frame=round(time * 24),
        object_id=object_id,
        kind="offscreen" if object_id < 0 else "floor",
        colour=None if object_id < 0 else colour,
        shape=None if object_id < 0 else "ball",
        material="beep" if object_id < 0 else "rubber",
        pitch_hz=COLOURS[colour][1],
        strength=strength,
    )


# ---------------------------------------------------------------------------- temporal sync
# Times are multiples of 1/128 s, so every difference below is exact in binary floating point.


def test_matching_is_one_to_one_and_takes_the_closest_pairs_first():
    reference = [1.0, 2.0, 2.03125]
    detected = [1.015625, 2.0234375, 3.0]
    # 2.0234375 is 23 ms from 2.0 but 8 ms from 2.03125: the closer pair wins, 2.0 stays unmatched
    assert match_onsets(reference, detected, 0.05) == [(0, 0), (2, 1)]


def test_matching_tolerance_is_inclusive_and_nothing_farther_matches():
    assert match_onsets([1.0], [1.046875], 0.046875) == [(0, 0)]
    assert match_onsets([1.0], [1.0625], 0.05) == []
    assert match_onsets([], [1.0], 0.05) == [] and match_onsets([1.0], [], 0.05) == []


def test_reference_merges_simultaneous_impacts_and_marks_quiet_and_offscreen_as_dont_care():
    events = [
        event(0.5, 0),
        event(0.515625, 1),  # the partner of a collision: merged into the 0.5 s onset
        event(1.0, 0, strength=0.1),  # too quiet to count
        event(2.0, 1, strength=0.8),
        event(3.0, -1),  # off-screen
        event(3.5, 0, strength=0.3),
        event(4.0078125, 0),  # after the clip
    ]
    ref = reference_onsets(events, 4.0, continuous_starts=[0.0, 1.5])
    assert ref.times == (0.5, 2.0, 3.5)
    assert [len(group) for group in ref.sources] == [2, 1, 1]
    assert ref.offscreen == (3.0,)
    assert sorted(ref.ignore) == [1.0, 1.5, 3.0, 4.0078125]  # a hum starting at 0 is no onset


def test_onset_scores_have_the_exact_counts_rates_and_offsets():
    events = [event(0.5, 0), event(1.0, 0, strength=0.1), event(2.0, 1), event(3.0, -1), event(3.5, 0)]
    ref = reference_onsets(events, 4.0)
    detected = [0.5078125, 1.015625, 2.03125, 2.5, 3.0]
    score = score_onsets(ref, detected, 0.05)
    # 0.5078125 and 2.03125 hit, 1.015625 is near a quiet impact (ignored), 3.0 is the off-screen
    # sound, 2.5 is a false alarm and the impact at 3.5 s is missed
    assert (score.tp, score.fp, score.fn) == (2, 1, 1)
    assert score.precision == pytest.approx(2 / 3) and score.recall == pytest.approx(2 / 3)
    assert score.f1 == pytest.approx(2 / 3)
    assert score.offsets == (0.0078125, 0.03125)
    assert score.offset_ms == pytest.approx(19.53125) and score.bias_ms == pytest.approx(19.53125)
    assert (score.offscreen_hits, score.offscreen_total) == (1, 1)


def test_onset_scores_are_undefined_without_references_or_detections():
    score = score_onsets(reference_onsets([], 4.0), [])
    assert score.f1 is None and score.precision is None and score.offset_ms is None


# ------------------------------------------------------------------------------ pitch class


def impact(colour: str, material: str, onset: float, length_s: float = 2.0) -> np.ndarray:
    """A clean modal impact (the material's partials on the colour's pitch) starting at ``onset``."""
    m = MATERIALS[material]
    t = np.arange(int(length_s * SR)) / SR - onset
    wave = np.zeros_like(t)
    for ratio, amp, decay in zip(m.partials, m.amplitudes, m.decays, strict=True):
        f = COLOURS[colour][1] * ratio
        if f < 0.45 * SR:
            wave += amp * np.exp(-np.maximum(t, 0) / decay) * np.sin(2 * np.pi * f * t)
    return np.where(t >= 0, wave, 0.0)


@pytest.mark.parametrize("material", sorted(MATERIALS))
def test_pitch_class_names_the_colour_of_every_tone(material):
    for colour in COLOURS:
        freq = dominant_frequency(impact(colour, material, 1.0), SR, 1.0)
        assert colour_from_frequency(freq, material) == colour, (colour, freq)


def test_pitch_class_ignores_a_louder_sound_that_is_still_ringing():
    ringing = 3.0 * impact("blue", "metal", 0.8)  # metal decays over 0.45 s: loud at 1.0 s
    audio = ringing + impact("red", "rubber", 1.0)
    assert colour_from_frequency(dominant_frequency(audio, SR, 1.0), "rubber") == "red"
    assert colour_from_frequency(dominant_frequency(ringing, SR, 0.8), "metal") == "blue"


def test_silence_has_no_pitch_class():
    assert math.isnan(dominant_frequency(np.zeros(SR), SR, 0.5))
    assert colour_from_frequency(math.nan, "rubber") is None


# ------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)  # eigen-solver rounding only
    distances = [frechet_distance(a, a + c) for c in (0.5, 1.0, 2.0)]
    # a shift moves the mean only: FD = 16 c^2 exactly, up to rounding
    assert distances == pytest.approx([16 * 0.25, 16 * 1.0, 16 * 4.0], rel=1e-6)
    assert frechet_distance(a, 2 * a) > 1.0  # different covariance


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal d"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


# ------------------------------------------------------------------- scenes and references


def test_scene_cache_writes_each_clip_once_and_keeps_the_ground_truth(tmp_path):
    scenes = held_out_scenes(2, tmp_path, duration=2.0)
    assert [s.seed for s in scenes] == [HELD_OUT_SEED, HELD_OUT_SEED + 1]
    stamps = [s.video.stat().st_mtime_ns for s in scenes]
    again = held_out_scenes(2, tmp_path, duration=2.0)
    assert [s.video.stat().st_mtime_ns for s in again] == stamps  # read back, not rewritten
    truth = make_scene(HELD_OUT_SEED, SceneConfig(duration=2.25))
    assert again[0].events == tuple(truth.events)
    assert again[0].caption == truth.caption
    np.testing.assert_array_equal(again[0].audio, truth.audio[: 2 * SR])


def test_real_audio_scores_onset_f1_near_one_against_its_own_events(tmp_path):
    scenes = held_out_scenes(6, tmp_path)
    real = evaluate_references(scenes)["real"]
    assert real["n_reference"] >= 15
    assert real["onset_f1"] >= 0.95  # measured 0.98 over 40 scenes: masking by background noise
    assert real["offset_ms"] < 2.0
    assert real["pitch_accuracy"] >= 0.85  # measured 0.93 over 40 scenes
    assert real["frechet_distance"] == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_the_shipped_default_model_lines_up_impacts_with_the_picture(tmp_path):
    """``load_pipeline("default")`` at its one-step setting (ω = 1.5, scaled) on 8 held-out scenes:
    its impacts match the video's and their pitch names the object's colour; the same audio scored
    against the other scenes' events does not match."""
    scenes = held_out_scenes(8, tmp_path)
    pipe = load_pipeline("default")
    audios = [
        pipe.generate(video=s.video, prompt=s.caption, duration=s.duration, seed=s.seed).audio["scaled"]
        for s in scenes
    ]
    own = score_clips(audios, scenes)
    assert own["n_reference"] >= 30
    # measured on these 8 clips: stage-11 default 0.76, 12 ms, pitch 0.88, rotated F1 0.05; stage 10
    # 0.77, 14 ms, 0.96; stage 9 0.82, 15 ms, 0.88 (on 64 clips: 0.83, 0.82 and 0.81)
    assert own["onset_f1"] >= 0.7
    assert own["offset_ms"] <= 40.0
    assert own["pitch_accuracy"] >= 0.6  # chance is 1/8
    other = score_clips(audios[1:] + audios[:1], scenes)
    assert other["onset_f1"] <= 0.3


def test_extract_with_worker_processes_writes_the_same_store(tmp_path):
    config = ExtractConfig(out=tmp_path / "one", n_items=3, text_only_fraction=0.3, first_seed=5)
    stack = fit_offline_stack(config, n_fit=3)
    extract_synthetic(config, stack, progress=False)
    extract_synthetic(replace(config, out=tmp_path / "two"), stack, progress=False, workers=2)
    one, two = FeatureStore(tmp_path / "one"), FeatureStore(tmp_path / "two")
    assert one.ids == two.ids == ["scene-5", "scene-6", "scene-7"] and one.captions == two.captions
    for name in ("latent_mean", "clip_f", "sync_f", "text_f", "has_video"):
        np.testing.assert_array_equal(one.array(name), two.array(name))


def test_extract_with_a_reused_codec_continues_a_store(tmp_path):
    """``mfmjt extract --codec``: a store of later seeds encoded with the first store's codec holds the
    same items as one extraction of all seeds with that codec."""
    first = ExtractConfig(out=tmp_path / "first", n_items=2, text_only_fraction=0.0, first_seed=3)
    stack = fit_offline_stack(first, n_fit=2)
    extract_synthetic(first, stack, progress=False)
    codec_path = tmp_path / "first" / "codec.safetensors"
    reused = offline_stack_with_codec(codec_path)
    later = replace(first, out=tmp_path / "later", n_items=1, first_seed=4)
    extract_synthetic(later, reused, progress=False)
    one, two = FeatureStore(tmp_path / "first"), FeatureStore(tmp_path / "later")
    assert two.ids == ["scene-4"]
    saved = OfflineAudioCodec.load(tmp_path / "later" / "codec.safetensors").state_dict()
    for key, value in reused.codec.state_dict().items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
    for name in ("latent_mean", "clip_f", "sync_f", "text_f"):
        np.testing.assert_allclose(two.array(name)[0], one.array(name)[1], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_mfmjt_evaluate_runs_end_to_end_on_a_freshly_trained_micro_model(tmp_path):
    config = ExtractConfig(out=tmp_path / "store", n_items=6, text_only_fraction=0.0)
    extract_synthetic(config, fit_offline_stack(config, n_fit=6), progress=False)
    model = train(
        TrainConfig(
            store=config.out,
            out_dir=tmp_path / "run",
            network_overrides={
                "hidden_dim": 32,
                "depth": 2,
                "fused_depth": 1,
                "num_heads": 2,
                "sync_dim": 48,
            },
            steps=3,
            batch_size=2,
            warmup_steps=1,
            checkpoint_every=0,
            progress=False,
        )
    )
    out = tmp_path / "results.json"
    args = ["evaluate", "--model", str(model), "--n", "2", "--cache", str(tmp_path / "scenes")]
    assert main([*args, "--guidance", "both", "--references", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n_clips"] == 2 and result["settings"]["cfg"] == 1.5  # the one-step default
    assert set(result["modes"]) == {"standard", "scaled"}
    for metrics in (*result["modes"].values(), *result["references"].values()):
        assert metrics["n_reference"] > 0 and metrics["frechet_distance"] >= 0.0
        assert metrics["onset_f1"] is None or 0.0 <= metrics["onset_f1"] <= 1.0
    assert result["references"]["real"]["onset_f1"] > 0.9
    assert 0 < result["rtf_generation"] < result["rtf"]
    assert result["first_seed"] == HELD_OUT_SEED == build_parser().parse_args(["evaluate"]).first_scene
    # --first-scene picks other scenes (a validation set); --seed only changes the sampling noise
    other = tmp_path / "other.json"
    assert main([*args, "--first-scene", str(2 * HELD_OUT_SEED), "--seed", "7", "--out", str(other)]) == 0
    assert json.loads(other.read_text())["first_seed"] == 2 * HELD_OUT_SEED
    noise = tmp_path / "noise.json"
    assert main([*args, "--seed", "7", "--out", str(noise)]) == 0
    assert json.loads(noise.read_text())["first_seed"] == HELD_OUT_SEED
