"""The model directory: ``config.json`` + ``model.safetensors`` (+ the feature stack's own files).

One format, written by :func:`write_model_dir` and read by :func:`read_model_config`; every writer
(``mfmjt export``, ``mfmjt deepen``, ``mfmjt convert``, :func:`save_network`,
``Pipeline.save_pretrained``) goes through it. ``config.json`` (format version 2)::

    {
      "format_version": 2,
      "name": "...", "description": "...",           # a short model card
      "objective": "meanflow" | "flow_matching",
      "sample_rate": 16000,
      "network": {...},                                # NetworkConfig
      "features": {"kind": "offline", "params": {...}, "files": ["codec.safetensors"]},
      "recommended": {"steps": 1, "cfg": 1.5, "guidance": "scaled"},
      "weights_dtype": "float16" | null,              # how the weights are stored
      "provenance": {"variant": ..., "step": ..., "duration": ..., "source": ...,
                     "lineage": [...], "training": {...}, "feature_store": {...}, "extra": {...}}
    }

Directories of earlier releases (no ``format_version``: the keys above flat at the top level,
``features`` as ``{"kind", "encoders", "codec", "files"}`` or absent for MMAudio's stack) are read
into the same :class:`ModelConfig`; their recommended settings follow the objective.

Reading ``config.json`` needs no torch (the demo's page reads a model's card and recommended sampling
before torch is imported); the weights' functions import it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mfmjt.config import FEATURE_KIND_RATES, NetworkConfig
from mfmjt.guidance import check_cfg_strength, check_guidance

if TYPE_CHECKING:
    import torch

    from mfmjt.model.network import MFMJTNetwork

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
OBJECTIVES = ("meanflow", "flow_matching")
_LEGACY_PROVENANCE = ("variant", "step", "duration", "source", "lineage", "training", "feature_store")


@dataclass(frozen=True)
class SamplingSettings:
    """How a model is best sampled: steps, guidance strength ω and guidance rule, and the longest clip
    it generates in one pass (``window`` seconds; longer clips go in cross-faded windows of that length;
    None: the length of its training items)."""

    steps: int
    cfg: float
    guidance: str = "scaled"  # "standard" | "scaled" | "both"
    window: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"recommended steps must be a positive integer, got {self.steps!r}")
        if self.window is not None and not (isinstance(self.window, (int, float)) and self.window > 0):
            raise ValueError(f"recommended window must be a positive number of seconds, got {self.window!r}")
        check_cfg_strength(self.cfg)
        check_guidance(self.guidance)

    @classmethod
    def for_objective(cls, objective: str) -> SamplingSettings:
        """MeanFlow: one step at ω 1.5; flow matching: 25 steps at ω 4.5 (both scaled guidance)."""
        _check_objective(objective)
        return cls(1, 1.5) if objective == "meanflow" else cls(25, 4.5)

    def cfg_for(self, steps: int) -> float:
        """ω for ``steps``: the recommended one at the recommended steps, else 1.5 at one step, 4.5 above."""
        if steps == self.steps:
            return self.cfg
        return 1.5 if steps == 1 else 4.5


@dataclass(frozen=True)
class FeatureSpec:
    """Which feature stack a model uses: a registered ``kind`` (see :mod:`mfmjt.features.registry`),
    its parameters, and the files it keeps in the model directory."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Provenance:
    """Where a model came from, as data: its stages, training config and feature store."""

    variant: str | None = None
    step: int | None = None
    duration: float | None = None  # clip length of the training items, seconds
    source: str | None = None  # e.g. the converted MMAudio file
    lineage: tuple[str, ...] = ()
    training: dict[str, Any] | None = None
    feature_store: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # anything else a writer recorded


