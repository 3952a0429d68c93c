"""The weight registry: every pretrained file mfmjt can load, where it lives and its checksum.

MMAudio's networks (one per size), its feature-stack files (VAE, vocoder, Synchformer), the CLIP model
open_clip fetches itself, pinned Hugging Face repositories (BigVGAN v2), and where the embedded default
model lives. Only data and name lookups, without torch (the demo's page reads them before torch is
imported): fetching and checking the files is :mod:`mfmjt.hub`, turning a network file into a model
directory :mod:`mfmjt.convert`, and one model name into a loadable source :mod:`mfmjt.resolve`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mfmjt.config import DEFAULT_CLIP_MODEL

MMAUDIO_HF_REPO = "hkchengrex/MMAudio"
MMAUDIO_RELEASE_URL = "https://github.com/hkchengrex/MMAudio/releases/download/v0.1"

_MIB = 2**20

PACKAGE_ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL_ENV = "MFMJT_DEFAULT_MODEL"


def default_model_dir() -> Path:
    """The embedded default model shipped inside the package, ``mfmjt/assets/default`` (or the
    directory ``$MFMJT_DEFAULT_MODEL`` names)."""
    return Path(os.environ.get(DEFAULT_MODEL_ENV, PACKAGE_ASSETS / "default"))


@dataclass(frozen=True)
class HubSource:
    """A file in a Hugging Face model repository."""

    repo_id: str
    filename: str  # path inside the repo
    revision: str | None = None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/resolve/{self.revision or 'main'}/{self.filename}"


@dataclass(frozen=True)
class UrlSource:
    """A file behind a plain HTTP(S) URL."""

    url: str


Source = HubSource | UrlSource


@dataclass(frozen=True)
class WeightFile:
    """One checkpoint file: where it lives in MMAudio's layout, its md5 and where to fetch it.

    ``sources`` are tried in order; the first is the reference location.
    """

    name: str  # registry key
    path: str  # MMAudio's relative path, e.g. "ext_weights/v1-16.pth"; also the cache layout
    md5: str
    approx_bytes: int
    sources: tuple[Source, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.md5) != 32 or any(c not in "0123456789abcdef" for c in self.md5):
            raise ValueError(f"{self.name}: md5 must be 32 lower-case hex digits, got {self.md5!r}")
        if PurePosixPath(self.path).is_absolute() or ".." in PurePosixPath(self.path).parts:
            raise ValueError(f"{self.name}: path must be relative and inside its folder, got {self.path!r}")

    @property
    def filename(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def url(self) -> str:
        """The reference download URL (of the first source)."""
        return self.sources[0].url if self.sources else "(no known source)"

    @property
    def size_text(self) -> str:
        mib = self.approx_bytes / _MIB
        return f"about {mib / 1024:.1f} GiB" if mib >= 1024 else f"about {mib:.0f} MiB"


@dataclass(frozen=True)
class OpenClipWeights:
    """CLIP weights that open_clip fetches itself into the Hugging Face cache (no md5 published)."""

    model_name: str  # what open_clip.create_model_from_pretrained takes

    @property
    def repo_id(self) -> str:
        return self.model_name.removeprefix("hf-hub:")


@dataclass(frozen=True)
class PipelineWeights:
    """Everything one MMAudio-size pipeline loads; ``vocoder`` is None where it is a Hub repo instead."""

    variant: str  # NetworkConfig.variant name
    network: WeightFile
    vae: WeightFile
    synchformer: WeightFile
    clip: OpenClipWeights
    vocoder: WeightFile | None = None
    vocoder_repo: str | None = None  # 44k: NVIDIA BigVGAN-v2, loaded from the Hub by repo id

    @property
    def files(self) -> tuple[WeightFile, ...]:
        return tuple(f for f in (self.network, self.vae, self.vocoder, self.synchformer) if f is not None)

    @property
    def audio_mode(self) -> str:
        """'16k' or '44k' (a key of :data:`mfmjt.config.AUDIO_MODES`)."""
        return "44k" if self.variant.endswith(("44k", "44k_v2")) else "16k"


def _network_file(variant: str, md5: str, approx_bytes: int) -> WeightFile:
    path = f"weights/mmaudio_{variant}.pth"
    return WeightFile(
        name=f"mmaudio_{variant}",
        path=path,
        md5=md5,
        approx_bytes=approx_bytes,
        sources=(HubSource(MMAUDIO_HF_REPO, path),),
        description=f"MMAudio flow-prediction network, {variant}",
    )


def _ext_file(name: str, filename: str, md5: str, approx_bytes: int, description: str) -> WeightFile:
    # MMAudio downloads these from its GitHub release (the md5s are of those files). The HF model repo
    # holds copies under ext_weights/ (third-party code fetches them there); kept as a fallback.
    path = f"ext_weights/{filename}"
    return WeightFile(
        name=name,
        path=path,
        md5=md5,
        approx_bytes=approx_bytes,
        sources=(UrlSource(f"{MMAUDIO_RELEASE_URL}/{filename}"), HubSource(MMAUDIO_HF_REPO, path)),
        description=description,
    )


# md5s and sizes: MMAudio's mmaudio/utils/download_utils.py and docs/MODELS.md (sizes in MiB/GiB).
WEIGHT_FILES: dict[str, WeightFile] = {
    f.name: f
    for f in (
        _network_file("small_16k", "af93cde404179f58e3919ac085b8033b", 601 * _MIB),
        _network_file("small_44k", "babd74c884783d13701ea2820a5f5b6d", 601 * _MIB),
        _network_file("medium_44k", "5a56b6665e45a1e65ada534defa903d0", int(2.4 * 1024 * _MIB)),
        _network_file("large_44k", "fed96c325a6785b85ce75ae1aafd2673", int(3.9 * 1024 * _MIB)),
        _network_file("large_44k_v2", "01ad4464f049b2d7efdaa4c1a59b8dfe", int(3.9 * 1024 * _MIB)),
        _ext_file("vae_16k", "v1-16.pth", "69f56803f59a549a1a507c93859fd4d7", 655 * _MIB, "16 kHz mel VAE"),
        _ext_file(
            "vae_44k",
            "v1-44.pth",
            "fab020275fa44c6589820ce025191600",
            int(1.2 * 1024 * _MIB),
            "44.1 kHz mel VAE",
        ),
        _ext_file(
            "bigvgan_16k",
            "best_netG.pt",
            "eeaf372a38a9c31c362120aba2dde292",
            429 * _MIB,
            "16 kHz BigVGAN vocoder (Make-An-Audio 2)",
        ),
        _ext_file(
            "synchformer",
            "synchformer_state_dict.pth",
            "5b2f5594b0730f70e41e549b7c94390c",
            907 * _MIB,
            "Synchformer (its visual encoder feeds generation; the whole model scores DeSync)",
        ),
    )
}

CLIP_WEIGHTS = OpenClipWeights(DEFAULT_CLIP_MODEL)
BIGVGAN_44K_REPO = "nvidia/bigvgan_v2_44khz_128band_512x"


@dataclass(frozen=True)
class HubRepoFile:
    """One file of a pinned Hugging Face repository, with its sha256 (the Hub's LFS id)."""

    filename: str
    sha256: str
    approx_bytes: int

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"{self.filename}: sha256 must be 64 lower-case hex digits, got {self.sha256!r}")


