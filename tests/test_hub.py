"""Weight registry, resolution (local folder, cache, HTTP, Hub), checksums and checkpoint conversion.

Nothing here touches the internet: downloads go to an HTTP server on 127.0.0.1 started by the
test, and ``hf_hub_download`` is replaced by fakes.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import load_file

from mfmjt import hub
from mfmjt.config import VARIANTS, NetworkConfig
from mfmjt.convert import convert_mmaudio_checkpoint, infer_variant
from mfmjt.hub import (
    CACHE_ENV,
    WEIGHTS_DIR_ENV,
    ChecksumMismatchError,
    HubSource,
    UrlSource,
    WeightFile,
    WeightsDownloadError,
    WeightsOfflineError,
    WeightsUnavailableError,
    pipeline_weights,
    resolve_file,
)
from mfmjt.model.network import MFMJTNetwork
from mfmjt.model_dir import load_network, read_metadata

GOLDENS = Path(__file__).parent / "goldens"
PAYLOAD = b"fake MMAudio weights\n" * 5000  # ~100 kB: several reads, still instant
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
OTHER = b"not the weights\n" * 5000


def fake_entry(*sources: hub.Source, md5: str = PAYLOAD_MD5) -> WeightFile:
    return WeightFile(
        name="fake",
        path="ext_weights/fake.pth",
        md5=md5,
        approx_bytes=len(PAYLOAD),
        sources=sources,
        description="test file",
    )


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user settings leak in; the mfmjt cache is a temporary folder; the real Hub is unreachable."""
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub.hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mfmjt-cache"))

    def no_hub(*args: object, **kwargs: object) -> str:
        raise AssertionError("hf_hub_download must not be called in this test")

    monkeypatch.setattr(hub, "hf_hub_download", no_hub)
    return tmp_path / "mfmjt-cache"


@dataclass
class FileServer:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[FileServer]:
    """An HTTP server on 127.0.0.1 serving ``files`` (path -> bytes), 404 for anything else."""
    state = FileServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            state.hits.append(self.path)
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def refused_url() -> str:
    """A URL on a local port nobody listens on: the connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/fake.pth"


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix == ".part"]


# ------------------------------------------------------------------------------ registry
def test_small_16k_pipeline_lists_the_reference_files_and_checksums():
    weights = pipeline_weights("mmaudio-small-16k")
    assert weights is pipeline_weights("small_16k")
    got = {f.path: (f.md5, f.url) for f in weights.files}
    release = "https://github.com/hkchengrex/MMAudio/releases/download/v0.1"
    assert got == {
        "weights/mmaudio_small_16k.pth": (
            "af93cde404179f58e3919ac085b8033b",
            "https://huggingface.co/hkchengrex/MMAudio/resolve/main/weights/mmaudio_small_16k.pth",
        ),
        "ext_weights/v1-16.pth": ("69f56803f59a549a1a507c93859fd4d7", f"{release}/v1-16.pth"),
        "ext_weights/best_netG.pt": ("eeaf372a38a9c31c362120aba2dde292", f"{release}/best_netG.pt"),
        "ext_weights/synchformer_state_dict.pth": (
            "5b2f5594b0730f70e41e549b7c94390c",
            f"{release}/synchformer_state_dict.pth",
        ),
    }
    assert weights.clip.model_name == "hf-hub:apple/DFN5B-CLIP-ViT-H-14-384"
    assert weights.network.sources == (HubSource("hkchengrex/MMAudio", "weights/mmaudio_small_16k.pth"),)
    assert HubSource("hkchengrex/MMAudio", "ext_weights/v1-16.pth") in weights.vae.sources


def test_the_registry_holds_exactly_the_reference_networks_and_every_spelling_reaches_its_file():
    """The networks MMAudio publishes (the reference run's manifests) are the registry's, each MMAudio
    network variant of the config is one of them, and every accepted spelling reaches that network's file
    under MMAudio's path for it."""
    from mfmjt.weights import MMAUDIO_NAMES, PIPELINES

    reference = set(json.loads((GOLDENS / "network_manifests.json").read_text())) - {"_about"}
    assert set(PIPELINES) == reference
    assert {v for v, c in VARIANTS.items() if c.latent_seq_len in (250, 345)} == reference
    for spelling, variant in MMAUDIO_NAMES.items():
        for name in (spelling, spelling + ".pth", spelling.upper().replace("_", "-")):
            entry = pipeline_weights(name.lower()).network
            assert entry.path == f"weights/mmaudio_{variant}.pth", name


def test_weight_file_rejects_a_malformed_md5():
    with pytest.raises(ValueError, match="md5"):
        fake_entry(md5="not-an-md5")


# ---------------------------------------------------------------------------- local folder
@pytest.mark.parametrize("relative", ["fake.pth", "ext_weights/fake.pth"])
def test_local_dir_override_returns_the_verified_file(tmp_path: Path, relative: str):
    local = tmp_path / "weights"
    (local / relative).parent.mkdir(parents=True)
    (local / relative).write_bytes(PAYLOAD)
    entry = fake_entry(UrlSource(refused_url()))  # never contacted: the local file wins
    assert resolve_file(entry, local_dir=local, offline=False) == local / relative


def test_weights_dir_environment_variable_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "fake.pth").write_bytes(PAYLOAD)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    assert resolve_file(fake_entry(), offline=True) == tmp_path / "fake.pth"


