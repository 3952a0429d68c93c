"""End-to-end wiring of the full-size stack's classes with small random-weight encoders."""

from __future__ import annotations

import dataclasses

import av
import numpy as np
import pytest
import torch
from helpers import write_clip
from stacks import randomize, small_random_pipeline

from mfmjt import media
from mfmjt.guidance import guide
from mfmjt.model import MFMJTNetwork
from mfmjt.model_dir import ModelConfig, SamplingSettings
from mfmjt.pipeline import Pipeline
from mfmjt.request import Sampling


@pytest.fixture(scope="module")
def small_stack_pipeline() -> Pipeline:
    return small_random_pipeline(max_duration=3.0)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    """A 2.5 s, 30 fps, 160x120 H.264 clip with a moving square."""
    return write_clip(tmp_path_factory.mktemp("video") / "square.mp4", 2.5)


@pytest.mark.slow
def test_video_to_audio_both_modes_give_audio_of_the_clip_length(small_stack_pipeline, clip_path):
    res = small_stack_pipeline.generate(video=clip_path, prompt="a square", guidance="both", seed=3)
    assert set(res.audio) == {"standard", "scaled"}
    # 75 frames at 30 fps: the last frame is at 2.467 s, so 62 sync frames (25 fps) -> 2.48 s
    assert res.duration == pytest.approx(2.48)
    for wave in res.audio.values():
        assert wave.dtype == np.float32 and wave.shape == (78 * 512,)  # ceil(2.48 * 31.25) latents
        assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0
    assert not np.allclose(res.audio["standard"], res.audio["scaled"])
    for stage in ("decode_video", "clip_features", "sync_features", "network", "audio_decode", "total"):
        assert stage in res.timings


def test_text_to_audio_gives_the_requested_duration(small_stack_pipeline):
    res = small_stack_pipeline.generate(
        prompt="rain on a tin roof", duration=1.5, guidance="standard", seed=0
    )
    assert list(res.audio) == ["standard"]
    assert res.audio["standard"].shape == (47 * 512,)  # ceil(1.5 * 31.25) latents


def test_text_to_audio_longer_than_the_cap_is_cut_and_says_so(small_stack_pipeline):
    res = small_stack_pipeline.generate(prompt="wind", duration=10.0, cfg_strength=1.0)
    assert res.duration == 3.0 and "3 s" in res.message