@dataclass(frozen=True)
class HubRepoWeights:
    """Weights that MMAudio loads from a Hub repository by id (BigVGAN v2's ``from_pretrained``), here
    pinned to one revision so that the files cannot change under a released model."""

    repo_id: str
    revision: str  # a commit of the Hub repository
    files: tuple[HubRepoFile, ...]
    description: str = ""

    @property
    def name(self) -> str:
        return self.repo_id.rsplit("/", 1)[-1]

    def file(self, filename: str) -> HubRepoFile:
        for f in self.files:
            if f.filename == filename:
                return f
        raise ValueError(f"{self.repo_id} has no registered file {filename!r}")

    def url(self, filename: str) -> str:
        return HubSource(self.repo_id, filename, self.revision).url


# Revision, sizes and sha256s of the repository's files at that revision, as recorded by projects that
# pin it (the checkpoint's sha256 is its LFS object id on the Hub).
HUB_REPOS: dict[str, HubRepoWeights] = {
    BIGVGAN_44K_REPO: HubRepoWeights(
        BIGVGAN_44K_REPO,
        revision="95a9d1dcb12906c03edd938d77b9333d6ded7dfb",
        files=(
            HubRepoFile(
                "config.json", "65b7f487bfaf15256056a75f6667ef5f640214c981922a111927873705ea4ddb", 1403
            ),
            HubRepoFile(
                "bigvgan_generator.pt",
                "d9fe7ec6bd0b44ed9d66973d5012d8181c1570b01e5c72df51973e241dccd357",
                489_041_291,
            ),
        ),
        description="44.1 kHz BigVGAN v2 vocoder (NVIDIA), generator and its config.json",
    )
}

