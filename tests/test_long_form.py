"""Long clips: window plan, cross-fades, one-pass window decoding, and whole-length generation."""

from __future__ import annotations

import json
import math
import shutil

import av
import numpy as np
import pytest
import torch
from helpers import cfr, write_video
from stacks import small_random_pipeline

from mfmjt import long_form, media
from mfmjt.guidance import guide
from mfmjt.long_form import Stitcher, WindowPlan, crossfade_gains, plan_windows
from mfmjt.pipeline import default_model_dir, load_pipeline
from mfmjt.sampler import predict_pair
from mfmjt.toy.scene import SceneConfig, make_scene

SR = 16_000
SPL = 512  # samples per latent frame


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def default_pipe():
    """The embedded default with windows of its 4 s training items (its config.json recommends 8 s
    windows; 4 s ones make more joins per second of test clip)."""
    pipe = load_pipeline("default", device="cpu", max_duration=300.0)
    pipe.window_seconds = 4.0
    return pipe


@pytest.fixture(scope="module")
def small_pipe():
    return small_random_pipeline(max_duration=30.0, one_window=False)


def _looped_scene_mp4(path, seconds: float, fps: int = 24) -> None:
    """A synthetic scene (coloured objects bouncing) of 6 s, looped to ``seconds``, 128 x 128 H.264."""
    scene = make_scene(3, SceneConfig(duration=6.0, fps=fps))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = 128
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(round(seconds * fps)):
            image = scene.frames[i % len(scene.frames)]
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())


@pytest.fixture(scope="module")
def scene_12s(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "scene12.mp4"
    _looped_scene_mp4(path, 12.0)
    return path


# ---------------------------------------------------------------------------------------- window plan
@pytest.mark.parametrize("extra", [1, 33, 94, 219, 875, 9125])  # latent frames beyond one window
@pytest.mark.parametrize("window,overlap", [(125, 31), (250, 31), (50, 16)])
def test_window_plan_covers_the_clip_with_fixed_windows_and_overlaps(extra, window, overlap):
    total = window + extra
    plan = plan_windows(total, window, overlap)
    ws = plan.windows
    assert len(ws) == 1 + math.ceil((total - window) / (window - overlap))
    assert ws[0].start == 0 and ws[-1].stop == total  # covers [0, total], the last aligned to the end
    assert all(w.length == window for w in ws)
    for a, b in zip(ws, ws[1:], strict=False):
        assert b.start > a.start and a.stop - b.start >= overlap
    for a, b in zip(ws[:-2], ws[1:-1], strict=False):
        assert a.stop - b.start == overlap  # the fixed hop everywhere but at the last join
    fades = [plan.fade(k) for k in range(1, len(ws))]
    for k, (f0, f1) in enumerate(fades, start=1):
        assert f1 - f0 == overlap and ws[k].start <= f0 and f1 <= ws[k - 1].stop  # inside both windows
    assert all(a[1] <= b[0] for a, b in zip(fades, fades[1:], strict=False))  # disjoint, in order


def test_a_clip_within_one_window_is_one_window_and_bad_overlaps_are_refused():
    assert plan_windows(125, 125, 31).windows == (long_form.Window(0, 0, 125),)
    assert plan_windows(80, 125, 31).windows == (long_form.Window(0, 0, 80),)
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(500, 125, 42)
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(500, 125, 0)


def test_window_length_is_the_models_recommended_window_else_its_training_length(
    default_pipe, small_pipe, tmp_path
):
    assert long_form.window_latents(load_pipeline("default")) == 250  # recommended "window": 8.0
    assert long_form.window_latents(default_pipe) == 125  # set to its 4 s training items
    assert long_form.window_latents(small_pipe) == 50  # the tiny network's latent_seq_len
    # a model directory that recommends no window: the duration of its training items (4 s)
    config = json.loads((default_model_dir() / "config.json").read_text())
    del config["recommended"]["window"]
    shutil.copytree(default_model_dir(), tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert long_form.window_latents(load_pipeline(str(tmp_path / "m"))) == 125


# ----------------------------------------------------------------------------------------- cross-fade
def test_crossfade_gains():
    n = 1000
    out, inn = crossfade_gains(n, "linear")
    np.testing.assert_allclose(out + inn, 1.0, atol=1e-6)
    out, inn = crossfade_gains(n, "equal_power")
    np.testing.assert_allclose(out**2 + inn**2, 1.0, atol=1e-6)
    for rho in (0.0, 0.4, 1.0):
        out, inn = crossfade_gains(n, "adaptive", rho)
        np.testing.assert_allclose(out**2 + inn**2 + 2 * rho * out * inn, 1.0, atol=1e-5)  # constant power
        np.testing.assert_array_equal(out, inn[::-1])
        assert np.all(np.diff(inn) > 0) and inn[0] < 0.01 and inn[-1] > 0.99
    np.testing.assert_allclose(
        crossfade_gains(n, "adaptive", 1.0)[1], crossfade_gains(n, "linear")[1], atol=1e-6
    )
    with pytest.raises(ValueError, match="fade must be one of"):
        crossfade_gains(n, "cubic")


def test_local_correlation_follows_where_two_signals_agree():
    a = np.random.default_rng(1).standard_normal(20 * SPL)
    b = np.concatenate([a[: 10 * SPL], -a[10 * SPL :]])  # identical, then phase-inverted
    rho = long_form.local_correlation(a, b, SPL, span=5)
    assert rho.shape == a.shape
    np.testing.assert_allclose(rho[: 7 * SPL], 1.0, atol=1e-9)  # 5-block span: exact away from the flip
    np.testing.assert_allclose(rho[13 * SPL :], -1.0, atol=1e-9)
    assert abs(rho[10 * SPL]) < 0.25
    assert long_form.local_correlation(a, np.zeros_like(a), SPL).max() == 0.0  # silence: no correlation


def _two_windows(signal: np.ndarray, plan: WindowPlan) -> list[np.ndarray]:
    return [signal[None, w.start * SPL : w.stop * SPL].copy() for w in plan.windows]


def _rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2))