def test_local_file_with_wrong_md5_is_renamed_and_reported(tmp_path: Path):
    (tmp_path / "fake.pth").write_bytes(OTHER)
    with pytest.raises(ChecksumMismatchError) as info:
        resolve_file(fake_entry(), local_dir=tmp_path, offline=True)
    message = str(info.value)
    assert "fake.pth" in message and PAYLOAD_MD5 in message and hashlib.md5(OTHER).hexdigest() in message
    assert "renamed" in message
    assert not (tmp_path / "fake.pth").exists()
    assert (tmp_path / "fake.pth.corrupt").read_bytes() == OTHER
    assert isinstance(info.value, WeightsUnavailableError)


def test_md5_is_computed_once_per_file_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "fake.pth").write_bytes(PAYLOAD)
    calls: list[Path] = []
    real_md5 = hub._md5_file

    def counting_md5(path: Path) -> str:
        calls.append(path)
        return real_md5(path)

    monkeypatch.setattr(hub, "_md5_file", counting_md5)
    for _ in range(3):
        resolve_file(fake_entry(), local_dir=tmp_path, offline=True)
    assert len(calls) == 1
    stat = (tmp_path / "fake.pth").stat()
    os.utime(tmp_path / "fake.pth", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    resolve_file(fake_entry(), local_dir=tmp_path, offline=True)  # a touched file is hashed again
    assert len(calls) == 2


# ------------------------------------------------------------------------- offline / errors
def test_offline_mode_without_the_file_names_it_and_says_how_to_supply_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_calls: list[dict] = []

    def cached_only(repo_id: str, filename: str, **kwargs: object) -> str:
        hub_calls.append(kwargs)
        raise LocalEntryNotFoundError("not in the local cache")

    def no_http(*args: object, **kwargs: object) -> None:
        raise AssertionError("no HTTP request may be made offline")

    monkeypatch.setattr(hub, "hf_hub_download", cached_only)
    monkeypatch.setattr(hub, "_download_url", no_http)
    url = "https://example.invalid/fake.pth"
    entry = fake_entry(UrlSource(url), HubSource("someone/weights", "ext_weights/fake.pth"))
    with pytest.raises(WeightsOfflineError) as info:
        resolve_file(entry, local_dir=tmp_path)
    message = str(info.value)
    for expected in ("fake.pth", url, PAYLOAD_MD5, WEIGHTS_DIR_ENV, "local_dir", str(tmp_path)):
        assert expected in message
    assert hub_calls and all(call["local_files_only"] for call in hub_calls)


def test_connection_errors_give_the_offline_error(monkeypatch: pytest.MonkeyPatch):
    def no_connection(repo_id: str, filename: str, **kwargs: object) -> str:
        # What hf_hub_download raises when the Hub is unreachable and the file is not cached.
        raise LocalEntryNotFoundError("cannot reach the Hub and the file is not in the cache")

    monkeypatch.setattr(hub, "hf_hub_download", no_connection)
    url = refused_url()
    entry = fake_entry(UrlSource(url), HubSource("someone/weights", "ext_weights/fake.pth"))
    with pytest.raises(WeightsOfflineError) as info:
        resolve_file(entry, offline=False)
    message = str(info.value)
    assert "fake.pth" in message and url in message and PAYLOAD_MD5 in message
    assert "connection failed" in message and WEIGHTS_DIR_ENV in message


# ------------------------------------------------------------------------------ URL source
def test_url_download_is_verified_cached_and_not_fetched_again(server: FileServer, isolated_env: Path):
    server.files["/v0.1/fake.pth"] = PAYLOAD
    entry = fake_entry(UrlSource(f"{server.url}/v0.1/fake.pth"))
    path = resolve_file(entry, offline=False)
    assert path == isolated_env / "ext_weights" / "fake.pth"
    assert path.read_bytes() == PAYLOAD
    assert resolve_file(entry, offline=False) == path
    assert resolve_file(entry, offline=True) == path
    assert server.hits == ["/v0.1/fake.pth"]
    assert leftovers(isolated_env) == []


def test_url_download_with_wrong_md5_is_deleted_and_reported(server: FileServer, isolated_env: Path):
    server.files["/fake.pth"] = OTHER
    with pytest.raises(ChecksumMismatchError) as info:
        resolve_file(fake_entry(UrlSource(f"{server.url}/fake.pth")), offline=False)
    message = str(info.value)
    assert "fake.pth" in message and PAYLOAD_MD5 in message and hashlib.md5(OTHER).hexdigest() in message
    assert "deleted" in message
    assert not (isolated_env / "ext_weights" / "fake.pth").exists()
    assert leftovers(isolated_env) == []


def test_http_404_gives_a_download_error_with_instructions(server: FileServer, isolated_env: Path):
    url = f"{server.url}/missing/fake.pth"
    with pytest.raises(WeightsDownloadError) as info:
        resolve_file(fake_entry(UrlSource(url)), offline=False)
    message = str(info.value)
    assert "404" in message and url in message and "fake.pth" in message and WEIGHTS_DIR_ENV in message
    assert not (isolated_env / "ext_weights" / "fake.pth").exists()
    assert leftovers(isolated_env) == []


def test_corrupt_cached_file_is_replaced_by_a_fresh_download(server: FileServer, isolated_env: Path):
    cached = isolated_env / "ext_weights" / "fake.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(OTHER)
    server.files["/fake.pth"] = PAYLOAD
    assert resolve_file(fake_entry(UrlSource(f"{server.url}/fake.pth")), offline=False) == cached
    assert cached.read_bytes() == PAYLOAD


def test_next_source_is_tried_when_the_first_is_missing(server: FileServer):
    server.files["/mirror/fake.pth"] = PAYLOAD
    entry = fake_entry(UrlSource(f"{server.url}/gone/fake.pth"), UrlSource(f"{server.url}/mirror/fake.pth"))
    assert resolve_file(entry, offline=False).read_bytes() == PAYLOAD


# ------------------------------------------------------------------------------ Hub source
def test_hub_source_uses_hf_hub_download_and_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls: list[dict] = []
    contents = [OTHER, PAYLOAD]  # a corrupt cached copy first, then a good forced download

    def fake_download(repo_id: str, filename: str, **kwargs: object) -> str:
        calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
        path = Path(str(kwargs["cache_dir"])) / "models--someone--weights" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(contents[len(calls) - 1])
        return str(path)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    entry = fake_entry(HubSource("someone/weights", "ext_weights/fake.pth"))
    path = resolve_file(entry, cache_dir=tmp_path / "hf", offline=False)
    assert path.read_bytes() == PAYLOAD
    assert [(c["repo_id"], c["filename"], c["force_download"]) for c in calls] == [
        ("someone/weights", "ext_weights/fake.pth", False),
        ("someone/weights", "ext_weights/fake.pth", True),
    ]
    assert all(c["cache_dir"] == tmp_path / "hf" and c["local_files_only"] is False for c in calls)


# ------------------------------------------------------------------------------ conversion
def golden_pth(version: str, folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    state = load_file(str(GOLDENS / f"golden_network_tiny_{version}.state.safetensors"))
    path = folder / f"golden_tiny_{version}.pth"
    torch.save(state, path)
    return path, state


def test_convert_golden_checkpoint_infers_variant_and_round_trips(tmp_path: Path):
    pth, state = golden_pth("v1", tmp_path)
    out = convert_mmaudio_checkpoint(pth, tmp_path / "converted")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    meta = read_metadata(out)
    assert meta["objective"] == "flow_matching"
    assert meta["variant"] == "tiny" and meta["source"] == pth.name
    net = load_network(out)
    assert net.config == NetworkConfig.variant("tiny")
    loaded = net.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    # The Δt embedder is present and has no effect: its output layer is zero.
    assert torch.count_nonzero(loaded["dt_embed.mlp.2.weight"]) == 0
    assert torch.count_nonzero(loaded["dt_embed.mlp.2.bias"]) == 0


def test_convert_rejects_a_checkpoint_of_no_known_variant(tmp_path: Path):
    # The v2 golden has the tiny dims with v2 layers: no registered variant has that layout.
    pth, _ = golden_pth("v2", tmp_path)
    with pytest.raises(ValueError, match="matches no known network variant"):
        convert_mmaudio_checkpoint(pth, tmp_path / "out")
    with pytest.raises(ValueError, match="does not fit variant 'tiny'"):
        convert_mmaudio_checkpoint(pth, tmp_path / "out", variant="tiny")


def test_convert_refuses_a_state_dict_that_already_has_a_dt_embedder(tmp_path: Path):
    path = tmp_path / "mfmjt.pth"
    torch.save(MFMJTNetwork(NetworkConfig.variant("tiny")).state_dict(), path)
    with pytest.raises(ValueError, match="Δt embedder"):
        convert_mmaudio_checkpoint(path, tmp_path / "out")


def test_variant_inference_tells_every_registered_variant_apart():
    for name, config in VARIANTS.items():
        with torch.device("meta"):
            state = MFMJTNetwork(config).state_dict()
        mmaudio_state = {k: v for k, v in state.items() if not k.startswith("dt_embed.")}
        assert infer_variant(mmaudio_state) == name
