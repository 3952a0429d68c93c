"""The toy domain's command group and the deprecated import paths of its modules."""

from __future__ import annotations

import importlib

import av
import numpy as np
import pytest
import torch

from mfmjt.cli import build_parser, main
from mfmjt.feature_store import FeatureStore
from mfmjt.toy.codec import OfflineAudioCodec
from mfmjt.toy.scene import make_scene
from mfmjt.toy.specs import SceneConfig


def test_mfmjt_toy_extract_and_mfmjt_extract_write_the_same_store(tmp_path):
    args = ["--n-items", "2", "--duration", "1", "--fit-items", "2", "--text-only-fraction", "0"]
    assert main(["toy", "extract", "--out", str(tmp_path / "toy"), *args]) == 0
    assert main(["extract", "--out", str(tmp_path / "top"), *args]) == 0
    toy, top = FeatureStore(tmp_path / "toy"), FeatureStore(tmp_path / "top")
    assert toy.ids == top.ids == ["scene-0", "scene-1"]
    for name in ("latent_mean", "clip_f", "sync_f", "text_f"):
        np.testing.assert_array_equal(toy.array(name), top.array(name))
    # (the files' bytes may differ: safetensors writes the metadata entries in no fixed order)
    codecs = [OfflineAudioCodec.load(tmp_path / name / "codec.safetensors") for name in ("toy", "top")]
    assert codecs[0].config == codecs[1].config
    for key, value in codecs[0].state_dict().items():
        assert torch.equal(value, codecs[1].state_dict()[key]), key


def test_mfmjt_toy_scene_writes_the_scene_with_its_soundtrack(tmp_path, caplog):
    caplog.set_level("INFO", logger="mfmjt")
    assert main(["toy", "scene", "--seed", "5", "--duration", "1", "--out", str(tmp_path)]) == 0
    scene = make_scene(5, SceneConfig(duration=1.0))
    with av.open(str(tmp_path / "scene_5.mp4")) as container:
        assert container.streams.video[0].frames == len(scene.frames)
        assert container.streams.audio[0].codec_context.sample_rate == scene.sample_rate
    assert scene.caption in caplog.text


def test_toy_evaluate_and_evaluate_share_their_arguments():
    parse = build_parser().parse_args
    toy = vars(parse(["toy", "evaluate", "--n", "3", "--steps", "2"]))
    top = vars(parse(["evaluate", "--n", "3", "--steps", "2"]))
    for key in ("command", "toy_command", "func"):
        toy.pop(key, None), top.pop(key, None)
    assert toy == top


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ("mfmjt.synthetic", "mfmjt.toy.scene", ["make_scene", "make_text_sample"]),
        ("mfmjt.synthetic", "mfmjt.toy.specs", ["SceneConfig", "SoundEvent", "Scene"]),
        ("mfmjt.synthetic", "mfmjt.toy.render", ["write_scene_mp4"]),
        ("mfmjt.synthetic", "mfmjt.toy.onsets", ["detect_onsets"]),
        ("mfmjt.evaluate", "mfmjt.toy.evaluate", ["run_evaluation", "held_out_scenes", "HELD_OUT_SEED"]),
        ("mfmjt.evaluate", "mfmjt.toy.metrics", ["score_onsets", "AUDIBLE_STRENGTH", "frechet_distance"]),
        ("mfmjt.extract", "mfmjt.toy.extract", ["ExtractConfig", "extract_synthetic", "fit_offline_stack"]),
        ("mfmjt.features.offline", "mfmjt.toy.codec", ["OfflineAudioCodec", "CodecConfig"]),
        ("mfmjt.features.offline", "mfmjt.toy.encoders", ["OfflineEncoderConfig", "OfflineSyncEncoder"]),
        ("mfmjt.features.offline", "mfmjt.toy.stack", ["make_offline_stack"]),
    ],
)
def test_the_old_import_paths_are_aliases_of_the_toy_modules(old, new, names):
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    assert old_module.__doc__.startswith("Deprecated alias of mfmjt.toy.")
    for name in names:
        assert getattr(old_module, name) is getattr(new_module, name), name
