"""Weight registry, downloads with checksums, a local cache, and MMAudio checkpoint conversion.

Reading order: the registry (what each file is and where it lives), errors, :func:`resolve_file`
(local directory -> cache -> download, md5 verified once and remembered), then conversion of an
MMAudio network ``.pth`` into our ``model.safetensors`` + ``config.json``.

Where files go:

* ``MFMJT_WEIGHTS_DIR`` (or ``local_dir=``): a folder you filled by hand, searched first, by file
  name and by MMAudio's relative path (``ext_weights/v1-16.pth``); nothing is downloaded for a file
  found there.
* Hugging Face sources: the standard Hugging Face cache (``hf_hub_download``).
* Plain URLs (MMAudio's GitHub release): ``$MFMJT_CACHE`` or ``~/.cache/mfmjt``, in MMAudio's layout.

Offline (``HF_HUB_OFFLINE=1``, ``offline=True``, or no connection) a file that is not already on
disk raises :class:`WeightsOfflineError` saying where to get it and where to put it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from os import PathLike
from pathlib import Path, PurePosixPath

import httpx
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import are_progress_bars_disabled
from tqdm.auto import tqdm

from mfmjt.config import VARIANTS, NetworkConfig
from mfmjt.features.audio import read_state_dict
from mfmjt.features.clip import DEFAULT_CLIP_MODEL
from mfmjt.model.network import DT_EMBED_PREFIX, LEGACY_BUFFER_KEYS, MFMJTNetwork

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "MFMJT_WEIGHTS_DIR"
CACHE_ENV = "MFMJT_CACHE"
MMAUDIO_HF_REPO = "hkchengrex/MMAudio"
MMAUDIO_RELEASE_URL = "https://github.com/hkchengrex/MMAudio/releases/download/v0.1"

_MIB = 2**20
_CHUNK = 8 * _MIB
_HTTP_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
_TRUTHY = {"1", "on", "yes", "true"}


# ============================================================================== registry
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
            "Synchformer visual encoder",
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


# ================================================================================ errors
class WeightsUnavailableError(RuntimeError):
    """A weight file is neither on disk nor downloadable; the message says how to supply it."""


class WeightsOfflineError(WeightsUnavailableError):
    """Offline mode or no connection, and the file is not on disk."""


class WeightsDownloadError(WeightsUnavailableError):
    """The server answered with an error or the transfer was cut short."""


class ChecksumMismatchError(WeightsUnavailableError):
    """A file's md5 differs from the registry's; the corrupt file has been removed or renamed."""

    def __init__(self, message: str, *, path: Path, expected: str, actual: str) -> None:
        super().__init__(message)
        self.path, self.expected, self.actual = path, expected, actual


@dataclass(frozen=True)
class _Failure:
    """Why one source could not deliver the file."""

    url: str
    reason: str
    connection: bool  # True: offline or unreachable; False: the server refused


class _SourceUnavailable(Exception):
    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def _how_to_supply(entry: WeightFile) -> str:
    return (
        f"To supply it by hand: download {entry.url} on a machine with internet access "
        f"({entry.size_text}; md5 {entry.md5}), put it in a folder as {entry.filename} (or {entry.path}), "
        f"then set {WEIGHTS_DIR_ENV}=<that folder> or pass local_dir=<that folder>."
    )


def _unavailable_error(
    entry: WeightFile, failures: list[_Failure], offline: bool, local_dir: Path | None
) -> WeightsUnavailableError:
    lines = [f"Weight file {entry.filename} ({entry.description or entry.name}) is not available."]
    if local_dir is not None:
        lines.append(f"  not in {local_dir} (looked for {entry.filename} and {entry.path})")
    lines += [f"  {f.url}: {f.reason}" for f in failures]
    lines.append(f"  expected md5: {entry.md5}")
    lines.append(_how_to_supply(entry))
    connection_only = all(f.connection for f in failures)
    cls = WeightsOfflineError if offline or connection_only else WeightsDownloadError
    return cls("\n".join(lines))


# ============================================================================ checksums
def _md5_file(path: Path) -> str:
    """md5 of a whole file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _memo_path(cache_root: Path, md5: str) -> Path:
    return cache_root / "verified" / f"{md5}.json"


