"""Shared fixtures: the reference goldens copied into tests/goldens, seeding, the gpu marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

GOLDENS = Path(__file__).parent / "goldens"


@pytest.fixture(scope="session")
def goldens_dir() -> Path:
    return GOLDENS


def load_network_golden(version: str):
    """(config kwargs, state dict, io tensors) of the tiny MMAudio golden ``v1`` or ``v2``."""
    meta = json.loads((GOLDENS / f"golden_network_tiny_{version}.json").read_text())
    state = load_file(str(GOLDENS / f"golden_network_tiny_{version}.state.safetensors"))
    io = load_file(str(GOLDENS / f"golden_network_tiny_{version}.io.safetensors"))
    return meta, state, io


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.gpu`` tests need CUDA: without it they are skipped with that reason."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