PIPELINES: dict[str, PipelineWeights] = {
    "small_16k": PipelineWeights(
        "small_16k",
        network=WEIGHT_FILES["mmaudio_small_16k"],
        vae=WEIGHT_FILES["vae_16k"],
        vocoder=WEIGHT_FILES["bigvgan_16k"],
        synchformer=WEIGHT_FILES["synchformer"],
        clip=CLIP_WEIGHTS,
    ),
    **{
        v: PipelineWeights(
            v,
            network=WEIGHT_FILES[f"mmaudio_{v}"],
            vae=WEIGHT_FILES["vae_44k"],
            synchformer=WEIGHT_FILES["synchformer"],
            clip=CLIP_WEIGHTS,
            vocoder_repo=BIGVGAN_44K_REPO,
        )
        for v in ("small_44k", "medium_44k", "large_44k", "large_44k_v2")
    },
}


def weight_file(name: str) -> WeightFile:
    """A registry entry by key (``mmaudio_small_16k``) or file name (``v1-16.pth``)."""
    if name in WEIGHT_FILES:
        return WEIGHT_FILES[name]
    for entry in WEIGHT_FILES.values():
        if name in (entry.filename, entry.path):
            return entry
    raise ValueError(f"unknown weight file {name!r}; choose one of {sorted(WEIGHT_FILES)}")


def pipeline_weights(name: str) -> PipelineWeights:
    """The files of a pipeline: ``small_16k``, ``mmaudio-small-16k``, ``mmaudio_small_16k(.pth)``."""
    key = name.removesuffix(".pth").removeprefix("mmaudio-").removeprefix("mmaudio_").replace("-", "_")
    if key not in PIPELINES:
        raise ValueError(f"unknown MMAudio pipeline {name!r}; choose one of {sorted(PIPELINES)}")
    return PIPELINES[key]


MMAUDIO_VARIANTS: tuple[str, ...] = tuple(PIPELINES)


def mmaudio_model_name(variant: str) -> str:
    """The canonical name of an MMAudio network: ``small_16k`` -> ``mmaudio-small-16k``."""
    return "mmaudio-" + variant.replace("_", "-")


# every spelling of an MMAudio network, canonical first: mmaudio-large-44k-v2, mmaudio_large_44k_v2,
# large_44k_v2 (pipeline_weights also takes a trailing .pth and mixed separators)
MMAUDIO_NAMES: dict[str, str] = {
    spelling: v for v in MMAUDIO_VARIANTS for spelling in (mmaudio_model_name(v), f"mmaudio_{v}", v)
}

# Feature stacks by name: the files of the named pipeline without its network (every 44k network
# shares one VAE, vocoder, Synchformer and CLIP).
FEATURE_STACKS: dict[str, str] = {"mmaudio-16k": "small_16k", "mmaudio-44k": "small_44k"}


def mmaudio_name(name: str) -> tuple[str, bool]:
    """(pipeline variant, whether the name includes its network) for any MMAudio name.

    Feature stacks: ``mmaudio-16k``, ``mmaudio-44k`` (also ``mmaudio_44k``, ``16k``, ``44k``).
    Networks: ``mmaudio-large-44k-v2``, ``mmaudio_large_44k_v2(.pth)``, ``large_44k_v2``, ...
    """
    stack = "mmaudio-" + name.removeprefix("mmaudio-").removeprefix("mmaudio_")
    if stack in FEATURE_STACKS:
        return FEATURE_STACKS[stack], False
    try:
        return pipeline_weights(name).variant, True
    except ValueError:
        raise ValueError(
            f"unknown MMAudio name {name!r}: use a feature stack ({', '.join(FEATURE_STACKS)}) or a "
            f"network ({', '.join(map(mmaudio_model_name, PIPELINES))})"
        ) from None
