"""One resolver for every model name mfmjt accepts: a name in, one :class:`ModelSource` out.

Names, tried in this order:

* ``default``: the embedded default model (``mfmjt/assets/default``, or ``$MFMJT_DEFAULT_MODEL``);
* an MMAudio network in any spelling (``mmaudio-small-16k``, ``mmaudio_small_16k``, ``small_16k``,
  ``mmaudio_small_16k.pth``): its public weights through :mod:`mfmjt.hub`, downloaded when first used;
* a model directory (``config.json`` + ``model.safetensors``), or either file inside one;
* a network state-dict file (MMAudio's ``.pth``, a ``.pt`` or ``.safetensors``): its variant is read
  from its tensor shapes;
* a Hugging Face repository id (``user/repo``) holding a model directory.

A :class:`ModelSource` describes what was found without loading the network: its :class:`ModelConfig`
(network architecture, objective, feature stack, sample rate, recommended sampling) and where the
weights are. ``load_pipeline``, ``mfmjt train --init-from``, ``mfmjt distill --teacher``, ``mfmjt
convert`` and the extraction's feature stacks all go through :func:`resolve_model`, so every command
accepts every name.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
from safetensors import safe_open
from safetensors.torch import load_file

from mfmjt import hub
from mfmjt.config import AUDIO_MODES, VARIANTS, NetworkConfig
from mfmjt.convert import network_config_of
from mfmjt.features.audio import read_state_dict
from mfmjt.model.network import DT_EMBED_PREFIX, MFMJTNetwork
from mfmjt.model_dir import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    FeatureSpec,
    ModelConfig,
    Provenance,
    load_network,
    read_model_config,
    write_model_dir,
)
from mfmjt.weights import (
    DEFAULT_MODEL_ENV,
    MMAUDIO_NAMES,
    MMAUDIO_VARIANTS,
    PACKAGE_ASSETS,
    default_model_dir,
    mmaudio_model_name,
    pipeline_weights,
)

logger = logging.getLogger(__name__)

STATE_DICT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
KINDS = ("default", "mmaudio", "directory", "file", "hub")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

__all__ = [
    "DEFAULT_MODEL_ENV",
    "KINDS",
    "MMAUDIO_NAMES",
    "MMAUDIO_VARIANTS",
    "PACKAGE_ASSETS",
    "ModelNotFoundError",
    "ModelSource",
    "accepted_names",
    "convert_model",
    "default_model_dir",
    "resolve_model",
]


class ModelNotFoundError(ValueError):
    """A model name that is none of the accepted kinds; the message lists them."""


def accepted_names() -> str:
    """What a model name may be, for messages and help texts."""
    return (
        "'default', an MMAudio network (" + ", ".join(map(mmaudio_model_name, MMAUDIO_VARIANTS)) + "), "
        "a model directory, a network checkpoint (.pth/.safetensors) or a Hugging Face repo id (user/repo)"
    )


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and what it is, before its weights are loaded.

    ``kind`` is one of :data:`KINDS`. ``directory`` is set for model directories (``default``,
    ``directory``, ``hub``), ``file`` for a state-dict file, ``variant`` for MMAudio networks (and files,
    whose variant is read from their shapes).
    """

    name: str
    kind: str
    config: ModelConfig
    directory: Path | None = None
    file: Path | None = None
    variant: str | None = None

    # ------------------------------------------------------------------------ what it is
    @property
    def network_config(self) -> NetworkConfig:
        return self.config.network

    @property
    def objective(self) -> str:
        return self.config.objective

    @property
    def features(self) -> FeatureSpec:
        return self.config.features

    @property
    def recommended(self):  # -> SamplingSettings
        return self.config.recommended

    @property
    def audio_mode(self) -> str:
        """'16k' or '44k': the audio mode of the model's sample rate."""
        for mode, audio in AUDIO_MODES.items():
            if audio.sample_rate == self.config.sample_rate:
                return mode
        raise ValueError(f"{self.name}: no audio mode runs at {self.config.sample_rate} Hz")

    def architecture(self) -> tuple[str, dict[str, object]]:
        """(variant, overrides) such that ``NetworkConfig.variant(variant, **overrides)`` is this model's
        network: the recorded variant when it has one, else the registered variant closest to it."""
        network = self.network_config.to_dict()
        recorded = self.variant or self.config.provenance.variant
        candidates = [recorded] if recorded in VARIANTS else []
        candidates += sorted(
            VARIANTS, key=lambda v: sum(VARIANTS[v].to_dict()[k] != x for k, x in network.items())
        )
        variant = candidates[0]
        base = VARIANTS[variant].to_dict()
        return variant, {k: v for k, v in network.items() if base[k] != v}

    def describe(self) -> str:
        where = self.directory or self.file or f"MMAudio's public {self.variant} weights"
        return f"{self.name} ({self.kind}: {where}; {self.objective}, {self.features.kind} features)"

    # -------------------------------------------------------------------------- weights
    def network_path(self, **resolve: object) -> Path:
        """The network's weight file; an MMAudio network's is downloaded (and md5-checked) here.
        ``resolve``: local_dir, cache_dir, offline, verify, as :func:`mfmjt.hub.resolve_file`."""
        if self.directory is not None:
            return self.directory / WEIGHTS_NAME
        if self.file is not None:
            return self.file
        return hub.resolve_file(pipeline_weights(str(self.variant)).network, **resolve)  # type: ignore[arg-type]

    def state_dict(self, **resolve: object) -> dict[str, torch.Tensor]:
        """The network's state dict as stored (MMAudio's keys; no Δt embedder in MMAudio's files)."""
        return _read_weights(self.network_path(**resolve))

    def load_network(self, map_location: str | torch.device = "cpu", **resolve: object) -> MFMJTNetwork:
        """The network with its weights (float32), Δt embedder added where the checkpoint has none."""
        if self.directory is not None:
            return load_network(self.directory, map_location=map_location)
        net = MFMJTNetwork(self.network_config)
        net.load_mmaudio_state_dict(self.state_dict(**resolve))
        return net.to(map_location)

    def feature_files(self) -> dict[str, Path]:
        """The feature stack's own files (e.g. the offline codec): name -> path."""
        if self.directory is None:
            return {}
        return {name: self.directory / name for name in self.features.files}