def _fingerprint(path: Path) -> dict[str, object]:
    real = path.resolve()
    st = real.stat()
    return {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _remember_verified(path: Path, md5: str, cache_root: Path) -> None:
    """Record that ``path`` (at its current size and mtime) has md5 ``md5``; best effort."""
    memo = _memo_path(cache_root, md5)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps(_fingerprint(path)))
    except OSError as err:
        logger.debug("could not record the md5 check of %s: %s", path, err)


def _is_remembered(path: Path, md5: str, cache_root: Path) -> bool:
    try:
        return json.loads(_memo_path(cache_root, md5).read_text()) == _fingerprint(path)
    except (OSError, ValueError):
        return False


def _actual_md5_if_wrong(path: Path, md5: str, cache_root: Path) -> str | None:
    """None when ``path`` has md5 ``md5`` (hashed once per size+mtime), else its actual md5."""
    if _is_remembered(path, md5, cache_root):
        return None
    logger.info("checking the md5 of %s", path)
    actual = _md5_file(path)
    if actual != md5:
        return actual
    _remember_verified(path, md5, cache_root)
    return None


def _mismatch(entry: WeightFile, path: Path, actual: str, fate: str) -> ChecksumMismatchError:
    return ChecksumMismatchError(
        f"Checksum mismatch for {entry.filename} ({path}): expected md5 {entry.md5}, got {actual}. "
        f"The corrupt file {fate}.\n{_how_to_supply(entry)}",
        path=path,
        expected=entry.md5,
        actual=actual,
    )


