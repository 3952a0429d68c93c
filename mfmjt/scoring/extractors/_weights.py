"""Where each extractor's published checkpoint lives, how it is fetched, and the seeded random build.

A checkpoint with a known md5 goes through :func:`mfmjt.hub.resolve_file` (``MFMJT_WEIGHTS_DIR`` or
``local_dir``, then the mfmjt cache, then the URL; md5 checked once and remembered). A checkpoint for
which only a sha256 is known is found the same way (the hand-filled folder, then the cache
``$MFMJT_CACHE/scoring/``, then the URL) and checked against its sha256 here; one for which no checksum
is published (ImageBind) is found the same way, its sha256 logged for the user to compare, and checked by
loading (every tensor name and shape of the architecture must be in it). Offline, either raises
:class:`mfmjt.hub.WeightsOfflineError` naming the URL, the file name, its checksum and where to put it.

``weights="random"`` builds the real architecture with seeded random weights (:func:`randomize`): every
learned tensor is drawn from a generator seeded by the seed and the tensor's name, so a build depends
on neither the order of construction nor torch's default initialisers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mfmjt import hub

logger = logging.getLogger(__name__)

RANDOM = "random"
_TRUTHY = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class ScoringWeights:
    """One published checkpoint of a scoring model."""

    name: str  # the extractor it belongs to
    filename: str  # the published file name, and the name looked for in MFMJT_WEIGHTS_DIR
    url: str
    approx_bytes: int
    md5: str | None = None
    sha256: str | None = None  # the full hash, or a prefix where only that is published (torch.hub names)
    checksum_source: str = ""  # where the checksum was taken from, or why there is none
    description: str = ""
    # a file the generation pipeline loads too (Synchformer): resolved through its entry of the weight
    # registry, so that one copy (MFMJT_WEIGHTS_DIR, the cache, its mirrors) serves both
    shared: hub.WeightFile | None = None

    def __post_init__(self) -> None:
        if self.md5 is not None and self.sha256 is not None:
            raise ValueError(f"{self.name}: give at most one of md5 and sha256")
        if self.md5 is None and self.sha256 is None and not self.checksum_source:
            raise ValueError(f"{self.name}: without a checksum, say in checksum_source why there is none")
        if self.shared is not None and self.md5 != self.shared.md5:
            raise ValueError(f"{self.name}: md5 differs from the shared entry {self.shared.name}")

    @property
    def cache_path(self) -> str:
        return f"scoring/{self.filename}"

    def weight_file(self) -> hub.WeightFile:
        assert self.md5 is not None
        if self.shared is not None:
            return self.shared
        return hub.WeightFile(
            name=f"scoring_{self.name}",
            path=self.cache_path,
            md5=self.md5,
            approx_bytes=self.approx_bytes,
            sources=(hub.UrlSource(self.url),),
            description=self.description,
        )

    def how_to_supply(self) -> str:
        check = (
            f"md5 {self.md5}"
            if self.md5
            else f"sha256 {self.sha256}"
            if self.sha256
            else "no published checksum"
        )
        return (
            f"Download {self.url} ({self.approx_bytes / 2**20:.0f} MiB, {check}) on a machine with internet "
            f"access, put it in a folder as {self.filename}, and set {hub.WEIGHTS_DIR_ENV}=<that folder> "
            f"(or pass weights=<the file>)."
        )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


def _resolve_sha256(spec: ScoringWeights, offline: bool) -> Path:
    local = os.environ.get(hub.WEIGHTS_DIR_ENV)
    candidates = []
    if local:
        candidates += [Path(local).expanduser() / spec.filename, Path(local).expanduser() / spec.cache_path]
    cached = hub.default_cache_dir() / spec.cache_path
    candidates.append(cached)
    for path in candidates:
        if path.is_file():
            if spec.sha256 is None:
                return path  # nothing to compare with; load_state_dict checks the contents
            actual = _sha256(path)
            if not actual.startswith(str(spec.sha256)):
                raise hub.ChecksumMismatchError(
                    f"Checksum mismatch for {path}: expected sha256 {spec.sha256}, got {actual}. "
                    f"Remove it. {spec.how_to_supply()}",
                    path=path,
                    expected=str(spec.sha256),
                    actual=actual,
                )
            return path
    if offline:
        raise hub.WeightsOfflineError(
            f"{spec.description} ({spec.filename}) is not on disk and we are offline. {spec.how_to_supply()}"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=f".{spec.filename}.", suffix=".part")
    os.close(fd)
    try:
        # torch's downloader (the one torch.hub uses); the full sha256 is checked below
        torch.hub.download_url_to_file(spec.url, tmp, progress=True)
    except OSError as err:  # URLError is an OSError: no connection, DNS failure, HTTP error
        Path(tmp).unlink(missing_ok=True)
        raise hub.WeightsOfflineError(
            f"Could not download {spec.url} ({err}). {spec.how_to_supply()}"
        ) from err
    actual = _sha256(Path(tmp))
    if spec.sha256 is None:
        logger.info("downloaded %s: sha256 %s (no checksum is published to compare with)", spec.url, actual)
    elif not actual.startswith(str(spec.sha256)):
        Path(tmp).unlink(missing_ok=True)
        raise hub.ChecksumMismatchError(
            f"The download of {spec.url} has sha256 {actual}, expected {spec.sha256}; it was deleted. "
            f"{spec.how_to_supply()}",
            path=cached,
            expected=str(spec.sha256),
            actual=actual,
        )
    os.replace(tmp, cached)
    return cached


def resolve(spec: ScoringWeights, *, offline: bool | None = None) -> Path:
    """Path of a verified copy of ``spec``'s checkpoint, downloading it if needed (see the module doc)."""
    offline = _offline() if offline is None else offline
    if spec.md5 is not None:
        return hub.resolve_file(spec.weight_file(), offline=offline)
    return _resolve_sha256(spec, offline)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: a plain state dict, or one nested under ``model``/``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist; pass an existing file, None or 'random'"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def _tensor_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


