"""What the demo accepts and how it names things, importable without torch.

The page is laid out from these before torch is imported (``app.py`` answers first and loads the models
afterwards, see docs/demo.md); :mod:`mfmjt.demo.service`, which does the work, re-exports them.
"""

from __future__ import annotations

from mfmjt.request import Limits

DEMO_LIMITS = Limits(max_steps=25, max_cfg=10.0, max_prompt_chars=1000)
T2A_DEFAULT_DURATION = 8.0
MODE_LABELS = {"standard": "standard CFG", "scaled": "scaled CFG"}
SWEEP_OMEGAS = (1.0, 1.5, 2.5, 4.0)


class UserError(ValueError):
    """Something the user sent cannot be used; the message says what and what would work."""
