"""Deprecated alias of mfmjt.toy.extract; import from mfmjt.toy.extract."""

from mfmjt.toy.extract import *  # noqa: F403
from mfmjt.toy.stack import CODEC_FILE  # noqa: F401