# ============================================================================== resolve
def default_cache_dir() -> Path:
    """``$MFMJT_CACHE`` or ``~/.cache/mfmjt``: URL downloads and the md5 memo."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mfmjt"


def _env_offline() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return env in _TRUTHY or bool(hf_constants.HF_HUB_OFFLINE)


def resolve_file(
    entry: WeightFile | str,
    *,
    local_dir: str | PathLike[str] | None = None,
    cache_dir: str | PathLike[str] | None = None,
    offline: bool | None = None,
    verify: bool = True,
) -> Path:
    """Path of a verified copy of ``entry``, downloading it if needed.

    Order: ``local_dir`` (or ``$MFMJT_WEIGHTS_DIR``), then each source (its cache, then the network).
    ``cache_dir`` replaces both the mfmjt cache and the Hugging Face cache. ``offline`` defaults to
    ``HF_HUB_OFFLINE``. A file's md5 is computed once and remembered for its size and mtime.
    Raises :class:`ChecksumMismatchError` or another :class:`WeightsUnavailableError`.
    """
    entry = weight_file(entry) if isinstance(entry, str) else entry
    offline = _env_offline() if offline is None else offline
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    local = local_dir if local_dir is not None else os.environ.get(WEIGHTS_DIR_ENV) or None
    local_path = Path(local).expanduser() if local is not None else None

    if local_path is not None:
        found = _find_local(entry, local_path)
        if found is not None:
            if verify and (actual := _actual_md5_if_wrong(found, entry.md5, cache_root)) is not None:
                corrupt = found.with_name(found.name + ".corrupt")
                try:
                    os.replace(found, corrupt)
                    fate = f"was renamed to {corrupt}"
                except OSError as err:
                    fate = f"could not be renamed ({err}); replace it"
                raise _mismatch(entry, found, actual, fate)
            logger.info("using %s from %s", entry.filename, found)
            return found
        logger.info("%s not in %s; trying the cache and the network", entry.filename, local_path)

    failures: list[_Failure] = []
    for source in entry.sources:
        try:
            if isinstance(source, HubSource):
                return _resolve_hub(entry, source, cache_dir, cache_root, offline, verify)
            return _resolve_url(entry, source, cache_root, offline, verify)
        except _SourceUnavailable as err:
            (logger.info if offline else logger.warning)("%s: %s", source.url, err.failure.reason)
            failures.append(err.failure)
    raise _unavailable_error(entry, failures, offline, local_path)


def _find_local(entry: WeightFile, folder: Path) -> Path | None:
    if not folder.is_dir():
        logger.warning("%s is not a directory", folder)
        return None
    for candidate in (folder / entry.filename, folder.joinpath(*PurePosixPath(entry.path).parts)):
        if candidate.is_file():
            return candidate
    return None


def _resolve_url(entry: WeightFile, source: UrlSource, cache_root: Path, offline: bool, verify: bool) -> Path:
    target = cache_root.joinpath(*PurePosixPath(entry.path).parts)
    if target.is_file():
        actual = _actual_md5_if_wrong(target, entry.md5, cache_root) if verify else None
        if actual is None:
            return target
        target.unlink()
        if offline:
            raise _mismatch(entry, target, actual, "was removed from the cache")
        logger.warning(
            "cached %s had md5 %s (expected %s); removed, downloading again", target, actual, entry.md5
        )
    if offline:
        raise _SourceUnavailable(_Failure(source.url, f"offline, and not in the cache ({target})", True))
    _download_url(source.url, target, entry, verify=verify)
    if verify:
        _remember_verified(target, entry.md5, cache_root)
    return target


def _download_url(url: str, target: Path, entry: WeightFile, *, verify: bool) -> None:
    """Stream ``url`` into ``target`` atomically (temp file + rename), checking md5 on the fly."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        received, total = 0, None
        with (
            os.fdopen(fd, "wb") as out,
            httpx.Client(follow_redirects=True, timeout=_HTTP_TIMEOUT) as client,
            client.stream("GET", url) as response,
        ):
            if response.is_error:
                reason = f"HTTP {response.status_code} {response.reason_phrase}"
                raise _SourceUnavailable(_Failure(url, reason, False))
            if "content-length" in response.headers and "content-encoding" not in response.headers:
                total = int(response.headers["content-length"])
            logger.info("downloading %s from %s", entry.filename, url)
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=entry.filename,
                disable=are_progress_bars_disabled(),
            ) as bar:
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise _SourceUnavailable(_Failure(url, f"transfer cut short: {received} of {total} bytes", False))
        actual = digest.hexdigest()
        if verify and actual != entry.md5:
            raise _mismatch(entry, target, actual, "(the fresh download) was deleted")
        os.replace(tmp, target)
    except httpx.TransportError as err:
        raise _SourceUnavailable(_Failure(url, f"connection failed: {err}", True)) from err
    finally:
        tmp.unlink(missing_ok=True)


def _resolve_hub(
    entry: WeightFile,
    source: HubSource,
    cache_dir: str | PathLike[str] | None,
    cache_root: Path,
    offline: bool,
    verify: bool,
) -> Path:
    def fetch(force: bool) -> Path:
        try:
            return Path(
                hf_hub_download(
                    source.repo_id,
                    source.filename,
                    revision=source.revision,
                    cache_dir=cache_dir,
                    local_files_only=offline,
                    force_download=force,
                )
            )
        except (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError) as err:
            why = "offline, and not in the Hugging Face cache" if offline else f"no connection ({err})"
            raise _SourceUnavailable(_Failure(source.url, why, True)) from err
        except HfHubHTTPError as err:
            reason = f"Hub error: {err}".splitlines()[0]
            raise _SourceUnavailable(_Failure(source.url, reason, False)) from err

    path = fetch(force=False)
    if not verify or (actual := _actual_md5_if_wrong(path, entry.md5, cache_root)) is None:
        return path
    _remove_hub_file(path)
    if offline:
        raise _mismatch(entry, path, actual, "was removed from the Hugging Face cache")
    logger.warning("%s had md5 %s (expected %s); removed, downloading again", path, actual, entry.md5)
    path = fetch(force=True)
    if (actual := _actual_md5_if_wrong(path, entry.md5, cache_root)) is not None:
        _remove_hub_file(path)
        raise _mismatch(entry, path, actual, "was removed from the Hugging Face cache")
    return path


