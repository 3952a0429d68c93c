"""The model-directory format: one writer, typed config, old layouts still load, the feature registry."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GOLDENS
from stacks import randomize

from mfmjt.cli import build_parser, sampling_settings
from mfmjt.config import NetworkConfig
from mfmjt.features import registry
from mfmjt.model import MFMJTNetwork
from mfmjt.model_dir import (
    FORMAT_VERSION,
    FeatureSpec,
    ModelConfig,
    SamplingSettings,
    load_network,
    read_model_config,
    save_network,
    write_model_dir,
)
from mfmjt.pipeline import Pipeline, default_model_dir, load_pipeline

LEGACY_CONFIG = GOLDENS / "legacy_default_config.json"  # the shipped default's config.json before v2


def _legacy_copy(tmp_path: Path) -> Path:
    """The shipped default model's weights and codec with its earlier-release config.json."""
    out = tmp_path / "legacy"
    out.mkdir()
    for name in ("model.safetensors", "codec.safetensors"):
        shutil.copy2(default_model_dir() / name, out / name)
    shutil.copy2(LEGACY_CONFIG, out / "config.json")
    return out


def _t2a(pipe: Pipeline) -> np.ndarray:
    return pipe.generate(prompt="a red ball bounces twice", duration=1.0, steps=1, seed=3).audio["scaled"]


def test_an_earlier_release_directory_loads_like_the_shipped_one(tmp_path):
    legacy = _legacy_copy(tmp_path)
    assert "format_version" not in json.loads((legacy / "config.json").read_text())
    old, new = read_model_config(legacy), read_model_config(default_model_dir())
    # the same model, less what was added since: the recommended 8 s window (the earlier release
    # generated 8 s demo clips in one pass too)
    assert new.format_version == FORMAT_VERSION and new.recommended.window == 8.0
    assert old == dataclasses.replace(new, recommended=dataclasses.replace(new.recommended, window=None))
    assert old.features.kind == "offline" and old.features.files == ("codec.safetensors",)
    assert old.features.params["encoders"]["sync_features"] == "acceleration"
    assert old.provenance.step == 600 and old.provenance.variant == "tiny" and old.weights_dtype == "float16"
    assert old.provenance.lineage[-1].startswith("runs/L4")
    assert old.provenance.training["lr"] == 3e-05 and old.provenance.feature_store["first_seed"] == 0
    from_old = Pipeline.from_pretrained(legacy, device="cpu")
    assert from_old.name == "MF-MJT tiny (embedded default)" and from_old.objective == "meanflow"
    np.testing.assert_array_equal(_t2a(from_old), _t2a(load_pipeline("default", device="cpu")))


def test_recommended_settings_follow_the_objective_and_the_config():
    assert SamplingSettings.for_objective("meanflow") == SamplingSettings(1, 1.5, "scaled")
    assert SamplingSettings.for_objective("flow_matching") == SamplingSettings(25, 4.5, "scaled")
    assert load_pipeline("default", device="cpu").recommended == SamplingSettings(1, 1.5, "scaled", 8.0)
    net = NetworkConfig.variant("tiny")
    assert ModelConfig(network=net, objective="flow_matching").recommended.steps == 25
    own = ModelConfig(network=net, recommended=SamplingSettings(2, 2.0, "standard"))
    assert ModelConfig.from_dict(own.to_dict()).recommended == SamplingSettings(2, 2.0, "standard")
    with pytest.raises(ValueError, match="objective must be one of"):
        ModelConfig(network=net, objective="diffusion")
    with pytest.raises(ValueError, match="guidance must be one of"):
        SamplingSettings(1, 1.5, "loud")


