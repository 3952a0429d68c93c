"""Stores without audio: silent videos (``extract --videos --no-audio``) or prompts alone
(``extract --prompts``) -> ``distill`` from the teacher's own samples -> a model that generates.

The encoders are the small random stack of ``tests/stacks.py`` registered as ``mmaudio-16k``; the
teacher is a small random flow-matching network of the stack's feature sizes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tone, write_mp4, write_tsv
from stacks import randomize, small_random_pipeline

import mfmjt.sampler
from mfmjt import media
from mfmjt.cli import main
from mfmjt.data.feature_stacks import ResolvedStack
from mfmjt.feature_store import FeatureStore
from mfmjt.features import registry
from mfmjt.model import MFMJTNetwork, NetworkConfig
from mfmjt.model_dir import read_metadata, save_network
from mfmjt.pipeline import load_pipeline

DURATION = 1.0  # 8 CLIP frames, 16 sync tokens, 32 latents at 16 kHz
TEACHER = dict(clip_dim=32, sync_dim=48, text_dim=32, hidden_dim=32, depth=2, fused_depth=1, num_heads=2)
REFUSAL = "has no audio latents: use mfmjt distill, whose teacher makes them"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_stack(monkeypatch: pytest.MonkeyPatch) -> ResolvedStack:
    """The small random stack under the name ``mmaudio-16k`` (extraction and exported models)."""
    resolved = ResolvedStack("mmaudio-16k", small_random_pipeline().features, {"kind": "mmaudio_16k"})
    kind = registry.feature_kind("mmaudio_16k")
    small = dataclasses.replace(kind, load=lambda directory, params, device="cpu": resolved.stack)
    monkeypatch.setitem(registry._KINDS, "mmaudio_16k", small)
    return resolved


@pytest.fixture
def teacher_dir(tmp_path: Path) -> Path:
    net = MFMJTNetwork(NetworkConfig.variant("tiny", **TEACHER))
    randomize(net, 5)
    return save_network(net, tmp_path / "teacher", objective="flow_matching", variant="tiny")


def distill_args(teacher: Path, store: Path, out: Path, steps: int = 3) -> list[str]:
    return [
        "distill", "--teacher", str(teacher), "--store", str(store), "--out", str(out), "--steps", str(steps),
        "--batch-size", "2", "--warmup-steps", "0", "--teacher-sample-steps", "2", "--no-progress",
    ]  # fmt: skip


def assert_distilled_from_teacher_samples(run: Path, store: FeatureStore) -> None:
    meta = read_metadata(run / "final")
    assert meta["distillation"]["x_source"] == "teacher"  # auto chose the teacher: the store has no audio
    samples = np.load(store.path / "teacher_samples.npy")
    assert samples.shape == (len(store), 32, 20) and np.isfinite(samples).all() and samples.std() > 0
    assert json.loads((store.path / "teacher_samples.json").read_text())["done"] == len(store)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)


def assert_generates(model: Path, **request) -> None:
    result = load_pipeline(str(model), device="cpu").generate(duration=DURATION, steps=1, **request)
    for audio in result.audio.values():
        assert audio.shape[0] >= round(DURATION * result.sample_rate)
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_silent_videos_extract_without_audio_then_distil_and_generate(
    tmp_path: Path,
    small_stack: ResolvedStack,
    teacher_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    write_mp4(folder / "a.mp4", 1.3, None, seed=1)  # no sound track at all
    write_mp4(folder / "b.mp4", 1.3, None, seed=2)
    write_mp4(folder / "c.mp4", 1.3, tone(1.3, 22050, 440), seed=3)  # its sound is not read
    write_mp4(folder / "short.mp4", 0.4, None, seed=4)
    rows = [("a", "a door"), ("lost", "no file"), ("b", "rain"), ("short", "brief"), ("c", "a bell")]
    tsv = write_tsv(tmp_path / "set.tsv", "id\tlabel", rows)
    store_dir = tmp_path / "store"
    argv = ["extract", "--videos", str(folder), "--tsv", str(tsv), "--out", str(store_dir), "--no-audio",
            "--duration", str(DURATION), "--workers", "0", "--batch-size", "2",
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0

    store = FeatureStore(store_dir)
    assert not store.has_audio and json.loads((store_dir / "meta.json").read_text())["has_audio"] is False
    assert not (store_dir / "latent_mean.npy").exists() and "latent_mean" not in store[0]
    assert store.ids == ["a", "b", "c"] and bool(np.all(store.array("has_video")))
    assert store.extra["media"] == "videos-no-audio" and store.extra["latent_shape"] == [32, 20]
    failed = (store_dir / "failed.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[:2] for line in failed] == [["lost", "missing file"], ["short", "too short"]]
    decoded = media.decode_video(folder / "b.mp4", DURATION)
    with torch.inference_mode():
        clip_ref = small_stack.stack.clip(decoded.clip_frames[None])[0]
        text_ref = small_stack.stack.text(["rain"])[0]
    np.testing.assert_allclose(store[1]["clip_f"].numpy(), clip_ref.numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(store[1]["text_f"].numpy(), text_ref.numpy(), rtol=1e-4, atol=2e-5)
    with pytest.raises(ValueError, match="with --x-source teacher"):
        main(["--debug", *distill_args(teacher_dir, store_dir, tmp_path / "x"), "--x-source", "store"])

    run = tmp_path / "run"
    with pytest.raises(ValueError, match=f"feature store {store_dir} {REFUSAL}"):
        main(["--debug", "train", "--store", str(store_dir), "--out", str(run), "--variant", "tiny",
              "--steps", "2", *(f"--network={k}={v}" for k, v in TEACHER.items()),
              "--no-progress"])  # fmt: skip
    assert not (run / "checkpoint_last.pt").exists()

    assert main(distill_args(teacher_dir, store_dir, run)) == 0
    assert_distilled_from_teacher_samples(run, store)
    assert_generates(run / "final", video=folder / "a.mp4", prompt="a door")

    # a second distillation from the same store reuses the samples: no teacher sampling at all
    samples_mtime = (store_dir / "teacher_samples.npy").stat().st_mtime_ns

    def no_sampling(*args, **kwargs):
        raise AssertionError("the teacher samples were made again")

    monkeypatch.setattr(mfmjt.sampler, "sample", no_sampling)
    assert main(distill_args(teacher_dir, store_dir, tmp_path / "run2", steps=1)) == 0
    assert (store_dir / "teacher_samples.npy").stat().st_mtime_ns == samples_mtime


def test_prompts_alone_extract_then_distil_and_generate(
    tmp_path: Path, small_stack: ResolvedStack, teacher_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    rows = [("p0", "a dog barks"), ("p1", "waves on a beach"), ("p2", "an old clock ticks")]
    prompts = write_tsv(tmp_path / "prompts.tsv", "id\tcaption", rows)
    store_dir = tmp_path / "store"
    argv = ["extract", "--prompts", str(prompts), "--out", str(store_dir), "--duration", str(DURATION),
            "--device", "cpu", "--chunk-items", "2"]  # fmt: skip
    assert main(argv) == 0
    store = FeatureStore(store_dir)
    assert not store.has_audio and store.ids == ["p0", "p1", "p2"] and store.captions[1] == "waves on a beach"
    assert not np.any(store.array("has_video")) and not np.any(store.array("clip_f"))
    assert store.shapes == {"clip_f": (8, 32), "sync_f": (16, 48), "text_f": (77, 32)}
    with torch.inference_mode():
        text_ref = small_stack.stack.text(["an old clock ticks"])[0]
    np.testing.assert_allclose(store[2]["text_f"].numpy(), text_ref.numpy(), rtol=1e-4, atol=2e-5)
    assert (store_dir / "failed.tsv").read_text() == "id\treason\tdetail\n"

    capsys.readouterr()
    # refused combinations, before anything is read
    assert main([*argv[:5], "--layout", "mmaudio"]) == 2
    assert main([*argv[:5], "--tsv", str(prompts)]) == 2
    err = capsys.readouterr().err
    assert "native layout only" in err and "leave out --tsv" in err

    run = tmp_path / "run"
    assert main(distill_args(teacher_dir, store_dir, run)) == 0
    assert_distilled_from_teacher_samples(run, store)
    assert_generates(run / "final", prompt="a dog barks")


class KillingText:
    """The stack's text encoder, counting calls; raises at call ``kill_at`` (a simulated kill)."""

    def __init__(self, text, kill_at: int | None = None) -> None:
        self.text, self.dim, self.kill_at, self.captions = text, text.dim, kill_at, []

    def __call__(self, captions):
        if self.kill_at is not None and len(self.captions) + 1 >= self.kill_at:
            raise KeyboardInterrupt("simulated kill")
        self.captions.append(list(captions))
        return self.text(captions)


