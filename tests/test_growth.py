"""Deepening a trained network (``mfmjt deepen``): same outputs, more trainable blocks."""

from __future__ import annotations

import pytest
import torch

from mfmjt.cli import main
from mfmjt.config import NetworkConfig
from mfmjt.growth import deepen_audio_blocks
from mfmjt.model import MFMJTNetwork
from mfmjt.model_dir import load_network, read_model_config, save_network


def _trained_like_tiny() -> MFMJTNetwork:
    """A tiny network whose every weight (gates and Δt embedder included) is non-zero, as after training."""
    torch.manual_seed(0)
    net = MFMJTNetwork(NetworkConfig.variant("tiny"))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def _inputs(batch: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(batch, 50, 20, generator=g),
        torch.randn(batch, 16, 32, generator=g),
        torch.randn(batch, 48, 24, generator=g),
        torch.randn(batch, 77, 32, generator=g),
    )


def test_deepened_network_computes_the_same_and_its_new_blocks_can_learn():
    net = _trained_like_tiny()
    deeper = deepen_audio_blocks(net, 3).eval()
    assert (deeper.config.depth, deeper.config.fused_depth) == (
        net.config.depth + 3,
        net.config.fused_depth + 3,
    )
    assert deeper.config.joint_depth == net.config.joint_depth
    old = net.state_dict()
    for key, value in deeper.state_dict().items():
        if key in old:
            torch.testing.assert_close(value, old[key], rtol=0, atol=0)
    x, c, s, t = _inputs()
    tt, dt = torch.tensor([0.3, 0.9]), torch.tensor([0.1, 0.5])
    with torch.no_grad():
        torch.testing.assert_close(deeper(x, c, s, t, tt, dt), net(x, c, s, t, tt, dt), rtol=1e-5, atol=1e-5)
    # the new blocks start as identities through zero gates, which receive gradient at once
    deeper.train()
    deeper(x, c, s, t, tt, dt).square().mean().backward()
    new_gate = deeper.fused_blocks[-1].adaLN_modulation[-1]
    assert not new_gate.weight.any() and new_gate.weight.grad.abs().sum() > 0


def test_deepen_rejects_a_non_positive_count():
    with pytest.raises(ValueError, match="extra_blocks must be positive"):
        deepen_audio_blocks(_trained_like_tiny(), 0)


def test_mfmjt_deepen_keeps_metadata_and_companion_files(tmp_path):
    net = _trained_like_tiny()
    save_network(net, tmp_path / "small", objective="meanflow", lineage=["stage 1"])
    (tmp_path / "small" / "codec.safetensors").write_bytes(b"codec bytes")
    assert (
        main(["deepen", str(tmp_path / "small"), "--extra-blocks", "2", "--out", str(tmp_path / "deep")]) == 0
    )
    meta = read_model_config(tmp_path / "deep")
    assert meta.objective == "meanflow" and meta.network.fused_depth == net.config.fused_depth + 2
    assert meta.provenance.lineage[0] == "stage 1" and "deepened by 2" in meta.provenance.lineage[1]
    assert (tmp_path / "deep" / "codec.safetensors").read_bytes() == b"codec bytes"
    deeper = load_network(tmp_path / "deep").eval()
    x, c, s, t = _inputs(1)
    with torch.no_grad():
        torch.testing.assert_close(
            deeper(x, c, s, t, 0.7, 0.2), net(x, c, s, t, 0.7, 0.2), rtol=1e-5, atol=1e-5
        )
    with pytest.raises(FileExistsError, match="not empty"):
        main(
            [
                "--debug",
                "deepen",
                str(tmp_path / "small"),
                "--extra-blocks",
                "1",
                "--out",
                str(tmp_path / "deep"),
            ]
        )
