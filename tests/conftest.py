"""Shared fixtures: paths to the reference goldens copied into tests/goldens."""

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
