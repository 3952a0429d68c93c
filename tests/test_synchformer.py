"""Synchformer visual encoder: checkpoint layout and numbers against MMAudio's reference goldens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mfmjt.features.base import VideoEncoder
from mfmjt.features.synchformer import MotionFormer, SynchformerConfig, SynchformerEncoder

GOLDENS = Path(__file__).parent / "goldens"
# The reference author's own float32 re-implementation matched to ~1e-6; 1e-4 leaves room for
# attention-kernel and BLAS differences across machines.
ATOL = 1e-4


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((GOLDENS / "synchformer_manifest_and_golden.json").read_text())


@pytest.fixture(scope="module")
def golden_state() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / "golden_synchformer_small.state.safetensors"))


@pytest.fixture(scope="module")
def golden_io() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / "golden_synchformer_small.io.safetensors"))


@pytest.fixture(scope="module")
def small(golden_state) -> SynchformerEncoder:
    return SynchformerEncoder.from_checkpoint(golden_state, SynchformerConfig.golden_small())


def _random_frames(b: int, t: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, 3, 224, 224), generator=g, dtype=torch.uint8)


# --- checkpoint layout ------------------------------------------------------------------------------


def test_full_size_state_dict_equals_mmaudio_manifest(meta):
    manifest = meta["full_size_manifest"]
    with torch.device("meta"):  # 122 M parameters, no memory
        enc = SynchformerEncoder(SynchformerConfig.full())
    sd = enc.state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == manifest["state_dict"]
    assert list(sd) == list(manifest["state_dict"])  # same order too
    assert len(sd) == manifest["num_keys"] == 238
    assert sum(v.numel() for v in sd.values()) == manifest["total_numel"] == 122_440_704
    frozen = [n for n, p in enc.named_parameters() if not p.requires_grad]
    assert frozen == manifest["requires_grad_false_params"]  # the unused 2-D patch embedding


def test_bare_motionformer_keys_are_the_manifest_without_prefix(meta):
    with torch.device("meta"):
        model = MotionFormer(SynchformerConfig.full())
    expected = [k.removeprefix("vfeat_extractor.") for k in meta["full_size_manifest"]["state_dict"]]
    assert list(model.state_dict()) == expected


def test_golden_small_state_dict_has_golden_keys_and_shapes(meta, golden_state):
    sd = SynchformerEncoder(SynchformerConfig.golden_small()).state_dict()
    assert list(sd) == meta["small_golden"]["state_keys"]
    assert len(sd) == 58
    assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in golden_state.items()}


def test_upstream_checkpoint_with_extra_keys_loads_strictly(golden_state, tmp_path):
    upstream = dict(golden_state)
    upstream["afeat_extractor.blocks.0.norm1.weight"] = torch.ones(3)  # dropped, as MMAudio does
    upstream["transformer.pos_emb_cfg.pos_emb"] = torch.zeros(2, 2)
    torch.save(upstream, tmp_path / "synchformer_state_dict.pth")
    save_file(golden_state, str(tmp_path / "sync.safetensors"))
    cfg = SynchformerConfig.golden_small()
    for source in (upstream, tmp_path / "synchformer_state_dict.pth", tmp_path / "sync.safetensors"):
        loaded = SynchformerEncoder.from_checkpoint(source, cfg).state_dict()
        assert loaded.keys() == golden_state.keys()
        assert all(torch.equal(loaded[k], golden_state[k]) for k in loaded)


def test_checkpoint_missing_a_key_is_rejected(golden_state):
    partial = {k: v for k, v in golden_state.items() if not k.endswith("norm.weight")}
    with pytest.raises(RuntimeError, match="Missing key"):
        SynchformerEncoder.from_checkpoint(partial, SynchformerConfig.golden_small())


# --- numbers ----------------------------------------------------------------------------------------


def test_reproduces_golden_features(small, golden_io):
    frames = golden_io["in.frames_uint8"]
    before = frames.clone()
    out = small(frames)
    assert out.shape == (1, 16, 48) and out.dtype == torch.float32
    torch.testing.assert_close(out, golden_io["out.features"], atol=ATOL, rtol=0)
    assert torch.equal(frames, before)  # caller's tensor untouched


def test_reproduces_golden_debug_tensors(small, golden_io):
    x = (golden_io["in.frames_uint8"][0].float() / 255.0 - 0.5) / 0.5  # [24, 3, 224, 224]
    segments = torch.stack([x[0:16], x[8:24]]).permute(0, 2, 1, 3, 4)  # [2, 3, 16, 224, 224]
    with torch.no_grad():
        tokens = small.vfeat_extractor.forward_features(segments)
        per_segment = small.vfeat_extractor(segments)
    torch.testing.assert_close(tokens, golden_io["debug.forward_features_per_segment"], atol=ATOL, rtol=0)
    torch.testing.assert_close(
        per_segment, golden_io["debug.synchformer_call_output"][:, 0], atol=ATOL, rtol=0
    )


def test_chunking_and_batching_do_not_change_features(golden_state):
    cfg = SynchformerConfig.golden_small()
    frames = _random_frames(2, 24, seed=3)  # 2 segments per item
    one_by_one = SynchformerEncoder.from_checkpoint(golden_state, cfg, chunk_size=1)(frames)
    uneven = SynchformerEncoder.from_checkpoint(golden_state, cfg, chunk_size=3)(frames)
    single_item = SynchformerEncoder.from_checkpoint(golden_state, cfg)(frames[1:])
    assert one_by_one.shape == (2, 16, 48)
    torch.testing.assert_close(uneven, one_by_one, atol=1e-5, rtol=0)
    torch.testing.assert_close(single_item[0], one_by_one[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("frames", "segments"), [(16, 1), (23, 1), (24, 2), (200, 24), (250, 30)])
def test_segment_count_is_mmaudio_formula(small, frames, segments):
    assert small.num_segments(frames) == segments


def test_frames_after_the_last_whole_segment_are_ignored(small):
    frames = _random_frames(1, 31, seed=4)  # (31 - 16) // 8 + 1 = 2 segments, frames 24..30 unused
    torch.testing.assert_close(small(frames), small(frames[:, :24]), atol=0, rtol=0)


def test_is_a_video_encoder(small):
    assert isinstance(small, VideoEncoder)
    frames = _random_frames(1, 24, seed=5)  # two segments of 16 frames, stride 8
    tokens = small(frames)  # [B, T, 3, 224, 224] uint8 -> [B, 8 * segments, dim]
    assert tokens.shape == (1, 16, small.dim) == (1, 16, 48) and torch.isfinite(tokens).all()
    other = small(_random_frames(1, 24, seed=6))
    assert not torch.allclose(tokens, other)


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames",
    [
        torch.zeros(1, 15, 3, 224, 224, dtype=torch.uint8),  # fewer than 16 frames
        torch.zeros(1, 16, 3, 224, 224),  # float, not uint8
        torch.zeros(1, 16, 3, 256, 256, dtype=torch.uint8),  # not 224x224
        torch.zeros(16, 3, 224, 224, dtype=torch.uint8),  # no batch dim
    ],
    ids=["too-few-frames", "float", "wrong-size", "4-dims"],
)
def test_bad_input_names_tensor_and_expected_shape(small, frames):
    with pytest.raises(ValueError, match=r"sync frames: expected uint8 \[B, T >= 16, 3, 224, 224\]"):
        small(frames)
