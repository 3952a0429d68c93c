"""Deprecated alias of mfmjt.toy.extract; import from mfmjt.toy.extract."""

import warnings

from mfmjt.toy.extract import *  # noqa: F403
from mfmjt.toy.stack import CODEC_FILE  # noqa: F401

warnings.warn(
    f"{__name__} is a deprecated alias of the mfmjt.toy modules; import from mfmjt.toy instead",
    DeprecationWarning,
    stacklevel=2,
)
