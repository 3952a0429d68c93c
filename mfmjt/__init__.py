"""MF-MJT: MeanFlow-accelerated multimodal video-to-audio and text-to-audio generation.

from mfmjt import load_pipeline
pipe = load_pipeline("default")
result = pipe.generate(video="clip.mp4", steps=1, cfg_strength=1.5, guidance="both")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["GenerationResult", "Pipeline", "load_pipeline", "__version__"]

if TYPE_CHECKING:
    from mfmjt.pipeline import GenerationResult, Pipeline, load_pipeline


def __getattr__(name: str) -> Any:
    # Lazy: importing mfmjt (e.g. for the network alone) does not import media or encoders.
    if name in ("GenerationResult", "Pipeline", "load_pipeline"):
        from mfmjt import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'mfmjt' has no attribute {name!r}")
