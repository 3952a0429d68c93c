"""Hostile input through the demo's API (gradio_client against a live local server, random-weight stack).

Every case must be answered quickly with a plain sentence (no Python or ffmpeg internals), and the
server must still serve a normal request afterwards (the last test). Clips with unusual timing must get
audio for their whole length.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from helpers import cfr, probe, served, video_path, write_clip, write_video
from stacks import small_random_pipeline

gr = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError, ValidationError  # noqa: E402

os.environ.setdefault("MFMJT_APP_BUILD", "0")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import app  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

MAX_DURATION = 4.5
_demos: list = []


def client_demo():
    return _demos[-1]


ANSWER_WITHIN_S = 20.0  # per hostile request, on a loaded 2-core machine
UPLOAD_LIMIT = "2mb"
GRADIO_REFUSAL = "has raised an exception"
INTERNALS = re.compile(
    r"Traceback|File \"|Errno|ffmpeg|libav|av\.error|\b[A-Z]\w+(Error|Exception)\b|0x[0-9a-f]{6}|/tmp/|\\x",
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    pipe = small_random_pipeline(max_duration=MAX_DURATION)
    demo = app.build_demo({"random": lambda: pipe, "same": lambda: pipe})  # two: the model is an input
    _demos.append(demo)
    with served(demo, **{**app.LAUNCH_KWARGS, "max_file_size": UPLOAD_LIMIT}) as url:
        downloads = str(tmp_path_factory.mktemp("downloads"))
        yield Client(url, verbose=False, analytics_enabled=False, download_files=downloads)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def small_clip(clips: Path) -> Path:
    return write_clip(clips / "small.mp4", 1.0, width=64, height=48, fps=25)


V2A_DEFAULTS = dict(
    prompt="",
    negative_prompt="",
    duration=0,
    steps=1,
    cfg_strength=1.5,
    guidance="both",
    seed=1,
    randomize_seed=False,
)
T2A_DEFAULTS = dict(negative_prompt="", duration=1.0, steps=1, cfg_strength=1.5, guidance="both", seed=1)


def v2a(client: Client, video, **settings) -> tuple:
    args = {**V2A_DEFAULTS, **settings}
    if isinstance(video, Path):
        video = handle_file(str(video))
    return client.predict(video, *args.values(), "random", api_name="/video_to_audio")


def t2a(client: Client, prompt, **settings) -> tuple:
    args = {**T2A_DEFAULTS, **settings}
    return client.predict(prompt, *args.values(), False, "random", api_name="/text_to_audio")


def refused(call, pattern: str) -> str:
    """Run ``call``; it must fail within the time bound with a plain message matching ``pattern``."""
    start = time.perf_counter()
    with pytest.raises((AppError, ValidationError)) as info:
        call()
    elapsed = time.perf_counter() - start
    message = str(info.value.message if hasattr(info.value, "message") else info.value) or str(info.value)
    assert elapsed < ANSWER_WITHIN_S, f"took {elapsed:.1f} s"
    assert message.strip(), "an empty error message"
    assert not INTERNALS.search(message), f"internals in the message: {message!r}"
    assert len(message) < 400, message
    assert re.search(pattern, message), message
    return message


# ------------------------------------------------------------------------------------------ numbers
GIANT = 10**400
NUMBER_CASES = [
    ("steps", GIANT, "steps must be a whole number from 1 to 25, got a 401-digit number"),
    ("steps", -GIANT, "steps must be a whole number"),
    ("steps", "9" * 5000, r"steps must be a whole number .*5000 characters"),
    ("steps", "1e999", "steps must be a whole number"),
    ("steps", "nan", "steps must be a whole number"),
    ("steps", 2.5, "steps must be a whole number"),
    ("steps", [1], "steps must be a whole number"),
    ("steps", {"a": 1}, "steps must be a whole number"),
    ("steps", True, "steps must be a whole number"),
    ("cfg_strength", GIANT, r"ω \(cfg_strength\) must be a number from 0 to 10"),
    ("cfg_strength", -1e308, r"ω \(cfg_strength\) must be a number from 0 to 10"),
    ("cfg_strength", "inf", r"ω \(cfg_strength\)"),
    ("cfg_strength", "-nan", r"ω \(cfg_strength\)"),
    ("cfg_strength", "abc", r"ω \(cfg_strength\)"),
    ("cfg_strength", [], r"ω \(cfg_strength\)"),
    ("seed", GIANT, "seed must be a whole number from 0 to"),
    ("seed", -1, "seed must be a whole number"),
    ("seed", 2**64, "seed must be a whole number"),
    ("seed", 1.25, "seed must be a whole number"),
    ("seed", "x" * 10_000, r"seed must be .*10000 characters"),
    ("seed", {"nested": [1, 2, 3]}, "seed must be a whole number"),
    ("duration", GIANT, "duration must be 0 .* or a positive number of seconds"),
    ("duration", -GIANT, "duration must be"),
    ("duration", -0.5, "duration must be"),
    ("duration", "1e999", "duration must be"),
    ("duration", "nan", "duration must be"),
    ("duration", [3], "duration must be"),
]


@pytest.mark.parametrize(("field", "value", "message"), NUMBER_CASES, ids=lambda v: str(v)[:20])
def test_a_hostile_number_in_text_to_audio_is_refused_plainly(client, field, value, message):
    refused(lambda: t2a(client, "a ball", **{field: value}), message)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [case for case in NUMBER_CASES if case[0] != "duration" or case[1] != GIANT][::3],
    ids=lambda v: str(v)[:20],
)
def test_a_hostile_number_in_video_to_audio_is_refused_plainly(client, small_clip, field, value, message):
    refused(lambda: v2a(client, small_clip, **{field: value}), message)


@pytest.mark.parametrize("duration", [1e300, 1e308, 10**300])
def test_a_giant_duration_is_capped_and_said(client, duration):
    """Issue #27: 1e308 s overflowed in the long-form planner ("generation failed on the server")."""
    standard, scaled, info, _ = t2a(client, "a ball", duration=duration)
    assert f"Generated the first {MAX_DURATION:g} s" in info
    assert len(sf.read(standard)[0]) == round(MAX_DURATION * 16000)


