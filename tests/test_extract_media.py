"""``mfmjt extract --videos/--audios``: real files in, feature store out, resumable and sharded."""

from __future__ import annotations

import errno
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import tone, write_mp4, write_tsv
from stacks import small_random_pipeline

from mfmjt import media
from mfmjt.cli import main
from mfmjt.data import parts
from mfmjt.data.extract_media import (
    ExtractMediaConfig,
    extract_media,
    extract_shard,
    finalize_store,
)
from mfmjt.data.feature_stacks import resolve_feature_stack
from mfmjt.data.mmaudio_store import MMAudioStore
from mfmjt.data.sources import window_starts
from mfmjt.data.tsv import TsvError, read_caption_tsv
from mfmjt.feature_store import FeatureStore
from mfmjt.features.base import FeatureStack

DURATION = 1.0  # seconds per item: 8 CLIP frames, 25 sync frames, 16384 samples at 16 kHz
SAMPLES = 16384


# ------------------------------------------------------------------------------- test inputs


@pytest.fixture(scope="module")
def video_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three usable videos and one of every kind of bad row."""
    root = tmp_path_factory.mktemp("videos")
    d = root / "videos"
    d.mkdir()
    write_mp4(d / "dog.mp4", 1.5, tone(1.5, 22050, 440), seed=1)
    write_mp4(d / "cat.mkv", 1.5, tone(1.5, 22050, 880, 0.1), seed=2)
    write_mp4(d / "car.mov", 1.6, tone(1.6, 22050, 220), seed=3)
    write_mp4(d / "quiet.mp4", 1.5, np.zeros(33075, np.float32), seed=4)
    write_mp4(d / "short.mp4", 0.5, tone(0.5, 22050, 440), seed=5)
    write_mp4(d / "mute.mp4", 1.5, None, seed=6)
    (d / "broken.mp4").write_bytes(b"this is not a video at all" * 40)
    (d / "notes.txt").write_text("ignored")
    rows = [
        ("dog", "dog barking"),
        ("quiet", "nothing"),
        ("cat", "cat meowing"),
        ("lost", "no such file"),
        ("short", "too brief"),
        ("broken", "garbage"),
        ("mute", "no sound track"),
        ("car", "engine"),
    ]
    return d, write_tsv(root / "vgg.tsv", "id\tlabel", rows)


VIDEO_FAILURES = {
    "quiet": "silent",
    "lost": "missing file",
    "short": "too short",
    "broken": "unreadable",
    "mute": "no audio track",
}


@pytest.fixture(scope="module")
def audio_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("audios")
    d = root / "audios"
    d.mkdir()
    sf.write(d / "long.wav", tone(3.5, 16000, 300), 16000)  # 3 windows of 1.1 s
    sf.write(d / "stereo.flac", np.stack([tone(1.3, 44100, 500), tone(1.3, 44100, 700)], 1), 44100)
    sf.write(d / "brief.wav", tone(0.8, 16000, 300), 16000)
    sf.write(d / "hush.wav", np.zeros(32000, np.float32), 16000)
    rows = [("long", "a hum"), ("brief", "short"), ("hush", "silence"), ("stereo", "two tones")]
    return d, write_tsv(root / "captions.tsv", "id\tcaption", rows)


class CountingStack:
    """The small random stack with call counters on every encoder."""

    def __init__(self, stack: FeatureStack) -> None:
        self.inner = stack
        self.calls = {"clip": 0, "sync": 0, "text": 0, "codec": 0}
        self.encoded_clips = 0
        self.fail_at: int | None = None  # codec call number that raises (a simulated kill)
        outer = self

        class Wrap:
            def __init__(self, name: str, module: object) -> None:
                self.name, self.module = name, module
                self.dim = getattr(module, "dim", None)
                self.sample_rate = getattr(module, "sample_rate", None)
                self.latent_dim = getattr(module, "latent_dim", None)

            def __call__(self, x):
                outer.calls[self.name] += 1
                return self.module(x)

            def encode(self, wave):
                outer.calls["codec"] += 1
                if outer.fail_at is not None and outer.calls["codec"] >= outer.fail_at:
                    raise KeyboardInterrupt("simulated kill")
                outer.encoded_clips += len(wave)
                return self.module.encode(wave)

        self.stack = FeatureStack(
            Wrap("clip", stack.clip),
            Wrap("sync", stack.sync),
            Wrap("text", stack.text),
            Wrap("codec", stack.codec),
        )


@pytest.fixture(scope="module")
def random_stack() -> FeatureStack:
    return small_random_pipeline().features


def config(out: Path, tsv: Path, **kw) -> ExtractMediaConfig:
    defaults = dict(
        duration=DURATION, batch_size=2, workers=0, device="cpu", precision="fp32", progress=False
    )
    return ExtractMediaConfig(out=out, tsv=tsv, **{**defaults, **kw})


def read_failed(store: Path) -> dict[str, str]:
    lines = (store / "failed.tsv").read_text().splitlines()
    assert lines[0] == "id\treason\tdetail"
    return {line.split("\t")[0]: line.split("\t")[1] for line in lines[1:]}


def arrays(store: Path) -> dict[str, np.ndarray]:
    s = FeatureStore(store)
    names = ("latent_mean", "latent_std", "clip_f", "sync_f", "text_f", "has_video")
    return {n: np.asarray(s.array(n)) for n in names} | {"ids": np.array(s.ids)}


# ------------------------------------------------------------------------------------ tables
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"id\tname\nx\ty\n", "line 1: the header ['id', 'name'] has no 'label' or 'caption' column"),
        (b"name\tlabel\nx\ty\n", "line 1: the header ['name', 'label'] has no 'id' column"),
        (b"id\tlabel\na\tone\nb\ttwo\na\tthree\n", "line 4: id 'a' repeats line 2"),
        (b"id\tlabel\na\tone\nb\xff\xfe\ttwo\n", "line 3: the text is not valid UTF-8"),
        (b"id\tlabel\na\tone\nb\n", "line 3: 1 field(s), expected at least 2"),
        (b"id\tlabel\n\tempty id\n", "line 2: the id is empty"),
        (b"", "is empty"),
    ],
)
def test_bad_tables_are_refused_with_the_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "t.tsv"
    path.write_bytes(content)
    with pytest.raises(TsvError, match=re.escape(message)):
        read_caption_tsv(path)


def test_table_columns_and_quoting(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_bytes('\ufeffid\tcaption\textra\n1\t"a, b"\tz\n\n2\tcafé\t\n'.encode())
    rows = read_caption_tsv(path)
    assert [(r.id, r.caption, r.line) for r in rows] == [("1", "a, b", 2), ("2", "café", 4)]


def test_window_starts_follow_mmaudio_partition() -> None:
    # 3.5 s at 16 kHz, 1.1 s windows: 3 windows, the last one ending at the file's end
    assert window_starts(56000, 17600) == [0, 19200, 38400]
    assert window_starts(17599, 17600) == []
    assert window_starts(17600, 17600) == [0]
    starts = window_starts(100 * 17600, 17600)  # capped at 5, evenly spread over the whole file
    assert len(starts) == 5 and starts[0] == 0 and starts[-1] + 17600 <= 100 * 17600
    assert starts[-1] + 17600 > 100 * 17600 - 4


# ---------------------------------------------------------------------------- end to end
def reference_video_features(stack: FeatureStack, path: Path, caption: str) -> dict[str, np.ndarray]:
    """One clip encoded directly, without the extractor: decode, normalise the peak, cut, encode."""
    decoded = media.decode_video(path, DURATION)
    audio = media.read_audio(path, 16000)
    audio = audio / np.abs(audio).max() * 0.95
    with torch.inference_mode():
        mean, std = stack.codec.encode(torch.from_numpy(audio[:SAMPLES].astype(np.float32))[None])
        return {
            "latent_mean": mean[0].numpy(),
            "latent_std": std[0].numpy(),
            "clip_f": stack.clip(decoded.clip_frames[None])[0].numpy(),
            "sync_f": stack.sync(decoded.sync_frames[None])[0].numpy(),
            "text_f": stack.text([caption])[0].numpy(),
        }


def test_video_set_end_to_end(
    tmp_path: Path, video_set: tuple[Path, Path], random_stack: FeatureStack
) -> None:
    videos, tsv = video_set
    out = tmp_path / "store"
    summary = extract_media(config(out, tsv, videos=videos, workers=2), random_stack)
    assert summary.items == 3 and summary.rows_ok == 3
    assert summary.failed == {
        "missing file": 1,
        "silent": 1,
        "too short": 1,
        "unreadable": 1,
        "no audio track": 1,
    }

    store = FeatureStore(out)
    assert store.ids == ["dog", "cat", "car"]  # table order
    assert store.captions == ["dog barking", "cat meowing", "engine"]
    assert store.duration == DURATION
    assert store.shapes["clip_f"] == (8, 32) and store.shapes["sync_f"] == (16, 48)
    assert store.shapes["latent_mean"] == (32, 20)
    assert bool(np.all(store.array("has_video")))
    assert read_failed(out) == VIDEO_FAILURES
    assert not (out / ".partial").exists()

    for i, (name, caption) in enumerate([("dog.mp4", "dog barking"), ("car.mov", "engine")]):
        ref = reference_video_features(random_stack, videos / name, caption)
        item = store[2 * i]
        for key, value in ref.items():
            np.testing.assert_allclose(item[key].numpy(), value, rtol=1e-4, atol=2e-5, err_msg=key)
    with torch.inference_mode():
        empty = random_stack.text([""])[0]
    torch.testing.assert_close(store.empty_text_features(), empty)


def test_audio_set_end_to_end(
    tmp_path: Path, audio_set: tuple[Path, Path], random_stack: FeatureStack
) -> None:
    audios, tsv = audio_set
    out = tmp_path / "store"
    extract_media(config(out, tsv, audios=audios, batch_size=3, keep_parts=True), random_stack)
    kept = sorted(p.name for p in (out / ".partial" / "parts" / "r0").glob("chunk-*/*.npy"))
    assert kept == ["latent_mean.npy", "latent_std.npy", "text_f.npy"]  # no zero video features on disk
    store = FeatureStore(out)
    assert store.ids == ["long_0", "long_1", "long_2", "stereo_0"]
    assert store.captions == ["a hum"] * 3 + ["two tones"]
    assert not np.any(store.array("has_video"))
    assert not np.any(store.array("clip_f")) and not np.any(store.array("sync_f"))
    assert read_failed(out) == {"brief": "too short", "hush": "silent"}

    # clip 1 of long.wav: the window starting at 19200 samples, peak-normalised over the file
    wave = sf.read(audios / "long.wav", dtype="float32")[0]
    wave = wave / np.abs(wave).max() * 0.95
    with torch.inference_mode():
        mean, std = random_stack.codec.encode(torch.from_numpy(wave[19200 : 19200 + SAMPLES])[None])
        text = random_stack.text(["a hum"])
    item = store[1]
    np.testing.assert_allclose(item["latent_mean"].numpy(), mean[0].numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(item["latent_std"].numpy(), std[0].numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(item["text_f"].numpy(), text[0].numpy(), rtol=1e-4, atol=2e-5)


@pytest.fixture(scope="module")
def video_reference(
    tmp_path_factory: pytest.TempPathFactory, video_set: tuple[Path, Path], random_stack: FeatureStack
) -> dict[str, np.ndarray]:
    """The store of one uninterrupted single-process run (one clip per batch: the other runs compare
    bit for bit, and batch composition changes the last bits of the encoders' float arithmetic)."""
    out = tmp_path_factory.mktemp("ref") / "store"
    videos, tsv = video_set
    extract_media(config(out, tsv, videos=videos, batch_size=1), random_stack)
    return arrays(out)


def assert_same_store(out: Path, reference: dict[str, np.ndarray]) -> None:
    got = arrays(out)
    assert got["ids"].tolist() == reference["ids"].tolist()
    for key, value in reference.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_resume_after_a_kill_extracts_nothing_twice(
    tmp_path: Path,
    video_set: tuple[Path, Path],
    random_stack: FeatureStack,
    video_reference: dict[str, np.ndarray],
) -> None:
    videos, tsv = video_set
    out = tmp_path / "store"
    cfg = config(out, tsv, videos=videos, batch_size=1, chunk_items=1)
    counting = CountingStack(random_stack)
    counting.fail_at = 3  # killed while encoding the third usable video
    with pytest.raises(KeyboardInterrupt):
        extract_media(cfg, counting.stack)
    assert counting.encoded_clips == 2
    assert not (out / "meta.json").exists() and (out / ".partial").is_dir()

    again = CountingStack(random_stack)
    summary = extract_media(cfg, again.stack)
    assert again.encoded_clips == 1 and again.calls["clip"] == 1  # only "car" was left
    assert summary.skipped == 7  # two videos and five failures were committed before the kill
    assert_same_store(out, video_reference)

    third = CountingStack(random_stack)
    extract_media(cfg, third.stack)  # a finished store: nothing to do
    assert third.calls == {"clip": 0, "sync": 0, "text": 0, "codec": 0}


def test_full_disk_leaves_a_store_the_next_run_resumes(
    tmp_path: Path,
    video_set: tuple[Path, Path],
    random_stack: FeatureStack,
    video_reference: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    videos, tsv = video_set
    out = tmp_path / "store"
    cfg = config(out, tsv, videos=videos, batch_size=1, chunk_items=1)
    real_save = parts.save_array
    saved: list[Path] = []

    def filling_disk(path: Path, array: np.ndarray) -> None:
        if len(saved) >= 7:  # the second chunk's arrays do not fit
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        saved.append(path)
        real_save(path, array)

    monkeypatch.setattr(parts, "save_array", filling_disk)
    first = CountingStack(random_stack)
    with pytest.raises(OSError, match="No space left"):
        extract_media(cfg, first.stack)
    assert not list((out / ".partial" / "parts").rglob("*.tmp"))  # no half-written chunk left

    monkeypatch.setattr(parts, "save_array", real_save)
    second = CountingStack(random_stack)
    extract_media(cfg, second.stack)
    assert first.encoded_clips + second.encoded_clips == 3 + 1  # only the lost chunk's item again
    assert_same_store(out, video_reference)


def test_sharded_ranks_then_merge_equal_one_process(
    tmp_path: Path,
    video_set: tuple[Path, Path],
    random_stack: FeatureStack,
    video_reference: dict[str, np.ndarray],
) -> None:
    videos, tsv = video_set
    out = tmp_path / "store"
    cfg = config(out, tsv, videos=videos, batch_size=1)
    counted = []
    for rank in (1, 0):  # order does not matter
        stack = CountingStack(random_stack)
        extract_shard(cfg, stack.stack, rank=rank, world_size=2)
        counted.append(stack.encoded_clips)
    assert counted == [1, 2]  # rows 1,3,5,7 hold "car"; rows 0,2,4,6 hold "dog" and "cat"
    assert sorted(p.name for p in (out / ".partial" / "parts").iterdir()) == ["r0", "r1"]
    finalize_store(cfg, random_stack)
    assert_same_store(out, video_reference)
    assert read_failed(out) == VIDEO_FAILURES


def test_merge_refuses_while_a_shard_is_missing(
    tmp_path: Path, video_set: tuple[Path, Path], random_stack: FeatureStack
) -> None:
    videos, tsv = video_set
    cfg = config(tmp_path / "store", tsv, videos=videos)
    extract_shard(cfg, random_stack, rank=0, world_size=2)
    with pytest.raises(RuntimeError, match="4 rows are not extracted yet"):
        finalize_store(cfg, random_stack)


def test_resume_with_other_settings_is_refused(
    tmp_path: Path, video_set: tuple[Path, Path], random_stack: FeatureStack
) -> None:
    videos, tsv = video_set
    out = tmp_path / "store"
    extract_shard(config(out, tsv, videos=videos), random_stack, rank=0, world_size=2)
    with pytest.raises(ValueError, match="duration: 1.0 then, 1.2 now"):
        extract_shard(config(out, tsv, videos=videos, duration=1.2), random_stack, rank=1, world_size=2)


def test_mmaudio_layout_holds_the_same_items(
    tmp_path: Path,
    video_set: tuple[Path, Path],
    audio_set: tuple[Path, Path],
    random_stack: FeatureStack,
    video_reference: dict[str, np.ndarray],
) -> None:
    videos, tsv = video_set
    out = tmp_path / "vgg-train"
    extract_media(config(out, tsv, videos=videos, batch_size=1, layout="mmaudio"), random_stack)
    assert (tmp_path / "vgg-train.tsv").read_text().splitlines() == [
        "id\tlabel",
        "dog\tdog barking",
        "cat\tcat meowing",
        "car\tengine",
    ]
    assert read_failed(out) == VIDEO_FAILURES
    assert not (tmp_path / "vgg-train.partial").exists()
    store = MMAudioStore(out)
    batch = store.get_batch([0, 1, 2])
    for key in ("latent_mean", "latent_std", "clip_f", "sync_f", "text_f"):
        np.testing.assert_array_equal(batch[key].numpy(), video_reference[key], err_msg=key)

    audios, captions = audio_set
    out = tmp_path / "audiocaps"
    extract_media(config(out, captions, audios=audios, layout="mmaudio"), random_stack)
    store = MMAudioStore(out)
    assert store.ids == ["long_0", "long_1", "long_2", "stereo_0"] and not store.has_video
    assert not (out / "clip_features.memmap").exists()
    assert (tmp_path / "audiocaps.tsv").read_text().startswith("id\tcaption\nlong_0\ta hum\n")


def test_bf16_autocast_changes_the_encoders_but_not_the_vae(
    tmp_path: Path,
    video_set: tuple[Path, Path],
    random_stack: FeatureStack,
    video_reference: dict[str, np.ndarray],
) -> None:
    videos, tsv = video_set
    out = tmp_path / "store"
    extract_media(config(out, tsv, videos=videos, batch_size=1, precision="bf16"), random_stack)
    got = arrays(out)
    for key in ("latent_mean", "latent_std"):  # MMAudio keeps the VAE in float32
        np.testing.assert_array_equal(got[key], video_reference[key], err_msg=key)
    for key in ("clip_f", "sync_f", "text_f"):  # bfloat16 arithmetic: close, not equal
        assert not np.array_equal(got[key], video_reference[key]), key
        np.testing.assert_allclose(got[key], video_reference[key], atol=0.1, err_msg=key)


def test_retry_failed_reads_only_the_failed_rows_again(
    tmp_path: Path, video_set: tuple[Path, Path], random_stack: FeatureStack
) -> None:
    videos, tsv = video_set
    folder = tmp_path / "videos"
    folder.mkdir()
    for f in videos.iterdir():
        (folder / f.name).symlink_to(f)
    out = tmp_path / "store"
    extract_media(config(out, tsv, videos=folder, keep_parts=True), random_stack)
    assert FeatureStore(out).ids == ["dog", "cat", "car"]
    write_mp4(folder / "lost.mp4", 1.5, tone(1.5, 22050, 660), seed=7)  # the missing file turns up

    again = CountingStack(random_stack)
    extract_media(config(out, tsv, videos=folder, retry_failed=True), again.stack)
    assert again.encoded_clips == 1  # "lost"; the five failed rows were read again, the rest not
    assert FeatureStore(out).ids == ["dog", "cat", "lost", "car"]
    assert read_failed(out) == {k: v for k, v in VIDEO_FAILURES.items() if k != "lost"}
    assert not (out / ".partial").exists()


def test_a_folder_that_is_not_an_extraction_is_not_touched(
    tmp_path: Path, video_set: tuple[Path, Path], random_stack: FeatureStack
) -> None:
    videos, tsv = video_set
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="exists and is not empty"):
        extract_media(config(out, tsv, videos=videos), random_stack)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


# ------------------------------------------------------------------------------------- CLI
def test_cli_with_a_model_directory_stack(
    tmp_path: Path, video_set: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    videos, tsv = video_set
    out = tmp_path / "store"
    argv = ["extract", "--videos", str(videos), "--tsv", str(tsv), "--out", str(out)]
    code = main([*argv, "--features", "default", "--duration", "1", "--workers", "0", "--device", "cpu"])
    assert code == 0
    store = FeatureStore(out)
    assert store.ids == ["dog", "cat", "car"]
    assert store.extra["features"]["kind"] == "offline"
    assert (out / "codec.safetensors").is_file()  # the store carries the stack training exports
    # the embedded model's own stack on the same clip gives the stored features
    stack = resolve_feature_stack("default").stack
    with torch.inference_mode():
        clip_ref = stack.clip(media.decode_video(videos / "cat.mkv", 1.0).clip_frames[None])[0]
    np.testing.assert_allclose(store[1]["clip_f"].numpy(), clip_ref.numpy(), rtol=1e-5, atol=1e-6)

    bad = tmp_path / "bad.tsv"
    bad.write_text("id\tlabel\ndog\tx\ndog\ty\n")
    code = main(["extract", "--videos", str(videos), "--tsv", str(bad), "--out", str(tmp_path / "s2")])
    assert code == 2 and "line 3: id 'dog' repeats line 2" in capsys.readouterr().err


def test_unavailable_choices_say_so(
    tmp_path: Path, video_set: tuple[Path, Path], random_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mfmjt.hub import WeightsUnavailableError

    videos, tsv = video_set
    # the 44.1 kHz stack resolves through the hub: offline, with no files supplied, it names what is missing
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MFMJT_WEIGHTS_DIR", str(tmp_path / "no_weights"))
    monkeypatch.setenv("MFMJT_CACHE", str(tmp_path / "no_cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no_hf"))
    with pytest.raises(WeightsUnavailableError):
        resolve_feature_stack("mmaudio-44k")
    with pytest.raises(ValueError, match="unknown feature stack 'nope'"):
        resolve_feature_stack("nope")
    with pytest.raises(ValueError, match="exactly one of videos"):
        ExtractMediaConfig(out=tmp_path, tsv=tsv)


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(tmp_path: Path, video_set: tuple[Path, Path]) -> None:
    """Two real ranks (gloo barrier, CPU) write the same store as one process (about 40 s)."""
    import os
    import subprocess
    import sys

    videos, tsv = video_set
    common = ["--videos", str(videos), "--tsv", str(tsv), "--features", "default", "--duration", "1"]
    common += ["--workers", "0", "--device", "cpu", "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*run, "-m", "mfmjt", "extract", *common, "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["extract", *common, "--out", str(tmp_path / "one")]) == 0
    assert_same_store(tmp_path / "two", arrays(tmp_path / "one"))
    assert read_failed(tmp_path / "two") == VIDEO_FAILURES


def test_an_extraction_where_every_row_fails_writes_failed_tsv_and_says_why(tmp_path, random_stack):
    d = tmp_path / "videos"
    d.mkdir()
    write_mp4(d / "short.mp4", 0.5, tone(0.5, 22050, 440), seed=5)
    (d / "broken.mp4").write_bytes(b"this is not a video at all" * 40)
    tsv = write_tsv(tmp_path / "t.tsv", "id\tlabel", [("short", "a"), ("broken", "b"), ("lost", "c")])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"all 3 rows failed \((?=.*1 too short)(?=.*1 unreadable).*\)"):
        extract_media(config(out, tsv, videos=d), random_stack)
    assert read_failed(out) == {"short": "too short", "broken": "unreadable", "lost": "missing file"}


def test_a_clip_a_frame_short_is_logged_as_dropped_not_as_used_shorter(tmp_path, random_stack, caplog):
    d = tmp_path / "videos"
    d.mkdir()
    write_mp4(d / "nearly.mp4", 0.96, tone(1.5, 22050, 440), seed=1)  # 24 frames at 25 fps: 0.96 s
    write_mp4(d / "dog.mp4", 1.5, tone(1.5, 22050, 440), seed=2)
    tsv = write_tsv(tmp_path / "t.tsv", "id\tlabel", [("nearly", "a"), ("dog", "b")])
    with caplog.at_level(logging.INFO):
        extract_media(config(tmp_path / "out", tsv, videos=d), random_stack)
    assert read_failed(tmp_path / "out") == {"nearly": "too short"}
    assert not [r.getMessage() for r in caplog.records if "using 0.9" in r.getMessage()]


def test_media_files_are_found_by_id_whatever_their_extension(tmp_path, random_stack):
    d = tmp_path / "audios"
    d.mkdir()
    sf.write(d / "vorbis.oga", tone(1.3, 44100, 500), 44100, format="OGG", subtype="VORBIS")
    sf.write(d / "plain.wav", tone(1.3, 16000, 300), 16000)
    (d / "odd.dat").write_bytes(b"not audio" * 100)
    tsv = write_tsv(tmp_path / "c.tsv", "id\tcaption", [("vorbis", "a"), ("plain", "b"), ("odd", "c")])
    extract_media(config(tmp_path / "out", tsv, audios=d), random_stack)
    store = FeatureStore(tmp_path / "out")
    assert sorted(store.ids) == ["plain_0", "vorbis_0"]  # audio files give windows id_k
    assert read_failed(tmp_path / "out") == {"odd": "unreadable"}  # the decoder decides, not the suffix
