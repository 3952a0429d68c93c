"""Onset detection moved to :mod:`mfmjt.onsets` (the demo uses it too); re-exported here."""

from mfmjt.onsets import ONSET_THRESHOLD_DB, detect_onsets  # noqa: F401