def test_a_giant_duration_on_a_video_uses_the_whole_clip(client, small_clip):
    standard, _, wavs, info, _ = v2a(client, small_clip, duration=1e308, guidance="standard")
    assert len(sf.read(wavs[0])[0]) == 16000  # the 1 s clip, all of it


def test_the_largest_seed_is_accepted(client):
    """Issue #27: 2**63 - 1 was refused by a message naming 2**63 - 1 as the maximum."""
    standard, scaled, info, seed = t2a(client, "a ball", seed=2**63 - 1)
    assert seed == 2**63 - 1 and f"seed {2**63 - 1}" in info
    refused(lambda: t2a(client, "a ball", seed=2**63), f"seed must be a whole number from 0 to {2**63 - 1}")


# ------------------------------------------------------------------------------------------ text
@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("x" * 2_000_000, "prompt is 2000000 characters long; at most 1000 are accepted"),
        ("a" * 1001, "prompt is 1001 characters long"),
        ("ball\x00", "NUL character"),
        (12345, "no prompt"),
        (["a", "b"], "no prompt"),
        (None, "no prompt"),
        ("   \n\t ", "no prompt"),
    ],
    ids=["2MB", "1001", "nul", "int", "list", "none", "blank"],
)
def test_a_hostile_prompt_is_refused_quickly(client, prompt, message):
    refused(lambda: t2a(client, prompt), message)


def test_a_huge_negative_prompt_is_refused(client):
    refused(
        lambda: t2a(client, "a ball", negative_prompt="n" * 500_000), "negative prompt is 500000 characters"
    )


def test_a_long_prompt_in_video_to_audio_is_refused_before_decoding(client, small_clip):
    refused(lambda: v2a(client, small_clip, prompt="p" * 100_000), "prompt is 100000 characters")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("guidance", "louder", "guidance must be one of"),
        ("guidance", ["both"], "guidance must be one of"),
        ("guidance", "g" * 100_000, r"guidance must be one of .*100000 characters"),
    ],
    ids=["word", "list", "huge"],
)
def test_a_hostile_guidance_is_refused(client, field, value, message):
    refused(lambda: t2a(client, "a ball", **{field: value}), message)


def test_unset_settings_are_the_models_recommendation(client):
    """Issue #28: None means the model's own setting, in the demo as in the CLI and the Python API (the
    embedded default recommends one step at ω 1.5, scaled guidance)."""
    _, _, info, _ = t2a(client, "a ball", steps=None, cfg_strength=None, guidance=None)
    assert "1 step ·" in info and "ω = 1.5" in info