@torch.no_grad()
def randomize(
    module: nn.Module, seed: int, keep: Callable[[str], bool] = lambda name: False, prefix: str = ""
) -> None:
    """Fill every floating tensor of ``module``'s state dict (except those ``keep`` names) with seeded
    random values of a sensible scale: weights U(±sqrt(3/fan_in)) (unit-variance activations), biases
    U(±0.1), norm scales 1 + U(±0.1), batch-norm variances U(0.5, 1.5) and means U(±0.2). ``prefix``: the
    module's name inside a larger model, so that a part built alone gets the values of the whole."""
    for name, tensor in module.state_dict().items():
        if not tensor.is_floating_point() or keep(name):
            continue
        tensor.copy_(random_tensor(seed, prefix + name, tensor.shape).to(tensor.dtype))


def random_tensor(seed: int, name: str, shape: Iterable[int]) -> torch.Tensor:
    """The value :func:`randomize` gives the tensor ``name`` (with its prefix) of this shape (float32)."""
    shape = tuple(shape)
    gen = torch.Generator().manual_seed(_tensor_seed(seed, name))
    u = torch.rand(shape, generator=gen) * 2 - 1  # U(-1, 1)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return 1.0 + 0.5 * u
    if leaf == "running_mean":
        return 0.2 * u
    if len(shape) >= 2:
        fan_in = int(torch.Size(shape[1:]).numel())
        return u * (3.0 / fan_in) ** 0.5
    if leaf == "weight":  # 1-D weights: norm layers' scales
        return 1.0 + 0.1 * u
    return 0.1 * u


def locate(weights: str | os.PathLike[str] | None, spec: ScoringWeights) -> str | Path:
    """``"random"``, or the checkpoint's path (resolving the published file for None); called before a
    model is built so that a missing file fails fast."""
    if weights == RANDOM:
        return RANDOM
    return resolve(spec) if weights is None else Path(weights).expanduser()


def build_weights(
    module: nn.Module,
    weights: str | os.PathLike[str] | None,
    spec: ScoringWeights,
    *,
    seed: int = 0,
    keep: Callable[[str], bool] = lambda name: False,
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = lambda sd: sd,
    ignore: Iterable[str] = (),
) -> str:
    """Fill ``module`` per ``weights`` (None: the published file; "random": :func:`randomize`; a path)
    and return the description stored as the extractor's ``weights``."""
    if weights == RANDOM:
        randomize(module, seed, keep)
        return f"{RANDOM} (seed {seed})"
    path = Path(locate(weights, spec))
    state = convert(load_checkpoint(path))
    ignored = set(ignore)
    state = {k: v for k, v in state.items() if k not in ignored}
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{path} is not a {spec.description} checkpoint: {err}".splitlines()[0]) from err
    missing = [k for k in missing if not keep(k)]
    if missing or unexpected:
        raise ValueError(
            f"{path} is not a {spec.description} checkpoint: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    return str(path)
