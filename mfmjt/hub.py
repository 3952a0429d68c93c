"""Downloads with checksums and a local cache: the files of :mod:`mfmjt.weights` on disk.

Reading order: errors, checksums, :func:`resolve_file` (local directory -> cache -> download, md5
verified once and remembered), pinned Hub repositories, then every file of one MMAudio pipeline. What
each file is lives in :mod:`mfmjt.weights` (re-exported here); turning a network file into a model
directory is :mod:`mfmjt.convert`.

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
from dataclasses import dataclass
from os import PathLike
from pathlib import Path, PurePosixPath

import httpx
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import are_progress_bars_disabled
from tqdm.auto import tqdm

from mfmjt.weights import (  # noqa: F401 (the registry, re-exported: mfmjt.hub.PIPELINES etc. keep working)
    BIGVGAN_44K_REPO,
    CLIP_WEIGHTS,
    FEATURE_STACKS,
    HUB_REPOS,
    MMAUDIO_HF_REPO,
    MMAUDIO_RELEASE_URL,
    PIPELINES,
    WEIGHT_FILES,
    HubRepoFile,
    HubRepoWeights,
    HubSource,
    OpenClipWeights,
    PipelineWeights,
    Source,
    UrlSource,
    WeightFile,
    mmaudio_name,
    pipeline_weights,
    weight_file,
)

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "MFMJT_WEIGHTS_DIR"
CACHE_ENV = "MFMJT_CACHE"

_MIB = 2**20
_CHUNK = 8 * _MIB
_HTTP_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
_TRUTHY = {"1", "on", "yes", "true"}


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