@pytest.mark.parametrize("model", ["nope", "../../etc/passwd", None, ["random"], "m" * 10_000])
def test_an_unknown_model_is_refused(client, model):
    refused(
        lambda: client.predict("a ball", *T2A_DEFAULTS.values(), False, model, api_name="/text_to_audio"),
        r"the model .* is not offered by this demo; choose one of \['random', 'same'\]",
    )


# ------------------------------------------------------------------------------------------ video payloads
UPLOAD_IT = r"upload the file with handle_file\(path\)"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (None, "no video"),
        # what is not a file object is answered before Gradio's own checks (whose refusal is empty)
        ("", f"this is not a file: {UPLOAD_IT}"),
        (12, f"this is not a file: {UPLOAD_IT}"),
        ({"path": "/etc/passwd"}, f"this is not a file: {UPLOAD_IT}"),
        ({"video": {"path": "/etc/hostname"}}, f"this is not a file: {UPLOAD_IT}"),
        (
            # gradio_client uploads a local file named in a file object: then it is not a video
            {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
            f"the file 'passwd' was not uploaded to this demo; {UPLOAD_IT}|cannot read passwd: the file is "
            "corrupt",
        ),
        ("/nonexistent/clip.mp4", f"a plain string is not a file: {UPLOAD_IT}"),
        ("x" * 10_000, f"a plain string is not a file: {UPLOAD_IT}"),
        # issue #27: URLs (Gradio would fetch them on the caller's behalf)
        ("https://example.com/clip.mp4", f"URLs are not fetched: {UPLOAD_IT}"),
        (handle_file("https://example.com/clip.mp4"), f"URLs are not fetched: {UPLOAD_IT}"),
        ({"path": "http://127.0.0.1:9/x.mp4", "meta": {"_type": "gradio.FileData"}}, "URLs are not fetched"),
    ],
    ids=[
        "none",
        "empty",
        "int",
        "etc-passwd",
        "nested",
        "etc-passwd-filedata",
        "missing",
        "long",
        "url",
        "url-handle-file",
        "url-filedata",
    ],
)
def test_a_hostile_video_payload_is_refused(client, payload, message):
    refused(lambda: v2a(client, payload), message)


def test_a_local_path_as_a_plain_string_says_to_use_handle_file(client, small_clip):
    """Issue #27: gradio_client sends a str as text; Gradio's refusal of it was empty."""
    refused(
        lambda: v2a(client, str(small_clip)),
        f"^1 parameter.*\n- video: a plain string is not a file: {UPLOAD_IT}$",
    )


def test_an_example_clip_by_its_server_path_says_how_to_send_it(client):
    from mfmjt.demo.models import ModelCard

    example = ModelCard.read("default").videos[0][0]
    refused(lambda: v2a(client, example), r'send this example clip as \{"path": <its path>')
    # sent as a file object with that path, as the message says, it is used
    standard, scaled, wavs, info, _ = v2a(client, {"path": example, "meta": {"_type": "gradio.FileData"}})
    assert len(wavs) == 2 and probe(video_path(standard))["audio"]


def test_a_server_path_in_a_raw_api_call_is_refused_with_a_sentence(client, clips):
    """What a remote caller can send (gradio_client would upload a local file of that name instead)."""
    import httpx

    secret = write_clip(clips / "server_side.mp4", 1.0)
    payload = [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, *V2A_DEFAULTS.values(), "random"]
    app_url = client.src.rstrip("/")
    fn_index = next(i for i, fn in client_demo().fns.items() if fn.api_name == "video_to_audio")
    answers = [
        httpx.post(
            f"{app_url}/gradio_api/queue/join",
            json={"data": payload, "fn_index": fn_index, "session_hash": "hostile1", "trigger_id": None},
            timeout=30,
        ),
        httpx.post(f"{app_url}/gradio_api/call/video_to_audio", json={"data": payload}, timeout=30),
    ]
    for answer in answers:
        assert answer.status_code == 422  # Gradio's answer to input that fails validation
        (detail,) = answer.json()["detail"]
        assert detail["parameter_name"] == "video"
        expected = (
            "the file 'server_side.mp4' was not uploaded to this demo; upload the file with handle_file(path)"
        )
        assert detail["message"] == expected