# ------------------------------------------------------------------------------------ resolving
def resolve_model(
    name: str | os.PathLike[str], *, variant: str | None = None, network: NetworkConfig | None = None
) -> ModelSource:
    """The :class:`ModelSource` behind any model name (see the module docstring for the order).

    ``variant`` names the architecture of a state-dict file whose shapes fit several (otherwise it is
    read from the shapes); ``network`` with it gives the whole architecture of a state-dict file whose
    shapes fit no registered variant (a network trained with overrides, e.g. ``mfmjt train``'s
    ``--variant tiny --network hidden_dim=64``: a bare state dict does not record its head count).
    Raises :class:`ModelNotFoundError` for a name that is nothing known, and ValueError /
    FileNotFoundError for a directory or file that is not a model.
    """
    text = str(name).strip()
    if not text:
        raise ModelNotFoundError(f"empty model name: give {accepted_names()}")
    if text == "default":
        directory = default_model_dir()
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"the embedded default model is missing from {directory} (reinstall mfmjt, or point "
                f"{DEFAULT_MODEL_ENV} at a model directory)"
            )
        return _directory_source(text, "default", directory)
    path = Path(text).expanduser()
    if not path.exists():
        mmaudio = MMAUDIO_NAMES.get(text) or _registry_variant(text)
        if mmaudio is not None:
            return _mmaudio_source(text, mmaudio)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise ModelNotFoundError(
                f"{path} is a folder but not a model directory (it has no {CONFIG_NAME}); "
                f"give {accepted_names()}"
            )
        return _directory_source(text, "directory", path)
    if path.is_file():
        if path.name in (CONFIG_NAME, WEIGHTS_NAME) and (path.parent / CONFIG_NAME).is_file():
            return _directory_source(text, "directory", path.parent)
        if path.suffix.lower() not in STATE_DICT_SUFFIXES:
            raise ModelNotFoundError(
                f"{path} is not a network checkpoint ({', '.join(STATE_DICT_SUFFIXES)}); "
                f"give {accepted_names()}"
            )
        return _file_source(text, path, variant, network)
    if _REPO_ID.match(text) and not text.startswith((".", "~")):
        return _hub_source(text)
    raise ModelNotFoundError(
        f"{text!r} is no model: not found on disk and not a known name; give {accepted_names()}"
    )


def _registry_variant(text: str) -> str | None:
    try:
        return pipeline_weights(text).variant
    except ValueError:
        return None


