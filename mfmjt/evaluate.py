"""Deprecated alias of mfmjt.toy.evaluate (and mfmjt.toy.metrics); import from mfmjt.toy."""

import warnings

from mfmjt.toy.evaluate import *  # noqa: F403
from mfmjt.toy.metrics import *  # noqa: F403

warnings.warn(
    f"{__name__} is a deprecated alias of the mfmjt.toy modules; import from mfmjt.toy instead",
    DeprecationWarning,
    stacklevel=2,
)
