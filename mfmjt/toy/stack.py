"""The toy domain's feature stack: offline encoders plus the fitted codec, and its model-directory form."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mfmjt.features.base import FeatureStack
from mfmjt.toy.codec import OfflineAudioCodec
from mfmjt.toy.encoders import (
    OfflineClipEncoder,
    OfflineEncoderConfig,
    OfflineSyncEncoder,
    OfflineTextEncoder,
)

CODEC_FILE = "codec.safetensors"


def make_offline_stack(codec: OfflineAudioCodec, config: OfflineEncoderConfig | None = None) -> FeatureStack:
    """The embedded default model's feature stack: offline clip, sync and text encoders plus ``codec``."""
    config = config or OfflineEncoderConfig()
    return FeatureStack(
        clip=OfflineClipEncoder(config),
        sync=OfflineSyncEncoder(config),
        text=OfflineTextEncoder(config),
        codec=codec,
    )


def load_offline_stack(directory: str | Path, params: Mapping[str, Any]) -> FeatureStack:
    """The stack a model directory describes: ``params`` holds ``encoders`` (an
    :class:`OfflineEncoderConfig` dict) and ``codec`` (the codec file's name in ``directory``)."""
    for key in ("encoders", "codec"):
        if key not in params:
            raise ValueError(
                f"{directory}/config.json: the offline features need {key!r}, got {sorted(params)}"
            )
    codec = OfflineAudioCodec.load(Path(directory) / str(params["codec"]))
    return make_offline_stack(codec, OfflineEncoderConfig.from_dict(dict(params["encoders"])))


def save_offline_stack(stack: FeatureStack, directory: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Write the stack's codec into ``directory``; its parameters and the files written."""
    stack.codec.save(Path(directory) / CODEC_FILE)
    return {"encoders": stack.clip.config.to_dict(), "codec": CODEC_FILE}, [CODEC_FILE]


def is_offline_stack(stack: FeatureStack) -> bool:
    return isinstance(stack.codec, OfflineAudioCodec) and isinstance(stack.clip, OfflineClipEncoder)