def test_an_interrupted_prompts_extraction_resumes_and_the_export_command_generates(
    tmp_path: Path, small_stack: ResolvedStack, teacher_dir: Path
) -> None:
    from mfmjt.data.extract_media import ExtractMediaConfig, extract_media
    from mfmjt.features.base import FeatureStack

    rows = [(f"p{i}", f"prompt number {i}") for i in range(4)]
    prompts = write_tsv(tmp_path / "prompts.tsv", "id\tlabel", rows)
    stack = small_stack.stack
    cfg = dict(tsv=prompts, prompts=True, duration=DURATION, batch_size=1, chunk_items=1, device="cpu",
               precision="fp32", progress=False)  # fmt: skip
    killing = KillingText(stack.text, kill_at=3)
    with pytest.raises(KeyboardInterrupt):
        killed = FeatureStack(stack.clip, stack.sync, killing, stack.codec)
        extract_media(ExtractMediaConfig(out=tmp_path / "s", **cfg), killed)
    again = KillingText(stack.text)
    summary = extract_media(
        ExtractMediaConfig(out=tmp_path / "s", **cfg),
        FeatureStack(stack.clip, stack.sync, again, stack.codec),
    )
    assert summary.skipped == 2 and again.captions[:2] == [["prompt number 2"], ["prompt number 3"]]
    extract_media(ExtractMediaConfig(out=tmp_path / "ref", **cfg), stack)
    resumed, reference = FeatureStore(tmp_path / "s"), FeatureStore(tmp_path / "ref")
    assert resumed.ids == reference.ids == [r[0] for r in rows]
    np.testing.assert_array_equal(resumed.array("text_f"), reference.array("text_f"))

    run = tmp_path / "run"
    assert main([*distill_args(teacher_dir, tmp_path / "s", run), "--stop-after", "2"]) == 0
    model = tmp_path / "model"
    assert main(["export", str(run / "checkpoint_last.pt"), "--out", str(model)]) == 0
    assert read_metadata(model)["features"]["kind"] == "mmaudio_16k"
    assert_generates(model, prompt="prompt number 1")