# ------------------------------------------------------------------------------------------ video files
def _write(
    path: Path,
    frames: list[np.ndarray],
    fps: float,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict | None = None,
) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = pix_fmt
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _frames(n: int, width: int, height: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, : max(1, (i * 7) % width)] = (200, 40, 40)
        out.append(image)
    return out


def hostile_file(tmp: Path, kind: str) -> Path:
    if kind == "empty":
        (tmp / "empty.mp4").write_bytes(b"")
        return tmp / "empty.mp4"
    if kind == "random bytes":
        (tmp / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
        return tmp / "random.mp4"
    if kind == "text as mp4":
        (tmp / "text.mp4").write_text("this is not a video\n" * 100)
        return tmp / "text.mp4"
    if kind == "audio only":
        sf.write(tmp / "tone.wav", np.zeros(16000, np.float32), 16000)
        return tmp / "tone.wav"
    if kind == "truncated":
        whole = write_clip(tmp / "whole.mp4", 2.0).read_bytes()
        (tmp / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
        return tmp / "truncated.mp4"
    if kind == "1x1":
        return _write(tmp / "one.mkv", _frames(25, 1, 1), 25, codec="ffv1", pix_fmt="yuv444p")
    if kind == "1x64":
        return _write(tmp / "thin.mov", _frames(25, 1, 64), 25, codec="png", pix_fmt="rgb24")
    if kind == "8192x8192":  # a few hundred KB that would take minutes to decode at 25 fps
        return _write(tmp / "huge.mkv", _frames(1, 8192, 8192), 25, codec="ffv1", pix_fmt="yuv420p")
    if kind == "8200x16":
        return _write(tmp / "wide.mkv", _frames(2, 8200, 16), 25, codec="ffv1", pix_fmt="yuv420p")
    if kind == "4k at 240 fps":
        return _write(tmp / "fast4k.mkv", _frames(2, 4096, 2160), 240, codec="ffv1", pix_fmt="yuv420p")
    if kind == "one frame":
        return _write(tmp / "single.mp4", _frames(1, 64, 48), 25)
    if kind == "too large to upload":
        path = tmp / "big.mp4"
        path.write_bytes(write_clip(tmp / "seed.mp4", 1.0).read_bytes() + b"\0" * 3_000_000)
        return path
    raise ValueError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", r"empty \(0 bytes\)"),
        ("random bytes", "corrupt or not a supported media format"),
        ("text as mp4", "corrupt or not a supported media format"),
        ("audio only", "has no video stream"),
        ("truncated", "corrupt|no video frames|too short|not a supported"),
        ("1x1", r"1x1 pixels; a video needs at least 2x2 pixels"),
        ("1x64", r"1x64 pixels; a video needs at least 2x2"),
        ("8192x8192", r"8192x8192 pixels; videos up to .* megapixels"),
        ("8200x16", r"8200x16 pixels"),
        ("4k at 240 fps", r"4096x2160 pixels at 240 fps, too much to decode"),
        ("one frame", "too short"),
    ],
)
def test_a_hostile_file_is_refused_quickly_with_its_reason(client, clips, kind, message):
    path = hostile_file(clips, kind)
    refused(lambda: v2a(client, path), message)


def test_an_upload_over_the_size_limit_is_refused(client, clips):
    with pytest.raises(Exception, match="(?i)size|large|exceed"):
        v2a(client, hostile_file(clips, "too large to upload"))


# ------------------------------------------------------------------------------------------ timing
def audio_seconds(outputs: tuple) -> tuple[float, float]:
    """(mp4 audio stream seconds, wav seconds) of a video_to_audio answer's first result."""
    mp4 = video_path(outputs[0] or outputs[1])
    wav, rate = sf.read(outputs[2][0])
    return probe(mp4)["audio"][0], len(wav) / rate