def test_changing_only_omega_reuses_features_and_predictions(small_stack_pipeline, clip_path, monkeypatch):
    pipe = small_stack_pipeline
    first = pipe.generate(video=clip_path, prompt="x", guidance="both", cfg_strength=1.5, seed=5)
    calls = []
    original = pipe.network.inner_velocity
    monkeypatch.setattr(pipe.network, "inner_velocity", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = pipe.generate(video=clip_path, prompt="x", guidance="both", cfg_strength=1.5, seed=5)
    stronger = pipe.generate(video=clip_path, prompt="x", guidance="scaled", cfg_strength=3.5, seed=5)
    assert calls == []  # no network forward at all: the one-step predictions were kept
    assert again.timings["video_features"] == 0.0  # cached per (content, duration)
    np.testing.assert_array_equal(again.audio["scaled"], first.audio["scaled"])
    assert not np.allclose(stronger.audio["scaled"], first.audio["scaled"])
    pipe.generate(video=clip_path, prompt="x", guidance="scaled", cfg_strength=3.5, seed=6)
    assert calls == [1]  # a new seed is a new request: one batched forward


def test_one_step_remix_equals_a_fresh_run(small_stack_pipeline, clip_path):
    pipe = small_stack_pipeline
    pipe.generate(video=clip_path, prompt="y", cfg_strength=1.5, seed=9)
    remixed = pipe.generate(video=clip_path, prompt="y", cfg_strength=2.5, guidance="standard", seed=9)
    pipe._one_step = None
    fresh = pipe.generate(video=clip_path, prompt="y", cfg_strength=2.5, guidance="standard", seed=9)
    np.testing.assert_allclose(remixed.audio["standard"], fresh.audio["standard"], atol=1e-5)


def test_prepare_gives_the_conditions_and_noise_generate_uses(small_stack_pipeline, clip_path):
    pipe = small_stack_pipeline
    result = pipe.generate(video=clip_path, prompt="y", cfg_strength=2.0, guidance="scaled", seed=4)
    req = pipe.prepare(video=clip_path, prompt="y", seed=4)
    assert req.duration == result.duration and req.message == result.message
    with torch.inference_mode():
        u_c = pipe.network.predict(req.noise, 1.0, 1.0, req.cond).float()
        u_u = pipe.network.predict(req.noise, 1.0, 1.0, req.uncond).float()
        z0 = req.noise - guide(u_c, u_u, 2.0, "scaled")
        wave = pipe.features.codec.decode(pipe.network.unnormalize(z0)).float().numpy()[0]
    np.testing.assert_allclose(wave, result.audio["scaled"], atol=1e-4)
    assert pipe.prepare(prompt="y", duration=1.0, unconditional=False).uncond is None
    with pytest.raises(ValueError, match="give a video, a prompt, or both"):
        pipe.prepare()


@pytest.mark.slow
def test_a_guidance_trained_network_is_guided_in_one_forward_unless_a_negative_prompt_asks_for_cfg(
    small_stack_pipeline, monkeypatch
):
    plain = small_stack_pipeline.network
    net = MFMJTNetwork(dataclasses.replace(plain.config, guidance_embed=True))
    net.load_mmaudio_state_dict(plain.state_dict())
    randomize(net.guidance_embed, 1)
    pipe = Pipeline(net, small_stack_pipeline.features, max_duration=3.0)
    batches = []
    original = net.inner_velocity
    monkeypatch.setattr(
        net, "inner_velocity", lambda z, *a, **k: batches.append(z.shape[0]) or original(z, *a, **k)
    )
    res = pipe.generate(prompt="rain", duration=1.0, cfg_strength=2.0, guidance="both", seed=2)
    assert res.settings["guidance_in_network"] and batches == [2]  # both modes, no unconditional branch
    req = pipe.prepare(prompt="rain", duration=1.0, seed=2, unconditional=False)
    with torch.inference_mode():
        z0 = req.noise - net.predict(req.noise, 1.0, 1.0, req.cond, 2.0, True).float()
        wave = pipe.features.codec.decode(net.unnormalize(z0)).float().numpy()[0]
    np.testing.assert_allclose(wave, res.audio["scaled"], atol=1e-4)
    two_pass = pipe.generate(prompt="rain", duration=1.0, cfg_strength=2.0, seed=2, guidance_in_network=False)
    assert not two_pass.settings["guidance_in_network"]
    assert not np.allclose(two_pass.audio["scaled"], res.audio["scaled"])
    negative = pipe.generate(prompt="rain", negative_prompt="hiss", duration=1.0, cfg_strength=2.0)
    assert not negative.settings["guidance_in_network"]  # only CFG's two forwards can use it
    with pytest.raises(ValueError, match="negative prompt"):
        pipe.generate(prompt="rain", negative_prompt="hiss", duration=1.0, guidance_in_network=True)
    with pytest.raises(ValueError, match="no guidance embedding"):
        small_stack_pipeline.generate(prompt="rain", duration=1.0, guidance_in_network=True)


def test_multi_step_generation_reports_progress(small_stack_pipeline):
    seen = []
    res = small_stack_pipeline.generate(
        prompt="z", duration=1.0, steps=3, cfg_strength=4.5, progress=lambda i, n: seen.append((i, n))
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert res.settings["steps"] == 3


def test_mux_writes_one_browser_playable_mp4_per_mode(small_stack_pipeline, clip_path, tmp_path):
    res = small_stack_pipeline.generate(video=clip_path, guidance="both", seed=1)
    paths = small_stack_pipeline.mux(res, clip_path, tmp_path)
    assert [p.name for p in paths] == ["square_standard.mp4", "square_scaled.mp4"]
    for path in paths:
        with av.open(str(path)) as container:
            assert [s.type for s in container.streams] == ["video", "audio"]
            assert container.streams.video[0].codec_context.name == "h264"
            assert container.streams.audio[0].codec_context.name == "aac"
            assert container.duration / 1e6 == pytest.approx(2.48, abs=0.05)
    flac = small_stack_pipeline.save_audio(res, tmp_path, "square")
    assert media.read_audio(flac[0], 16_000).shape == (39_680,)  # 2.48 s


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(), "give a video, a prompt, or both"),
        (dict(prompt="a", steps=0), "steps must be"),
        (dict(prompt="a", cfg_strength=-1), "cfg_strength"),
        (dict(prompt="a", guidance="wild"), "guidance must be"),
        (dict(prompt="a", seed=-3), "seed"),
        (dict(prompt="a", duration=float("nan")), "duration"),
    ],
)
def test_bad_requests_raise_value_error(small_stack_pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_stack_pipeline.generate(**kwargs)


def test_unreadable_video_raises_media_error(small_stack_pipeline, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(media.MediaError):
        small_stack_pipeline.generate(video=bad)


@pytest.mark.slow
def test_cli_generate_processes_a_folder_and_skips_unreadable_files(
    small_stack_pipeline, clip_path, tmp_path, monkeypatch, caplog
):
    import shutil

    from mfmjt import cli, pipeline

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(clip_path, folder / "a.mp4")
    (folder / "b.mp4").write_bytes(b"not a video")
    shutil.copy(clip_path, folder / "c.mov")
    monkeypatch.setattr(pipeline, "load_pipeline", lambda *a, **k: small_stack_pipeline)
    out = tmp_path / "out"
    code = cli.main(["generate", "--video", str(folder), "--guidance", "both", "--out", str(out)])
    assert code == 1  # one input failed ...
    assert "skipped b.mp4" in caplog.text
    names = sorted(p.name for p in out.iterdir())  # ... and the others were all written
    assert names == sorted(
        f"{stem}_{mode}.{ext}"
        for stem in ("a", "c")
        for mode in ("standard", "scaled")
        for ext in ("flac", "mp4")
    )


# ----------------------------------------------------------------------------- sampling settings
def test_a_flow_matching_model_given_nothing_samples_its_multi_step_recommendation(small_stack_pipeline):
    pipe = small_stack_pipeline
    try:
        pipe.objective = "flow_matching"  # recommends 25 steps at ω 4.5 (SamplingSettings.for_objective)
        calls = []
        res = pipe.generate(prompt="rain", duration=1.0, seed=2, progress=lambda i, n: calls.append(n))
        assert (res.settings["steps"], res.settings["cfg_strength"]) == (25, 4.5) and calls[-1] == 25
        given = pipe.generate(
            prompt="rain", duration=1.0, seed=2, steps=25, cfg_strength=4.5, guidance="scaled"
        )
        np.testing.assert_array_equal(res.audio["scaled"], given.audio["scaled"])
        assert pipe.sampling() == pipe.sampling(25) == Sampling(25, 4.5, "scaled")
        assert pipe.sampling(1) == Sampling(1, 1.5, "scaled")  # one step of it: ω 1.5
    finally:
        pipe.objective = "meanflow"
    assert small_stack_pipeline.sampling() == Sampling(1, 1.5, "scaled")


def test_a_model_directorys_own_recommendation_is_the_default(small_stack_pipeline):
    pipe = small_stack_pipeline
    own = SamplingSettings(2, 2.0, "standard")
    try:
        pipe.model_config = ModelConfig(network=pipe.network.config, recommended=own)
        res = pipe.generate(prompt="rain", duration=1.0, seed=2)
        assert list(res.audio) == ["standard"] and (res.settings["steps"], res.settings["cfg_strength"]) == (
            2,
            2.0,
        )
    finally:
        pipe.model_config = None


# ------------------------------------------------------------------------ plain sentences for misuse
@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        (None, {}, r"the model must be named: .* \(got nothing\)"),
        ("", {}, "the model must be named"),
        (["default"], {}, "the model must be named"),
        ("default", dict(max_duration=0), "max_duration must be at least 0.64 seconds, got 0"),
        ("default", dict(max_duration=-5.0), "max_duration must be at least"),
        ("default", dict(max_duration=float("nan")), "max_duration must be at least 0.64 seconds, got nan"),
        ("default", dict(max_duration="long"), "max_duration must be at least"),
    ],
)
def test_load_pipeline_refuses_bad_arguments_in_one_sentence(name, kwargs, message):
    from mfmjt.pipeline import load_pipeline

    with pytest.raises(ValueError, match=message) as info:
        load_pipeline(name, **kwargs)
    assert "\n" not in str(info.value) and not isinstance(info.value, (TypeError, AttributeError))


def test_generate_refuses_a_folder_or_a_missing_file_in_one_sentence(small_stack_pipeline, tmp_path):
    with pytest.raises(media.MediaError, match="is a folder, not a video: give one video file"):
        small_stack_pipeline.generate(video=tmp_path)
    with pytest.raises(media.MediaError, match="file not found"):
        small_stack_pipeline.generate(video=tmp_path / "missing.mp4")
    with pytest.raises(media.MediaError, match="is a folder"):
        small_stack_pipeline.decode_video(tmp_path)