def test_a_store_for_another_codec_or_given_latents_is_refused(tmp_path: Path) -> None:
    from mfmjt.distill import TeacherSampleConfig, fold_dt_embedding, teacher_samples
    from mfmjt.feature_store import FeatureStoreWriter

    shapes = {"clip_f": (8, 32), "sync_f": (16, 48), "text_f": (77, 32)}
    conditions = {k: np.zeros((1, *v), np.float32) for k, v in shapes.items()}
    writer = FeatureStoreWriter(
        tmp_path / "s", 1, shapes, duration=DURATION, extra={"latent_shape": [16, 40]}
    )
    with pytest.raises(ValueError, match="store without audio: it takes no latent_mean"):
        writer.write_batch(0, latent_mean=np.zeros((1, 16, 40), np.float32), **conditions)
    writer.write_batch(0, **conditions)
    store = FeatureStore(writer.close())
    with pytest.raises(ValueError, match="has no audio latents"):
        store.array("latent_mean")
    teacher = fold_dt_embedding(MFMJTNetwork(NetworkConfig.variant("tiny", **TEACHER))).requires_grad_(False)
    with pytest.raises(ValueError, match="codec of 40 latent channels, but the teacher makes 20"):
        teacher_samples(store, teacher, "t", TeacherSampleConfig(steps=1), progress=False)