def _gif(path: Path, seconds: float, fps: int) -> Path:
    with av.open(str(path), "w", format="gif") as out:
        stream = out.add_stream("gif", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb8"
        for image in _frames(round(seconds * fps), 64, 48):
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="rgb8")
            ):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _size_change(path: Path) -> Path:
    """2 s at 160x120 then 2 s at 96x64 in one H.264 stream (joined by ffmpeg's concat demuxer)."""
    import subprocess

    import imageio_ffmpeg

    parts = []
    for i, (w, h) in enumerate([(160, 120), (96, 64)]):
        parts.append(_write(path.with_name(f"part{i}.ts"), _frames(50, w, h), 25))
    listing = path.with_name("parts.txt")
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-c",
            "copy",
            str(path),
        ],
        check=True,
    )
    return path


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("1 fps, 4 s", 4.0),
        ("gif, 3 s at 10 fps", 3.0),
        ("size change, 2 s + 2 s", 4.0),
        ("odd size 33x17", 2.0),
    ],
)
def test_unusual_clips_get_audio_for_their_whole_length(client, clips, kind, expected):
    if kind.startswith("1 fps"):
        clip = _write(clips / "slow.mp4", _frames(4, 64, 48), 1)
    elif kind.startswith("gif"):
        clip = _gif(clips / "anim.gif", 3.0, 10)
    elif kind.startswith("size"):
        clip = _size_change(clips / "sizes.ts")
    else:
        clip = _write(clips / "odd.mkv", _frames(50, 33, 17), 25, codec="ffv1", pix_fmt="yuv444p")
    start = time.perf_counter()
    outputs = v2a(client, clip, guidance="scaled")
    assert time.perf_counter() - start < ANSWER_WITHIN_S
    mp4_audio, wav = audio_seconds(outputs)
    assert wav == pytest.approx(expected, abs=0.041)  # within one 25 fps sync frame
    assert mp4_audio == pytest.approx(expected, abs=0.07)  # plus one AAC frame
    assert "⚠️" not in outputs[3]  # nothing was cut


def test_the_info_never_leaks_the_server_paths(client, small_clip):
    outputs = v2a(client, small_clip)
    assert "/tmp" not in outputs[3] and "gradio" not in outputs[3]


# ------------------------------------------------------------------------------------------ isolation
RED, BLUE = (220, 30, 30), (30, 30, 220)


def solid_clip(path: Path, codec: str, colour: tuple[int, int, int], seconds: float = 1.6) -> Path:
    """A clip of one colour; webm/avi/mkv codecs all need a re-encoded H.264 track."""

    def paint(i: int, w: int, h: int) -> np.ndarray:
        return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()

    return write_video(path, cfr(25, seconds), (64, 48), codec, 25, painter=paint)


def picture_colour(mp4: str) -> np.ndarray:
    """The mean RGB of the middle frame of an mp4's video stream."""
    import av

    with av.open(mp4) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return frames[len(frames) // 2].reshape(-1, 3).mean(axis=0)


def mp4_audio(mp4: str) -> np.ndarray:
    import av

    with av.open(mp4) as container:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])


def misfit(mp4: np.ndarray, wave: np.ndarray) -> float:
    """How far an mp4's decoded AAC audio is from ``wave``: the relative RMS error of the best alignment
    within ±2048 samples (the encoder's delay), both without their mean."""
    n = min(len(mp4), len(wave)) - 2048
    a, b = mp4 - mp4.mean(), wave - wave.mean()
    errors = [
        np.linalg.norm(x - y) / (np.linalg.norm(y) + 1e-12)
        for lag in range(0, 2049, 8)
        for x, y in ((a[lag : lag + n], b[:n]), (a[:n], b[lag : lag + n]))
    ]
    return float(min(errors))


def test_two_sessions_with_same_length_clips_each_get_their_own_picture_and_audio(client, tmp_path):
    """Issue #27: the re-encoded track was cached under its duration alone, so a second user's clip of
    the same length replaced the first user's picture in their next Generate or remix."""
    red = solid_clip(tmp_path / "red.webm", "libvpx-vp9", RED)
    blue = solid_clip(tmp_path / "blue.avi", "mpeg4", BLUE)
    other = Client(client.src, verbose=False, analytics_enabled=False, download_files=str(tmp_path / "b"))
    sessions = {"red": (client, red, RED, 21), "blue": (other, blue, BLUE, 22)}
    answers: dict[str, list] = {"red": [], "blue": []}
    for turn in ("red", "blue", "red", "blue"):
        session, clip, _, seed = sessions[turn]
        answers[turn].append(v2a(session, clip, guidance="scaled", seed=seed))
        answers[turn].append(session.predict(2.5, "scaled", 1, api_name="/remix_v2a"))  # the ω release
    wavs = {turn: sf.read(answers[turn][0][2][0])[0] for turn in answers}
    for turn, (_, _, colour, _) in sessions.items():
        first, remix, again, remix_again = answers[turn]
        np.testing.assert_array_equal(sf.read(again[2][0])[0], wavs[turn])  # the same request: same audio
        assert "live remix" in remix[3] and "live remix" in remix_again[3]
        for answer in (first, remix, again, remix_again):
            mp4 = video_path(answer[1])
            assert np.abs(picture_colour(mp4) - colour).max() < 40, (turn, picture_colour(mp4))
            own = sf.read(answer[2][0])[0]
            theirs = wavs["blue" if turn == "red" else "red"]
            audio = mp4_audio(mp4)
            assert misfit(audio, own) < 0.3 < misfit(audio, theirs)