def _remove_hub_file(path: Path) -> None:
    """Delete a Hugging Face cache entry: the blob and the snapshot link pointing to it."""
    path.resolve().unlink(missing_ok=True)
    if path.is_symlink():
        path.unlink()


# ======================================================================= pinned Hub repos
def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _actual_sha256_if_wrong(path: Path, sha256: str, cache_root: Path) -> str | None:
    """None when ``path`` has this sha256 (hashed once per size+mtime), else its actual sha256."""
    if _is_remembered(path, sha256, cache_root):
        return None
    logger.info("checking the sha256 of %s", path)
    actual = _sha256_file(path)
    if actual != sha256:
        return actual
    _remember_verified(path, sha256, cache_root)
    return None


def _how_to_supply_repo(repo: HubRepoWeights) -> str:
    listing = ", ".join(f"{f.filename} ({f.approx_bytes / _MIB:.0f} MiB)" for f in repo.files)
    return (
        f"To supply them by hand: download {listing} from https://huggingface.co/{repo.repo_id} at "
        f"revision {repo.revision} on a machine with internet access, put them in <folder>/{repo.name}/, "
        f"then set {WEIGHTS_DIR_ENV}=<folder> or pass local_dir=<folder>."
    )


def _download_repo_file(
    repo: HubRepoWeights, filename: str, cache_dir: str | PathLike[str] | None, offline: bool
) -> Path:
    url = repo.url(filename)
    try:
        return Path(
            hf_hub_download(
                repo.repo_id,
                filename,
                revision=repo.revision,
                cache_dir=cache_dir,
                local_files_only=offline,
            )
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError) as err:
        why = "offline, and not in the Hugging Face cache" if offline else f"no connection ({err})"
        raise WeightsOfflineError(
            f"{filename} of {repo.repo_id} ({repo.description}) is not available.\n  {url}: {why}\n"
            + _how_to_supply_repo(repo)
        ) from err
    except HfHubHTTPError as err:
        reason = f"Hub error: {err}".splitlines()[0]
        raise WeightsDownloadError(
            f"{filename} of {repo.repo_id} could not be downloaded.\n  {url}: {reason}\n"
            + _how_to_supply_repo(repo)
        ) from err


def resolve_hub_repo(
    repo: HubRepoWeights | str,
    *,
    local_dir: str | PathLike[str] | None = None,
    cache_dir: str | PathLike[str] | None = None,
    offline: bool | None = None,
    verify: bool = True,
) -> dict[str, Path]:
    """Paths of verified copies of a pinned Hub repository's files (filename -> path).

    Looked for in ``local_dir`` (or ``$MFMJT_WEIGHTS_DIR``) under ``<repo name>/`` or
    ``<owner>/<repo name>/``, else fetched with ``hf_hub_download`` at the pinned revision into the
    Hugging Face cache. Each file's sha256 is checked once per file version; a wrong one raises
    :class:`ChecksumMismatchError` (a downloaded copy is removed from the cache first).
    """
    repo = HUB_REPOS[repo] if isinstance(repo, str) and repo in HUB_REPOS else repo
    if isinstance(repo, str):
        raise ValueError(f"unknown Hub repository {repo!r}; registered: {sorted(HUB_REPOS)}")
    offline = _env_offline() if offline is None else offline
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    local = local_dir if local_dir is not None else os.environ.get(WEIGHTS_DIR_ENV) or None
    folders = []
    if local is not None:
        base = Path(local).expanduser()
        folders = [base / repo.name, base.joinpath(*repo.repo_id.split("/"))]
    paths: dict[str, Path] = {}
    for entry in repo.files:
        found = next((f / entry.filename for f in folders if (f / entry.filename).is_file()), None)
        path = found if found is not None else _download_repo_file(repo, entry.filename, cache_dir, offline)
        if verify and (actual := _actual_sha256_if_wrong(path, entry.sha256, cache_root)) is not None:
            fate = "was left in place; replace it"
            if found is None:
                _remove_hub_file(path)
                fate = "was removed from the Hugging Face cache"
            raise ChecksumMismatchError(
                f"Checksum mismatch for {entry.filename} of {repo.repo_id} ({path}): expected sha256 "
                f"{entry.sha256}, got {actual}. The corrupt file {fate}.\n{_how_to_supply_repo(repo)}",
                path=path,
                expected=entry.sha256,
                actual=actual,
            )
        logger.info("using %s of %s from %s", entry.filename, repo.repo_id, path)
        paths[entry.filename] = path
    return paths