@dataclass(frozen=True)
class ModelConfig:
    """Everything in a model directory's ``config.json``."""

    network: NetworkConfig
    objective: str = "meanflow"
    features: FeatureSpec = field(default_factory=lambda: FeatureSpec("mmaudio_16k"))
    sample_rate: int = 16_000
    recommended: SamplingSettings | None = None  # None: SamplingSettings.for_objective(objective)
    name: str = ""
    description: str = ""
    provenance: Provenance = field(default_factory=Provenance)
    weights_dtype: str | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_objective(self.objective)
        if self.recommended is None:
            object.__setattr__(self, "recommended", SamplingSettings.for_objective(self.objective))
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "description": self.description,
            "objective": self.objective,
            "sample_rate": self.sample_rate,
            "network": self.network.to_dict(),
            "features": {**asdict(self.features), "files": list(self.features.files)},
            "recommended": asdict(self.recommended),
            "weights_dtype": self.weights_dtype,
            "provenance": {**asdict(self.provenance), "lineage": list(self.provenance.lineage)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "config.json") -> ModelConfig:
        """Read the current format or, without ``format_version``, an earlier release's layout."""
        if not isinstance(data, Mapping) or "network" not in data:
            raise ValueError(f"{origin}: a model config needs a 'network' section")
        version = data.get("format_version")
        if version is None:
            return config_from_metadata(data, origin)
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{origin}: format_version {version} is not supported by this mfmjt (it reads "
                f"{FORMAT_VERSION} and the unversioned earlier layout); upgrade mfmjt"
            )
        known = {"format_version", "name", "description", "objective", "sample_rate", "network"}
        known |= {"features", "recommended", "weights_dtype", "provenance"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{origin}: unknown fields {sorted(unknown)}")
        try:
            features = dict(data["features"])
            provenance = dict(data.get("provenance") or {})
            return cls(
                network=NetworkConfig.from_dict(dict(data["network"])),
                objective=str(data.get("objective", "meanflow")),
                features=FeatureSpec(
                    str(features["kind"]),
                    dict(features.get("params") or {}),
                    tuple(features.get("files", ())),
                ),
                sample_rate=int(data.get("sample_rate", _kind_sample_rate(str(features["kind"])))),
                recommended=SamplingSettings(**data["recommended"]) if data.get("recommended") else None,
                name=str(data.get("name", "")),
                description=str(data.get("description", "")),
                provenance=Provenance(**{**provenance, "lineage": tuple(provenance.get("lineage", ()))}),
                weights_dtype=data.get("weights_dtype"),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"{origin}: malformed model config ({err})") from err


def flat_metadata(config: ModelConfig) -> dict[str, Any]:
    """``config`` in the unversioned flat layout of earlier releases (``lineage``, ``step``,
    ``training``, ... at the top level; ``features`` as ``{"kind", **params, "files"}``), for code
    written against it. :func:`config_from_metadata` reads it back."""
    prov = config.provenance
    out: dict[str, Any] = {
        "network": config.network.to_dict(),
        "objective": config.objective,
        "name": config.name,
        "description": config.description,
        "sample_rate": config.sample_rate,
        "features": {
            "kind": config.features.kind,
            **config.features.params,
            "files": list(config.features.files),
        },
        "recommended": asdict(config.recommended),
    }
    for key in _LEGACY_PROVENANCE:
        value = getattr(prov, key)
        if value not in (None, ()):
            out[key] = list(value) if key == "lineage" else value
    if config.weights_dtype is not None:
        out["weights_dtype"] = config.weights_dtype
    return {**out, **prov.extra}


def _kind_sample_rate(kind: str) -> int:
    """The sample rate of a built-in feature kind (16 kHz for a kind this mfmjt does not know)."""
    return FEATURE_KIND_RATES.get(kind, 16_000)


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def config_from_metadata(data: Mapping[str, Any], origin: str = "metadata") -> ModelConfig:
    """The unversioned layout of earlier releases (everything flat at the top level), which is also
    what :func:`save_network` receives as keyword metadata."""
    data = dict(data)
    network = NetworkConfig.from_dict(dict(data.pop("network")))
    features_raw = dict(data.pop("features", None) or {"kind": "mmaudio_16k"})
    kind = str(features_raw.pop("kind", "mmaudio_16k"))
    files = tuple(features_raw.pop("files", ()))
    recommended = data.pop("recommended", None)
    if isinstance(recommended, Mapping):
        recommended = SamplingSettings(**recommended)
    provenance: dict[str, Any] = {k: data.pop(k) for k in _LEGACY_PROVENANCE if k in data}
    provenance["lineage"] = tuple(provenance.get("lineage", ()))
    config = ModelConfig(
        network=network,
        objective=str(data.pop("objective", "meanflow")),
        features=FeatureSpec(kind, features_raw, files),
        sample_rate=int(data.pop("sample_rate", _kind_sample_rate(kind))),
        recommended=recommended,
        name=str(data.pop("name", "")),
        description=str(data.pop("description", "")),
        weights_dtype=data.pop("weights_dtype", None),
        provenance=Provenance(**provenance),
    )
    data.pop("format_version", None)
    if data:  # anything else an earlier writer recorded is kept, not dropped
        config = replace(config, provenance=replace(config.provenance, extra=data))
        logger.debug("%s: kept extra metadata %s", origin, sorted(data))
    return config


# ------------------------------------------------------------------------------------ reading
def read_model_config(directory: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of a model directory (either format), without loading weights."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    return ModelConfig.from_dict(data, str(path))


def load_network(directory: str | Path, map_location: str | torch.device = "cpu") -> MFMJTNetwork:
    """The network of a model directory (weights stored in any float type load as float32)."""
    from safetensors.torch import load_file

    from mfmjt.model.network import MFMJTNetwork

    directory = Path(directory)
    config = read_model_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} not found: a model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    net = MFMJTNetwork(config.network)
    net.load_mmaudio_state_dict(load_file(str(weights), device=str(map_location)))
    return net.to(map_location)


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """A model directory's ``config.json`` (any format version) in the flat layout of earlier releases,
    without loading weights; :func:`read_model_config` gives it typed."""
    return flat_metadata(read_model_config(directory))


# ------------------------------------------------------------------------------------ writing
def save_network(
    network: MFMJTNetwork,
    directory: str | Path,
    *,
    weights_dtype: torch.dtype | None = None,
    **metadata: object,
) -> Path:
    """Write ``network`` as a model directory; ``metadata`` are ``config.json``'s fields in the flat
    layout (``objective=``, ``name=``, ``lineage=``, ``source=``, ``features=``, ...). The caller may
    copy the feature stack's files in afterwards (``mfmjt export`` does), so they are not checked."""
    config = config_from_metadata({"network": network.config.to_dict(), **metadata})
    return write_model_dir(directory, network, config, weights_dtype=weights_dtype, check_files=False)


def write_model_dir(
    directory: str | Path,
    network: MFMJTNetwork,
    config: ModelConfig,
    *,
    weights_dtype: torch.dtype | None = None,
    files: Mapping[str, str | Path] | None = None,
    check_files: bool = True,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (and copy ``files``: name in the directory ->
    source path, e.g. a feature stack's codec). ``config.network`` is taken from ``network``.

    ``weights_dtype`` (e.g. ``torch.float16``) stores the floating-point tensors rounded to that
    type, halving the file; loading casts them back into the network's own dtype. ``check_files``:
    refuse a config whose feature files are not in the directory (off for callers that copy them
    in afterwards, e.g. ``mfmjt export`` through :func:`save_network`).
    """
    from safetensors.torch import save_file

    if weights_dtype is not None and not weights_dtype.is_floating_point:
        raise ValueError(f"weights_dtype must be a floating-point dtype, not {weights_dtype}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in network.state_dict().items():
        value = value.detach().cpu()
        if weights_dtype is not None and value.is_floating_point():
            value = value.to(weights_dtype)
        tensors[key] = value.contiguous()
    save_file(tensors, str(directory / WEIGHTS_NAME))
    stored = str(weights_dtype).removeprefix("torch.") if weights_dtype is not None else None
    config = replace(config, network=network.config, weights_dtype=stored)
    for name, source in (files or {}).items():
        if Path(source).resolve() != (directory / name).resolve():
            shutil.copy2(source, directory / name)
    missing = [name for name in config.features.files if not (directory / name).is_file()]
    if check_files and missing:
        raise FileNotFoundError(f"{directory}: the {config.features.kind} features need {missing}")
    (directory / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return directory


__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "config_from_metadata",
    "flat_metadata",
    "FeatureSpec",
    "ModelConfig",
    "Provenance",
    "SamplingSettings",
    "load_network",
    "read_metadata",
    "read_model_config",
    "save_network",
    "write_model_dir",
]