# ------------------------------------------------------------------------------------------ heavy inputs
def test_a_small_request_does_not_wait_for_a_heavy_clip_to_decode(client, clips, monkeypatch):
    """Issue #27: decoding happens outside the one generation slot, so a request queued behind a heavy
    upload is not held for that upload's decoding (held here until the small request is answered)."""
    import threading

    from mfmjt import media

    original, started, release = media.decode_video, threading.Event(), threading.Event()

    def held_decode(path, *args, **kwargs):
        if Path(path).name == "heavy.mp4":
            started.set()
            release.wait(120)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(media, "decode_video", held_decode)
    heavy = write_clip(clips / "heavy.mp4", 1.0, width=64, height=48, fps=25)
    job = client.submit(handle_file(str(heavy)), *V2A_DEFAULTS.values(), "random", api_name="/video_to_audio")
    try:
        assert started.wait(60)
        small = client.submit("a ball", *T2A_DEFAULTS.values(), False, "random", api_name="/text_to_audio")
        standard, scaled, info, _ = small.result(timeout=60)  # answered while the heavy one decodes
        assert len(sf.read(standard)[0]) == 16000 and not job.done()
    finally:
        release.set()
    assert len(job.result(timeout=120)[2]) == 2


# ------------------------------------------------------------------------------------------ stopping
def test_sigterm_removes_the_apps_folder_and_its_gradio_cache(tmp_path):
    """Issue #27: SIGTERM (how Spaces, docker and systemd stop a service) left the app's folder and
    Gradio's cache files behind. ``python app.py`` serves the embedded model with $TMPDIR in tmp_path."""
    import signal
    import socket
    import subprocess
    import urllib.request

    server_tmp = tmp_path / "server"
    dead = server_tmp / "mfmjt_app" / "999999999-0123abcd" / "_gradio" / "f00d"  # a killed instance's
    dead.mkdir(parents=True)
    (dead / "upload.mp4").write_bytes(b"left behind")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(server_tmp), "PORT": str(port), "MFMJT_APP_BUILD": "1"}
    for name in ("GRADIO_TEMP_DIR", "MFMJT_TEMP_DIR", "MFMJT_MODEL", "MFMJT_ALLOWED_MODELS"):
        env.pop(name, None)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
                break
            except OSError:
                time.sleep(0.3)
        assert not (server_tmp / "mfmjt_app" / "999999999-0123abcd").exists()  # removed at start
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "client"))
        clip = write_clip(tmp_path / "clip.mp4", 1.0, width=64, height=48, fps=25)
        standard, scaled, wavs, _, _ = client.predict(
            video=handle_file(str(clip)), api_name="/video_to_audio"
        )
        (instance,) = (server_tmp / "mfmjt_app").iterdir()
        cached = {p.name for p in (instance / "_gradio").rglob("*") if p.is_file()}
        assert {"clip.mp4", Path(standard).name, Path(wavs[0]).name} <= cached  # the upload and outputs
        assert not (server_tmp / "gradio").exists()  # nothing in Gradio's default folder
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list((server_tmp / "mfmjt_app").iterdir()) == []
    assert not (server_tmp / "gradio").exists()


# ------------------------------------------------------------------------------------------ still alive
def test_the_server_still_serves_normal_requests_after_all_that(client, small_clip):
    standard, scaled, wavs, info, seed = v2a(client, small_clip, guidance="both", seed=7)
    assert seed == 7 and len(wavs) == 2
    for mp4 in (video_path(standard), video_path(scaled)):
        streams = probe(mp4)
        assert streams["video"] and streams["audio"]
    out = t2a(client, "a ball", duration=1.5)
    assert len(sf.read(out[0])[0]) == 24000
    json.dumps(info)  # plain text