# =================================================================== a pipeline's files
@dataclass(frozen=True)
class PipelineFiles:
    """Local paths of a pipeline's files, and the CLIP model name for open_clip.

    ``network`` is None for a feature stack resolved without its network (:func:`resolve_mmaudio_files`).
    44k: ``vocoder`` is BigVGAN v2's ``bigvgan_generator.pt`` and ``vocoder_config`` its ``config.json``.
    """

    network: Path | None
    vae: Path
    synchformer: Path
    clip_model: str
    vocoder: Path | None = None
    vocoder_repo: str | None = None
    vocoder_config: Path | None = None
    audio_mode: str = "16k"
    variant: str = "small_16k"


def resolve_pipeline_files(
    name: str = "small_16k",
    *,
    local_dir: str | PathLike[str] | None = None,
    cache_dir: str | PathLike[str] | None = None,
    offline: bool | None = None,
    verify: bool = True,
    network: bool = True,
) -> PipelineFiles:
    """Resolve every file of a pipeline (arguments as :func:`resolve_file`); CLIP is left to open_clip.

    ``network=False`` skips the network checkpoint (the feature stack only).
    """
    weights = pipeline_weights(name)
    where = dict(local_dir=local_dir, cache_dir=cache_dir, offline=offline, verify=verify)
    wanted = [f for f in weights.files if network or f is not weights.network]
    paths = {f.name: resolve_file(f, **where) for f in wanted}
    vocoder = paths[weights.vocoder.name] if weights.vocoder else None
    vocoder_config = None
    if weights.vocoder_repo is not None:
        repo_paths = resolve_hub_repo(weights.vocoder_repo, **where)
        vocoder, vocoder_config = repo_paths["bigvgan_generator.pt"], repo_paths["config.json"]
    return PipelineFiles(
        network=paths[weights.network.name] if network else None,
        vae=paths[weights.vae.name],
        synchformer=paths[weights.synchformer.name],
        clip_model=weights.clip.model_name,
        vocoder=vocoder,
        vocoder_repo=weights.vocoder_repo,
        vocoder_config=vocoder_config,
        audio_mode=weights.audio_mode,
        variant=weights.variant,
    )


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
            f"network ({', '.join('mmaudio-' + v.replace('_', '-') for v in PIPELINES)})"
        ) from None


def resolve_mmaudio_files(
    name: str,
    *,
    local_dir: str | PathLike[str] | None = None,
    cache_dir: str | PathLike[str] | None = None,
    offline: bool | None = None,
    verify: bool = True,
) -> PipelineFiles:
    """The files behind any MMAudio name (see :func:`mmaudio_name`): a feature stack ('mmaudio-16k',
    'mmaudio-44k') resolves VAE, vocoder (+ config), Synchformer and the CLIP name with ``network=None``;
    a network name ('mmaudio-large-44k-v2', ...) resolves the same plus its network checkpoint.
    ``files.audio_mode`` says '16k' or '44k'. Arguments as :func:`resolve_file`."""
    variant, with_network = mmaudio_name(name)
    return resolve_pipeline_files(
        variant,
        local_dir=local_dir,
        cache_dir=cache_dir,
        offline=offline,
        verify=verify,
        network=with_network,
    )