def _directory_source(name: str, kind: str, directory: Path) -> ModelSource:
    config = read_model_config(directory)
    if not (directory / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"{directory / WEIGHTS_NAME} not found: a model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    variant = config.provenance.variant if config.provenance.variant in VARIANTS else None
    return ModelSource(name, kind, config, directory=directory, variant=variant)


def _mmaudio_config(variant: str, source: str, network: NetworkConfig | None = None) -> ModelConfig:
    mode = pipeline_weights(variant).audio_mode if variant in MMAUDIO_VARIANTS else _mode_of(network)
    return ModelConfig(
        network=network or NetworkConfig.variant(variant),
        objective="flow_matching",
        features=FeatureSpec(f"mmaudio_{mode}"),
        sample_rate=AUDIO_MODES[mode].sample_rate,
        name=f"MMAudio {variant}",
        description=(
            f"MMAudio's public {variant} weights in the MF-MJT network (Δt ignored): a flow-matching "
            "model, good at 25 steps and poor at one step. No public MF-MJT weights exist yet."
        ),
        provenance=Provenance(variant=variant, source=source),
    )


def _mode_of(network: NetworkConfig | None) -> str:
    latent = network.latent_dim if network is not None else 20
    return next((m for m, a in AUDIO_MODES.items() if a.latent_dim == latent), "16k")


def _mmaudio_source(name: str, variant: str) -> ModelSource:
    config = _mmaudio_config(variant, pipeline_weights(variant).network.filename)
    return ModelSource(name, "mmaudio", config, variant=variant)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        return load_file(str(path))
    return read_state_dict(path, mmap=True)


def _file_source(name: str, path: Path, variant: str | None, network: NetworkConfig | None) -> ModelSource:
    if path.suffix.lower() == ".safetensors":
        with safe_open(str(path), framework="pt") as f:  # shapes only: nothing is loaded
            keys = list(f.keys())
            state = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in keys}
    else:
        try:
            state = read_state_dict(path, mmap=True)
        except Exception as err:  # noqa: BLE001 (torch raises many kinds for a file that is not a checkpoint)
            raise ValueError(f"{path} is not a readable network checkpoint: {err}".splitlines()[0]) from None
    if variant is None:
        variant, network = network_config_of(state, str(path))
    elif network is None:
        network = NetworkConfig.variant(variant)
    has_dt = any(k.startswith(DT_EMBED_PREFIX) for k in state)
    config = _mmaudio_config(variant, path.name, network)
    if has_dt:  # an MF-MJT network saved as a bare state dict: trained with the MeanFlow objective
        config = replace(config, objective="meanflow", recommended=None, name=path.stem, description="")
    if variant not in MMAUDIO_VARIANTS:  # e.g. tiny: the toy's stack needs a model directory's files
        config = replace(config, features=FeatureSpec("offline"), name=path.stem, description="")
    return ModelSource(name, "file", config, file=path, variant=variant)


def _hub_source(repo_id: str) -> ModelSource:
    try:
        directory = Path(snapshot_download(repo_id))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError) as err:
        raise ModelNotFoundError(
            f"{repo_id!r} is not on disk, and the Hugging Face repository could not be reached "
            f"({type(err).__name__}); check the name, or connect and try again"
        ) from None
    except HfHubHTTPError as err:
        reason = str(err).splitlines()[0]
        raise ModelNotFoundError(
            f"{repo_id!r} is neither on disk nor a Hugging Face model repository ({reason}); "
            f"give {accepted_names()}"
        ) from None
    if not (directory / CONFIG_NAME).is_file():
        raise ModelNotFoundError(
            f"the Hugging Face repository {repo_id} holds no model directory ({CONFIG_NAME})"
        )
    return _directory_source(repo_id, "hub", directory)


# ------------------------------------------------------------------------------------ converting
def convert_model(name: str, out_dir: str | os.PathLike[str], *, variant: str | None = None) -> Path:
    """``mfmjt convert``: any model name -> a model directory in the current format (an MMAudio
    network: its flow-matching model with a Δt embedder that has no effect, and MMAudio's features)."""
    source = resolve_model(name, variant=variant)
    out = Path(out_dir)
    if source.directory is not None and out.resolve() == source.directory.resolve():
        raise ValueError(f"{out} is the model being converted: give another output directory")
    network = source.load_network()
    write_model_dir(out, network, source.config, files=source.feature_files())
    logger.info("converted %s -> %s", source.describe(), out)
    return out
