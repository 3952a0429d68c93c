"""CLIP encoders with a tiny random-weight open_clip model (no download): shapes, norms, tokens."""

from __future__ import annotations

import pytest
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from mfmjt.features.base import TextEncoder, VideoEncoder
from mfmjt.features.clip import (
    DEFAULT_CLIP_MODEL,
    OPENAI_MEAN,
    OPENAI_STD,
    ClipTextEncoder,
    ClipVisualEncoder,
    ClipWeightsUnavailableError,
    clip_token_features,
)

# Unit norms and re-batched results: float32 rounding only.
ATOL = 1e-5


@pytest.fixture(scope="module")
def model() -> CLIP:
    """DFN5B's layout in miniature: 378 px / patch 14 (27x27 grid), QuickGELU, 77-token text."""
    torch.manual_seed(0)
    return CLIP(
        embed_dim=32,
        vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=14, image_size=378),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=48, heads=2, layers=2),
        quick_gelu=True,
    ).eval()


@pytest.fixture(scope="module")
def visual(model) -> ClipVisualEncoder:
    return ClipVisualEncoder(model)


@pytest.fixture(scope="module")
def text(model) -> ClipTextEncoder:
    return ClipTextEncoder(model)


def _frames(b: int, t: int, size: int = 384) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (b, t, 3, size, size), generator=g, dtype=torch.uint8)


# --- visual -----------------------------------------------------------------------------------------


def test_visual_features_are_unit_vectors_per_frame(visual):
    out = visual(_frames(2, 3))
    assert out.shape == (2, 3, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 3), atol=ATOL, rtol=0)


def test_visual_is_openai_normalised_encode_image_of_the_378_crop(visual, model):
    frames = _frames(1, 2)
    x = frames[0].float() / 255.0
    x = (x - torch.tensor(OPENAI_MEAN).view(3, 1, 1)) / torch.tensor(OPENAI_STD).view(3, 1, 1)
    with torch.no_grad():  # 384 input = top-left 378 crop: the 27x27 grid ignores the last 6 pixels
        ref = model.encode_image(x[..., :378, :378], normalize=True)
    torch.testing.assert_close(visual(frames)[0], ref, atol=ATOL, rtol=0)


def test_visual_chunking_gives_the_same_result_as_one_pass(model):
    frames = _frames(2, 3)
    one_pass = ClipVisualEncoder(model, chunk_size=64)(frames)
    chunked = ClipVisualEncoder(model, chunk_size=4)(frames)  # chunks cross the batch boundary
    torch.testing.assert_close(chunked, one_pass, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "frames",
    [
        torch.zeros(1, 2, 3, 384, 384),  # float
        torch.zeros(1, 2, 3, 224, 224, dtype=torch.uint8),  # wrong size
        torch.zeros(2, 3, 384, 384, dtype=torch.uint8),  # no batch dim
    ],
    ids=["float", "wrong-size", "4-dims"],
)
def test_visual_bad_input_names_tensor_and_expected_shape(visual, frames):
    with pytest.raises(ValueError, match=r"clip frames: expected uint8 \[B, T, 3, 384, 384\]"):
        visual(frames)


# --- text -------------------------------------------------------------------------------------------


def test_tokens_of_a_dog_barking_match_mmaudio(text):
    tokens = text.tokenize(["a dog barking", ""])
    assert tokens.shape == (2, 77)
    assert tokens[0].tolist() == [49406, 320, 1929, 32676, 49407] + [0] * 72
    assert tokens[1].tolist() == [49406, 49407] + [0] * 75


def test_text_features_are_unit_vectors_per_token(text):
    out = text(["a dog barking", "rain on a tin roof"])
    assert out.shape == (2, 77, 48) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 77), atol=ATOL, rtol=0)


def test_text_positions_after_eot_are_kept_and_depend_on_the_prompt(text):
    # MMAudio feeds all 77 positions to the network, padding included (no pooling at EOT).
    dog, cat = text(["a dog barking", "a cat barking"])
    padded = slice(5, 77)  # EOT is token 4
    torch.testing.assert_close(dog[padded].norm(dim=-1), torch.ones(72), atol=ATOL, rtol=0)
    assert not torch.allclose(dog[padded], cat[padded], atol=1e-3)  # they attend to the prompt
    assert not torch.allclose(dog[10], dog[11], atol=1e-3)  # and carry their own position


def test_text_attention_is_causal(text):
    dog, cat = text(["a dog barking", "a cat barking"])  # differ from token 2 on
    torch.testing.assert_close(dog[:2], cat[:2], atol=ATOL, rtol=0)
    assert not torch.allclose(dog[2], cat[2], atol=1e-3)


def test_token_states_are_open_clip_encode_text_before_pooling(text, model):
    tokens = text.tokenize(["a dog barking", ""])
    with torch.no_grad():
        states = clip_token_features(model, tokens, normalize=False)
        pooled = states[torch.arange(2), tokens.argmax(dim=-1)] @ model.text_projection  # at EOT
        ref = model.encode_text(tokens)
    torch.testing.assert_close(pooled, ref, atol=ATOL, rtol=0)


def test_text_batching_gives_the_same_result_as_single_prompts(text):
    batch = text(["a dog barking", ""])
    torch.testing.assert_close(batch[0], text(["a dog barking"])[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(batch[1], text([""])[0], atol=ATOL, rtol=0)


def test_empty_string_features_are_one_77_token_sequence(text):
    empty = text.encode_single()
    assert empty.shape == (77, 48)
    torch.testing.assert_close(empty, text(["", "x"])[0], atol=ATOL, rtol=0)
    assert text.encode_single("wind").shape == (77, 48)


@pytest.mark.parametrize("prompts", ["a dog", [], [1, 2]], ids=["bare-str", "empty", "not-str"])
def test_text_bad_prompts_raise_value_error(text, prompts):
    with pytest.raises(ValueError, match="prompts: expected"):
        text(prompts)


# --- interfaces and loading -------------------------------------------------------------------------


def test_encoders_implement_the_feature_interfaces(visual, text):
    assert isinstance(visual, VideoEncoder) and isinstance(text, TextEncoder)
    frames = _frames(2, 3)
    feats = visual(frames)  # [B, T, 3, H, W] uint8 -> [B, T, dim]: one feature per frame
    assert feats.shape == (2, 3, visual.dim) == (2, 3, 32) and feats.dtype == torch.float32
    torch.testing.assert_close(visual(frames[1:, 2:]), feats[1:, 2:], atol=1e-5, rtol=1e-5)
    tokens = text(["a dog barks", "rain"])  # B prompts -> [B, 77, dim]
    assert tokens.shape == (2, 77, text.dim) == (2, 77, 48)
    assert not torch.allclose(tokens[0], tokens[1])


def test_from_pretrained_offline_fails_with_actionable_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    # Offline and with an empty cache, so the test neither waits on network retries nor loads 4 GB.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ClipWeightsUnavailableError) as info:
        ClipTextEncoder.from_pretrained()
    message = str(info.value)
    assert DEFAULT_CLIP_MODEL in message
    assert "HF_HUB_OFFLINE" in message and "local-dir:" in message