@pytest.mark.parametrize("fade", ["adaptive", "linear"])
def test_joining_windows_of_one_sine_leaves_no_seam(fade):
    plan = plan_windows(200, 125, 31)
    t = np.arange(200 * SPL) / SR
    sine = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    stitcher = Stitcher(plan, SPL, 1, fade)
    for k, audio in enumerate(_two_windows(sine, plan)):
        stitcher.add(k, audio)
    out = stitcher.audio[0]
    f0, f1 = (f * SPL for f in plan.fade(1))
    jumps = np.abs(np.diff(out))
    assert jumps[f0 - 1 : f1].max() <= jumps[: f0 - 1].max() + 1e-6  # no larger step at the join
    assert abs(_rms_db(out[f0:f1]) - _rms_db(out[: f0 - SPL])) < 0.05
    np.testing.assert_allclose(out, sine, atol=1e-5)  # identical windows: the signal itself
    assert stitcher.correlations[0][0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("fade,max_dip_db", [("adaptive", 0.5), ("equal_power", 0.5), ("linear", None)])
def test_joining_uncorrelated_windows_keeps_their_power(fade, max_dip_db):
    plan = plan_windows(200, 125, 31)
    rng = np.random.default_rng(0)
    first, second = (0.1 * rng.standard_normal(200 * SPL).astype(np.float32) for _ in range(2))
    stitcher = Stitcher(plan, SPL, 1, fade)
    stitcher.add(0, _two_windows(first, plan)[0])
    stitcher.add(1, _two_windows(second, plan)[1])
    f0, f1 = (f * SPL for f in plan.fade(1))
    middle = stitcher.audio[0, (f0 + f1) // 2 - 1000 : (f0 + f1) // 2 + 1000]
    dip = _rms_db(first) - _rms_db(middle)
    if max_dip_db is None:
        assert dip == pytest.approx(3.0, abs=0.5)  # why the default is not linear: -3 dB mid-join
    else:
        assert abs(dip) < max_dip_db


# ------------------------------------------------------------------------------------ window decoding
def test_windows_decoded_in_one_pass_match_whole_clip_decoding(scene_12s):
    whole = media.decode_video(scene_12s, max_duration=300)
    # 288 frames at 24 fps: the last one (11.958 s) serves the 25 fps targets up to 11.96 s
    assert media.probe_video_duration(scene_12s) == whole.duration == 11.96
    windows = list(media.decode_video_windows(scene_12s, [(0.0, 4.0), (3.0, 4.0), (6.0, 4.0), (7.0, 4.0)]))
    first = media.decode_video(scene_12s, 4.0)
    assert torch.equal(windows[0].clip_frames, first.clip_frames)
    assert torch.equal(windows[0].sync_frames, first.sync_frames)
    for (start, _), got in zip([(3, 0), (6, 0), (7, 0)], windows[1:], strict=True):
        # whole seconds lie on both frame grids: the window's frames are the whole clip's
        assert torch.equal(got.clip_frames, whole.clip_frames[8 * start : 8 * (start + 4)])
        assert torch.equal(got.sync_frames, whole.sync_frames[25 * start : 25 * (start + 4)])
        assert got.duration == 4.0 and not got.truncated


def test_a_window_past_the_end_comes_back_short_and_one_beyond_it_is_an_error(scene_12s):
    short = list(media.decode_video_windows(scene_12s, [(10.0, 4.0)]))[0]
    assert short.truncated and short.duration == pytest.approx(1.96)
    with pytest.raises(media.MediaError, match="ends before 13.00 s"):
        list(media.decode_video_windows(scene_12s, [(0.0, 4.0), (13.0, 4.0)]))


def test_a_window_a_frame_short_of_the_end_holds_the_last_frame_and_one_far_short_stops(
    default_pipe, scene_12s
):
    def windows_of(plan):
        decoded = media.decode_video_windows(scene_12s, default_pipe._spans(plan))
        return default_pipe._video_windows(plan, decoded, {})

    ends_at_video_end = WindowPlan(375, 125, 31, (long_form.Window(0, 250, 375),))  # 8 s + 4 s
    clip_f, sync_f, latents, _ = next(windows_of(ends_at_video_end))
    # the frames end at 11.96 s: 99 sync targets, the 100th holds the last frame
    assert latents == 125 and clip_f.shape[1] == 32 and sync_f.shape[1] == 88  # as for any 4 s window
    past_the_end = WindowPlan(385, 125, 31, (long_form.Window(0, 260, 385),))  # 8.32 s + 4 s
    windows = list(windows_of(past_the_end))
    assert [w[2] for w in windows] == [114]  # ceil(3.64 s x 31.25): generated short, then stop


# -------------------------------------------------------------------------------- generation: short
def test_clips_within_the_training_length_take_the_unchanged_path(small_pipe, monkeypatch):
    called = []
    monkeypatch.setattr(type(small_pipe), "_generate_windows", lambda *a, **k: called.append(1))
    res = small_pipe.generate(prompt="rain", duration=1.6, cfg_strength=2.0, guidance="standard", seed=4)
    assert not called and "windows" not in res.settings  # 1.6 s = 50 latent frames: one window
    req = small_pipe.prepare(prompt="rain", duration=1.6, seed=4)
    net = small_pipe.network
    with torch.inference_mode():
        t = torch.tensor(1.0, dtype=torch.float64)
        u_c, u_u = predict_pair(net, req.noise, t, t, req.cond.cat(req.uncond))
        z0 = req.noise - guide(u_c, u_u, 2.0, "standard")
        wave = small_pipe.features.codec.decode(net.unnormalize(z0)).float().numpy()[0]
    np.testing.assert_array_equal(res.audio["standard"], wave)  # bit-identical to the single-window path
    assert long_form.plan_request(small_pipe, None, 1.6, 8.0) is None
    assert long_form.plan_request(small_pipe, None, 1.64, 8.0) is not None  # 52 latent frames


# --------------------------------------------------------------------------------- generation: long
def test_long_text_to_audio_covers_the_whole_length_with_progress_per_window(small_pipe):
    seen = []
    res = small_pipe.generate(prompt="wind", duration=3.0, seed=7, progress=lambda i, n: seen.append((i, n)))
    plan = long_form.plan_request(small_pipe, None, 3.0, 8.0).plan
    n = len(plan.windows)
    assert n == res.settings["windows"] == 3  # 94 latent frames: windows of 50 every 34 (16 overlap)
    assert seen == [(k, n) for k in range(1, n + 1)]
    assert res.audio["scaled"].shape == (3 * SR,) and res.duration == 3.0
    again = small_pipe.generate(prompt="wind", duration=3.0, seed=7)
    np.testing.assert_array_equal(again.audio["scaled"], res.audio["scaled"])  # reproducible
    other = small_pipe.generate(prompt="wind", duration=3.0, seed=8)
    assert not np.allclose(other.audio["scaled"], res.audio["scaled"])
    steps = []
    small_pipe.generate(
        prompt="wind", duration=2.0, steps=2, cfg_strength=4.5, progress=lambda i, n: steps.append((i, n))
    )
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 2 windows x 2 steps


def test_cli_draws_a_progress_bar_and_allows_five_minutes(small_pipe, tmp_path, monkeypatch):
    from mfmjt import cli, pipeline

    assert cli.build_parser().parse_args(["generate"]).max_duration == 300.0
    bar = cli._StepBar("x")
    for i in range(1, 4):
        bar(i, 3)
    assert bar.bar.n == 3 and bar.bar.total == 3
    monkeypatch.setattr(pipeline, "load_pipeline", lambda *a, **k: small_pipe)
    out = tmp_path / "out"
    code = cli.main(["generate", "--prompt", "wind", "--duration", "2.2", "--audio-only", "--out", str(out)])
    assert code == 0
    assert media.read_audio(out / "wind_scaled.flac", SR).shape == (35_200,)  # 2.2 s from 2 windows


def test_text_to_audio_beyond_the_limit_is_cut_and_says_so(small_pipe, monkeypatch):
    monkeypatch.setattr(small_pipe, "max_duration", 2.5)
    res = small_pipe.generate(prompt="wind", duration=45.0, cfg_strength=1.0)
    assert res.duration == 2.5 and res.audio["scaled"].shape == (40_000,) and "2.5 s" in res.message
    assert res.settings["windows"] == 2


def _check_seams(res, windows: list[np.ndarray], plan: WindowPlan, tolerance_db: float) -> None:
    """Outside the fades the audio is its window's; inside, the power stays within the two windows' range."""
    out = res.audio["scaled"]
    n = len(out)
    covered = np.zeros(n, dtype=bool)
    for k, (w, audio) in enumerate(zip(plan.windows, windows, strict=True)):
        lo = 0 if k == 0 else plan.fade(k)[1] * SPL
        hi = min(n, w.stop * SPL if k == len(windows) - 1 else plan.fade(k + 1)[0] * SPL)
        np.testing.assert_array_equal(out[lo:hi], audio[0, lo - w.start * SPL : hi - w.start * SPL])
        covered[lo:hi] = True
    for k in range(1, len(windows)):
        f0, f1 = (f * SPL for f in plan.fade(k))
        covered[f0:f1] = True
        prev = windows[k - 1][0, f0 - plan.windows[k - 1].start * SPL : f1 - plan.windows[k - 1].start * SPL]
        nxt = windows[k][0, f0 - plan.windows[k].start * SPL : f1 - plan.windows[k].start * SPL]
        for block in np.array_split(np.arange(f1 - f0), 4):
            p_out, p_a, p_b = (_rms_db(x[block]) for x in (out[f0:f1], prev, nxt))
            assert min(p_a, p_b) - tolerance_db < p_out < max(p_a, p_b) + tolerance_db, (k, p_out, p_a, p_b)
    assert covered.all()


def _generate_recording_windows(pipe, monkeypatch, **kwargs):
    windows: list[np.ndarray] = []
    add = Stitcher.add
    monkeypatch.setattr(
        Stitcher, "add", lambda self, k, audio: windows.append(audio.copy()) or add(self, k, audio)
    )
    return pipe.generate(**kwargs), windows


def test_a_long_video_gives_audio_for_its_whole_length_without_seams(default_pipe, scene_12s, monkeypatch):
    seen = []
    res, windows = _generate_recording_windows(
        default_pipe, monkeypatch, video=scene_12s, seed=1, progress=lambda i, n: seen.append((i, n))
    )
    plan = long_form.plan_request(default_pipe, scene_12s, None, 8.0).plan
    assert len(plan.windows) == 4 and seen == [(k, 4) for k in range(1, 5)]
    assert res.duration == 11.96 and res.audio["scaled"].shape == (191_360,)  # 11.96 s exactly
    assert res.timings["decode_video"] > 0 and res.settings["window_seconds"] == 4.0
    _check_seams(res, windows, plan, tolerance_db=2.0)


def test_a_video_whose_frames_end_before_its_timestamps_say_gives_what_it_has(
    default_pipe, scene_12s, monkeypatch
):
    monkeypatch.setattr(media, "probe_video_duration", lambda path: 14.0)  # timestamps claim 14 s
    res = default_pipe.generate(video=scene_12s, seed=1)
    # windows at 0, 94, 188, 282 latent frames; the frames end 2.96 s into the fourth (at 9.024 s)
    assert res.duration == pytest.approx(11.984) and len(res.audio["scaled"]) == 191_744
    assert "frames end at 11.98 s" in res.message
    assert np.abs(res.audio["scaled"][-SR:]).max() > 0  # audio up to the end


@pytest.mark.slow
def test_a_two_minute_video_gives_audio_for_its_whole_length_without_seams(
    default_pipe, tmp_path, monkeypatch
):
    path = tmp_path / "two_minutes.mp4"
    _looped_scene_mp4(path, 120.0)
    seen = []
    res, windows = _generate_recording_windows(
        default_pipe, monkeypatch, video=path, seed=2, progress=lambda i, n: seen.append((i, n))
    )
    plan = long_form.plan_request(default_pipe, path, None, 8.0).plan
    assert len(plan.windows) == 40 and seen == [(k, 40) for k in range(1, 41)]
    assert res.duration == 119.96 and res.audio["scaled"].shape == (1_919_360,)  # 119.96 s exactly
    _check_seams(res, windows, plan, tolerance_db=2.0)


# ------------------------------------------------------------------ one measure of length, one decode
def _clip_at(tmp_path, fps: int, seconds: float = 20.0):
    """A ``seconds`` clip at ``fps``: H.264 mp4, or a gif at 10 fps (frames shown 0.1 s each)."""
    gif = fps == 10
    path = tmp_path / f"clip_{fps}fps.{'gif' if gif else 'mp4'}"
    codec, pix_fmt = ("gif", "rgb8") if gif else ("libx264", "yuv420p")
    return write_video(path, cfr(fps, seconds), (64, 48), codec, fps, pix_fmt=pix_fmt)


@pytest.mark.parametrize("fps", [1, 5, 10])
def test_low_frame_rate_clips_longer_than_a_window_give_audio_for_the_whole_video(small_pipe, tmp_path, fps):
    # the last frame of a 1, 5 or 10 fps clip is shown 1, 0.2 or 0.1 s: the video lasts to its end (20 s),
    # measured alike from packets (the window plan) and from decoded frames (one window)
    path = _clip_at(tmp_path, fps)
    assert media.probe_video_duration(path) == 20.0
    assert media.decode_video(path, max_duration=300).duration == 20.0
    res = small_pipe.generate(video=path, seed=1, cfg_strength=1.0)
    assert res.settings["windows"] > 1 and res.duration == 20.0 and res.message == ""
    assert res.audio["scaled"].shape == (20 * SR,)
    assert np.abs(res.audio["scaled"][-SR // 10 :]).max() > 0  # audio up to the end


def test_a_long_clip_is_decoded_once_and_not_again_when_decoded_is_given(small_pipe, tmp_path, monkeypatch):
    path = write_video(tmp_path / "c.mp4", cfr(12, 5.0), (64, 48), "libx264", 12)
    from mfmjt.media import frames

    passes = []
    loop = frames._decode_grids
    monkeypatch.setattr(frames, "_decode_grids", lambda *a, **k: passes.append(1) or loop(*a, **k))
    direct = small_pipe.generate(video=path, seed=3, cfg_strength=1.0)
    assert len(passes) == 1 and direct.settings["windows"] > 1 and direct.duration == 5.0
    decoded = small_pipe.decode_video(path)
    assert len(passes) == 2 and len(decoded.windows) == direct.settings["windows"]
    again = small_pipe.generate(video=path, seed=3, cfg_strength=1.0, decoded=decoded)
    assert len(passes) == 2  # generate(decoded=...) does not decode the video again
    np.testing.assert_array_equal(again.audio["scaled"], direct.audio["scaled"])
    assert again.timings.get("decode_video", 0.0) < 0.05
