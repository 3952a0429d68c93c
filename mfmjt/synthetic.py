"""Deprecated alias of mfmjt.toy.scene (and the toy modules it is made of); import from mfmjt.toy."""

import warnings

from mfmjt.onsets import detect_onsets  # noqa: F401
from mfmjt.toy.captions import caption_vocabulary  # noqa: F401
from mfmjt.toy.render import write_scene_mp4  # noqa: F401
from mfmjt.toy.scene import make_scene, make_text_sample  # noqa: F401
from mfmjt.toy.specs import ContinuousSound, ObjectSpec, Scene, SceneConfig, SoundEvent  # noqa: F401
from mfmjt.toy.vocabulary import (  # noqa: F401
    BACKGROUNDS,
    COLOURS,
    MATERIALS,
    OFFSCREEN_SOUNDS,
    SHAPE_MATERIAL,
    SHAPES,
    Material,
)

warnings.warn(
    f"{__name__} is a deprecated alias of the mfmjt.toy modules; import from mfmjt.toy instead",
    DeprecationWarning,
    stacklevel=2,
)
