"""Deprecated alias of mfmjt.toy.encoders, mfmjt.toy.codec and mfmjt.toy.stack; import from mfmjt.toy."""

import warnings

from mfmjt.toy.codec import CodecConfig, OfflineAudioCodec  # noqa: F401
from mfmjt.toy.encoders import (  # noqa: F401
    OfflineClipEncoder,
    OfflineEncoderConfig,
    OfflineSyncEncoder,
    OfflineTextEncoder,
)
from mfmjt.toy.stack import make_offline_stack  # noqa: F401

warnings.warn(
    f"{__name__} is a deprecated alias of the mfmjt.toy modules; import from mfmjt.toy instead",
    DeprecationWarning,
    stacklevel=2,
)
