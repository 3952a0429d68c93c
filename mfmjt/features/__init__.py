"""Frozen encoders and decoders behind the small interfaces of :mod:`mfmjt.features.base`."""

from mfmjt.features.base import AudioCodec, FeatureStack, TextEncoder, VideoEncoder

__all__ = ["AudioCodec", "FeatureStack", "TextEncoder", "VideoEncoder"]
