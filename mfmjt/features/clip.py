"""CLIP visual and text encoders (open_clip), as MMAudio uses them.

* Visual: uint8 frames at 8 fps, 384x384 -> [0, 1] -> OpenAI mean/std -> ``encode_image`` with
  ``normalize=True``: one L2-normalised, projected embedding per frame ``[B, T, 1024]``.
  The DFN5B ViT-H/14 is built for 378 px; a 384 input gives the same 27x27 patch grid (the last
  6 rows/columns are ignored), so frames are fed at 384 exactly as MMAudio does.
* Text: **token-level** states, not the pooled embedding: token + positional embedding -> causal
  transformer -> ``ln_final`` -> L2 norm per token, all 77 positions (padding included), no
  projection ``[B, 77, 1024]``.

Both encoders take an already-built open_clip model, so tests can use a small random-weight one;
:func:`load_open_clip_model` fetches the real weights from the Hugging Face Hub.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mfmjt.config import DEFAULT_CLIP_MODEL  # noqa: F401 (what MMAudio loads; re-exported, kept here)

logger = logging.getLogger(__name__)

#: MMAudio's tokenizer name (identical to 'ViT-H-14'); its BPE vocabulary ships with open_clip.
TOKENIZER_NAME = "ViT-H-14-378-quickgelu"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipWeightsUnavailableError(RuntimeError):
    """The CLIP weights could not be loaded (typically: no network and nothing in the HF cache)."""


def load_open_clip_model(name: str = DEFAULT_CLIP_MODEL, *, device: str | torch.device = "cpu") -> nn.Module:
    """Build an open_clip model with pretrained weights (``hf-hub:org/repo`` or ``local-dir:/path``)."""
    import open_clip

    try:
        model = open_clip.create_model_from_pretrained(name, device=device, return_transform=False)
    except Exception as err:  # open_clip wraps hub/network errors in RuntimeError, files in OSError
        raise ClipWeightsUnavailableError(
            f"Could not load the CLIP model {name!r}: {err}\n"
            f"{_RENAME_NOTE if name == DEFAULT_CLIP_MODEL else ''}"
            "Its weights come from the Hugging Face Hub. Without network access, supply them by either\n"
            "  * downloading once on a connected machine\n"
            f"    (e.g. `huggingface-cli download {_repo_id(name)}`), copying the Hugging Face cache\n"
            "    (~/.cache/huggingface) and setting HF_HUB_OFFLINE=1, or\n"
            "  * passing 'local-dir:/path/to/folder' as the name, where the folder holds the repo's\n"
            "    open_clip_config.json and open_clip_model.safetensors (or open_clip_pytorch_model.bin), or\n"
            "  * building the model yourself with open_clip and passing it to ClipVisualEncoder(model) /\n"
            "    ClipTextEncoder(model)."
        ) from err
    return model.eval()


_RENAME_NOTE = "(The Hub repo has since been renamed apple/DFN5B-CLIP-ViT-H-14-378; same weights.)\n"


def _repo_id(name: str) -> str:
    return name.removeprefix("hf-hub:")


def _text_tower(model: nn.Module) -> nn.Module:
    """The module holding token_embedding / transformer / ln_final (CLIP itself, or CustomTextCLIP.text)."""
    tower = getattr(model, "text", model)
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    missing = [a for a in needed if not hasattr(tower, a)]
    if missing or getattr(tower, "cls_emb", None) is not None:
        raise ValueError(
            f"{type(model).__name__} is not an open_clip CLIP with a plain causal text transformer "
            f"(missing {missing or 'nothing, but it appends a CLS embedding'})"
        )
    return tower


def clip_token_features(model: nn.Module, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Token-level text states of an open_clip CLIP: ``[B, L]`` ids -> ``[B, L, width]``.

    token embedding + positional embedding -> transformer (causal mask) -> ln_final; no EOT pooling,
    no text projection; with ``normalize`` each token vector is L2-normalised.
    """
    tower = _text_tower(model)
    context = tower.positional_embedding.shape[0]
    if tokens.ndim != 2 or tokens.shape[1] != context:
        raise ValueError(f"tokens: expected [B, {context}] token ids, got shape {tuple(tokens.shape)}")
    dtype = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(tokens).to(dtype)  # [B, L, W]
    x = x + tower.positional_embedding.to(dtype)
    x = tower.transformer(x, attn_mask=getattr(tower, "attn_mask", None))
    x = tower.ln_final(x)  # [B, L, W]
    return F.normalize(x, dim=-1) if normalize else x