def test_generate_defaults_follow_the_loaded_model_unless_given():
    flow = SamplingSettings.for_objective("flow_matching")
    parse = build_parser().parse_args
    assert sampling_settings(parse(["generate", "--prompt", "x"]), flow) == (25, 4.5, "scaled")
    mean = SamplingSettings.for_objective("meanflow")
    assert sampling_settings(parse(["generate", "--prompt", "x"]), mean) == (1, 1.5, "scaled")
    # given steps other than the recommended ones: the usual ω for that many steps
    assert sampling_settings(parse(["generate", "--prompt", "x", "--steps", "4"]), mean) == (4, 4.5, "scaled")
    given = parse(["generate", "--prompt", "x", "--steps", "2", "--cfg", "3", "--guidance", "both"])
    assert sampling_settings(given, flow) == (2, 3.0, "both")


def test_pipeline_save_pretrained_round_trips_network_codec_and_card(tmp_path):
    pipe = load_pipeline("default", device="cpu")
    out = pipe.save_pretrained(tmp_path / "copy")
    assert sorted(p.name for p in out.iterdir()) == ["codec.safetensors", "config.json", "model.safetensors"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["format_version"] == FORMAT_VERSION and saved["features"]["kind"] == "offline"
    assert saved["recommended"] == {"steps": 1, "cfg": 1.5, "guidance": "scaled", "window": 8.0}
    again = Pipeline.from_pretrained(out, device="cpu")
    assert (
        again.description == pipe.description
        and again.model_config.provenance == pipe.model_config.provenance
    )
    for key, value in pipe.network.state_dict().items():
        assert torch.equal(again.network.state_dict()[key], value), key
    np.testing.assert_array_equal(_t2a(again), _t2a(pipe))


def test_network_save_pretrained_writes_the_versioned_format_with_its_metadata(tmp_path):
    net = MFMJTNetwork(NetworkConfig.variant("tiny"))
    randomize(net, 3)
    save_network(net, tmp_path, objective="flow_matching", source="x.pth", variant="tiny", custom=7)
    config = read_model_config(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["format_version"] == FORMAT_VERSION
    assert config.objective == "flow_matching" and config.features.kind == "mmaudio_16k"
    assert config.recommended == SamplingSettings(25, 4.5, "scaled")
    assert config.provenance.source == "x.pth" and config.provenance.extra == {"custom": 7}
    loaded = load_network(tmp_path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())


def test_bad_directories_are_refused_with_the_reason(tmp_path):
    net = MFMJTNetwork(NetworkConfig.variant("tiny"))
    config = ModelConfig(network=net.config, features=FeatureSpec("offline", {}, ("codec.safetensors",)))
    with pytest.raises(FileNotFoundError, match=r"offline features need \['codec.safetensors'\]"):
        write_model_dir(tmp_path / "a", net, config)
    write_model_dir(tmp_path / "b", net, replace(config, features=FeatureSpec("nowhere")))
    with pytest.raises(ValueError, match="unknown feature stack 'nowhere'; known: .*offline"):
        Pipeline.from_pretrained(tmp_path / "b")
    data = json.loads((tmp_path / "b" / "config.json").read_text())
    (tmp_path / "b" / "config.json").write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        read_model_config(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        read_model_config(tmp_path / "empty")


def test_a_new_feature_kind_is_one_registry_entry(tmp_path):
    offline = registry.feature_kind("offline")
    calls = []

    def load(directory, params, device):
        calls.append(dict(params))
        return offline.load(directory, {"encoders": params["enc"], "codec": params["file"]}, device)

    registry.register(registry.FeatureKind("renamed_offline", 16_000, load))
    try:
        source = read_model_config(default_model_dir())
        spec = FeatureSpec(
            "renamed_offline",
            {"enc": source.features.params["encoders"], "file": "codec.safetensors"},
            ("codec.safetensors",),
        )
        out = tmp_path / "m"
        network = load_network(default_model_dir())
        codec = {"codec.safetensors": default_model_dir() / "codec.safetensors"}
        write_model_dir(out, network, replace(source, features=spec), files=codec)
        pipe = Pipeline.from_pretrained(out, device="cpu")
        assert calls == [spec.params]
        np.testing.assert_array_equal(_t2a(pipe), _t2a(load_pipeline("default", device="cpu")))
    finally:
        registry._KINDS.pop("renamed_offline")