# ============================================================================ conversion
def _plain_network_state(state_dict: Mapping[str, object], origin: str) -> dict[str, torch.Tensor]:
    """A network state dict without legacy buffers and without an ``ema_model.`` prefix."""
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        keys = sorted(state_dict)[:8]
        raise ValueError(f"{origin} is not a plain network state dict of tensors (keys: {keys})")
    sd = {k: v for k, v in state_dict.items() if k not in LEGACY_BUFFER_KEYS}
    if all(k.startswith("ema_model.") for k in sd):
        sd = {k.removeprefix("ema_model."): v for k, v in sd.items()}
    return sd  # type: ignore[return-value]


@cache
def _variant_shapes(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = MFMJTNetwork(NetworkConfig.variant(name))
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith(DT_EMBED_PREFIX)}


def infer_variant(state_dict: Mapping[str, torch.Tensor], origin: str = "state dict") -> str:
    """The registered variant whose keys and shapes equal those of a network state dict (Δt part ignored)."""
    sd = _plain_network_state(state_dict, origin)
    shapes = {k: tuple(v.shape) for k, v in sd.items() if not k.startswith(DT_EMBED_PREFIX)}
    matches = [name for name in VARIANTS if _variant_shapes(name) == shapes]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"{origin} fits several variants {matches}; pass variant= explicitly")
    hints = {k: shapes[k] for k in ("latent_mean", "clip_cond_proj.weight", "sync_pos_emb") if k in shapes}
    raise ValueError(
        f"{origin} matches no known network variant ({sorted(VARIANTS)}); {len(shapes)} tensors, e.g. {hints}"
    )


def convert_mmaudio_checkpoint(
    pth_path: str | PathLike[str], out_dir: str | PathLike[str], variant: str | None = None
) -> Path:
    """Convert an MMAudio network ``.pth`` into ``out_dir/model.safetensors`` + ``config.json``.

    The variant is inferred from key shapes when not given. The result is the flow-matching model
    with the Δt embedder initialised to have no effect (``objective: flow_matching``).
    """
    pth_path = Path(pth_path)
    sd = _plain_network_state(read_state_dict(pth_path), str(pth_path))
    if any(k.startswith(DT_EMBED_PREFIX) for k in sd):
        raise ValueError(
            f"{pth_path} already has a Δt embedder ({DT_EMBED_PREFIX}*): it is an MF-MJT state dict, not "
            "MMAudio's; load it with MFMJTNetwork.load_mmaudio_state_dict and save_pretrained instead"
        )
    if variant is None:
        variant = infer_variant(sd, str(pth_path))
        logger.info("%s: inferred network variant %s", pth_path.name, variant)
    net = MFMJTNetwork(NetworkConfig.variant(variant))
    try:
        net.load_mmaudio_state_dict(sd)
    except ValueError as err:
        raise ValueError(f"{pth_path} does not fit variant {variant!r}: {err}") from err
    out = net.save_pretrained(out_dir, objective="flow_matching", source=pth_path.name, variant=variant)
    logger.info("converted %s (%s) -> %s", pth_path.name, variant, out)
    return out


def convert_command(
    checkpoint: str,
    out_dir: str,
    *,
    variant: str | None = None,
    local_dir: str | None = None,
    cache_dir: str | None = None,
    offline: bool | None = None,
) -> Path:
    """``mfmjt convert``: ``checkpoint`` is a ``.pth`` file or a network registry name
    (``mmaudio_small_16k``, ``mmaudio-large-44k-v2``, ``large_44k_v2``, ...)."""
    if Path(checkpoint).is_file():
        return convert_mmaudio_checkpoint(checkpoint, out_dir, variant=variant)
    try:
        pipeline = pipeline_weights(checkpoint)  # mmaudio_large_44k_v2, mmaudio-large-44k-v2, large_44k_v2
    except ValueError:
        names = sorted(p.network.name for p in PIPELINES.values())
        raise FileNotFoundError(
            f"{checkpoint} is neither a file nor a network in the registry ({names})"
        ) from None
    path = resolve_file(pipeline.network, local_dir=local_dir, cache_dir=cache_dir, offline=offline)
    return convert_mmaudio_checkpoint(path, out_dir, variant=variant or pipeline.variant)