class ClipVisualEncoder(nn.Module):
    """:class:`~mfmjt.features.base.VideoEncoder`: uint8 ``[B, T, 3, S, S]`` -> ``[B, T, dim]`` float32.

    ``S`` is ``image_size`` (384 for the DFN5B model, as fed by MMAudio); frames go through the
    model ``chunk_size`` at a time.
    """

    def __init__(self, model: nn.Module, *, image_size: int = 384, chunk_size: int = 64) -> None:
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.clip = model.eval()
        self.image_size = image_size
        self.chunk_size = chunk_size
        self.dim: int = int(model.visual.output_dim)
        self.register_buffer("mean", torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(OPENAI_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(
        cls, name: str = DEFAULT_CLIP_MODEL, *, device: str | torch.device = "cpu", **kwargs: int
    ) -> ClipVisualEncoder:
        """Load ``name`` with open_clip's hub loader (see :func:`load_open_clip_model`)."""
        return cls(load_open_clip_model(name, device=device), **kwargs).to(device)

    def _check(self, frames: torch.Tensor) -> None:
        s = self.image_size
        expected = f"uint8 [B, T, 3, {s}, {s}] (8 fps)"
        if not isinstance(frames, torch.Tensor):
            raise ValueError(f"clip frames: expected a tensor {expected}, got {type(frames).__name__}")
        if frames.dtype != torch.uint8:
            raise ValueError(f"clip frames: expected {expected}, got dtype {frames.dtype}")
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (3, s, s) or frames.shape[1] < 1:
            raise ValueError(f"clip frames: expected {expected}, got shape {tuple(frames.shape)}")

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, T, 3, S, S]`` -> L2-normalised float32 ``[B, T, dim]``."""
        self._check(frames)
        b, t = frames.shape[:2]
        dtype = next(self.clip.visual.parameters()).dtype
        out = []
        for chunk in frames.flatten(0, 1).split(self.chunk_size):  # [n, 3, S, S]
            x = (chunk.to(self.mean.device, torch.float32) / 255.0 - self.mean) / self.std
            out.append(self.clip.encode_image(x.to(dtype), normalize=True).float())  # [n, dim]
        return torch.cat(out).view(b, t, self.dim)


class ClipTextEncoder(nn.Module):
    """:class:`~mfmjt.features.base.TextEncoder`: ``B`` prompts -> ``[B, 77, dim]`` float32.

    ``dim`` is the text transformer width (1024 for DFN5B ViT-H/14). Every token vector, padding
    included, is L2-normalised, as MMAudio's ``text_f``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.clip = model.eval()
        tower = _text_tower(model)
        self.dim: int = int(tower.token_embedding.embedding_dim)
        if tokenizer is None:
            import open_clip

            tokenizer = open_clip.get_tokenizer(TOKENIZER_NAME)
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls, name: str = DEFAULT_CLIP_MODEL, *, device: str | torch.device = "cpu"
    ) -> ClipTextEncoder:
        """Load ``name`` with open_clip's hub loader (see :func:`load_open_clip_model`)."""
        return cls(load_open_clip_model(name, device=device)).to(device)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """``B`` prompts -> int64 ``[B, 77]``: SOT, BPE ids, EOT, zero padding (truncated to fit)."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts: expected a list of strings, got {prompts!r:.80}")
        if len(prompts) == 0:
            raise ValueError("prompts: expected at least one prompt, got an empty list")
        return self.tokenizer(list(prompts))

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        """``B`` prompts -> float32 ``[B, 77, dim]``, one unit vector per token position."""
        tokens = self.tokenize(prompts).to(next(self.clip.parameters()).device)
        return clip_token_features(self.clip, tokens, normalize=True).float()

    def encode_single(self, prompt: str = "") -> torch.Tensor:
        """Features of one prompt, ``[77, dim]``.

        With the default ``""`` this is MMAudio's ``empty_string_feat`` (the null text condition);
        with a negative prompt it is the text part of the unconditional branch.
        """
        return self([prompt])[0]


def clip_encoders_from_pretrained(
    name: str = DEFAULT_CLIP_MODEL, *, device: str | torch.device = "cpu"
) -> tuple[ClipVisualEncoder, ClipTextEncoder]:
    """Both encoders sharing one loaded model (the ViT-H/14 is ~4 GB in float32)."""
    model = load_open_clip_model(name, device=device)
    return ClipVisualEncoder(model).to(device), ClipTextEncoder(model).to(device)
