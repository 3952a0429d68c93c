"""Deprecated alias of mfmjt.toy.evaluate (and mfmjt.toy.metrics); import from mfmjt.toy."""

from mfmjt.toy.evaluate import *  # noqa: F403
from mfmjt.toy.metrics import *  # noqa: F403
