"""How much of the impact timing do the offline motion features carry?

A small MLP reads a window (±3 latent frames) of features and predicts, per latent frame (32 ms),
whether an audible on-screen impact starts there; peaks above a threshold are matched to the true
impact frames within ±1 frame and scored by F1 on held-out scenes. Two inputs are compared:

- ``sync (acceleration)``: the offline sync tokens (``OfflineSyncEncoder`` on the 25 fps stream),
  upsampled to the latent rate like the network does (nearest-exact);
- ``sync (projected)``: the tokens of the first default models (``sync_features="projected"``);
- ``oracle``: the acceleration of the true object centres (the scene's own physics), a bound on
  what any motion feature can give this probe.

    python benchmarks/sync_feature_probe.py --n 700 --train 600
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from mfmjt.config import SequenceLengths
from mfmjt.toy.encoders import OfflineEncoderConfig, OfflineSyncEncoder
from mfmjt.toy.metrics import AUDIBLE_STRENGTH
from mfmjt.toy.scene import make_scene
from mfmjt.toy.specs import SceneConfig

logger = logging.getLogger("benchmarks.sync_feature_probe")

CONTEXT = 3  # latent frames each side


def scene_inputs(
    seed: int, config: SceneConfig, encoders: list[OfflineSyncEncoder], lengths: SequenceLengths
) -> tuple:
    """(impact labels [L], oracle features [L, 2 * max_objects], then each encoder's [L, D]) of a scene."""
    scene = make_scene(seed, config)
    L = lengths.latent
    frame_s = lengths.duration / L
    labels = np.zeros(L, np.float32)
    for e in scene.events:
        if e.object_id >= 0 and e.strength >= AUDIBLE_STRENGTH and e.time < lengths.duration:
            labels[min(int(e.time / frame_s), L - 1)] = 1.0
    # 25 fps stream: for each target time, the first source frame at or after it
    n25 = round(25 * lengths.duration)
    index = [min(math.ceil(k * scene.fps / 25 - 1e-9), len(scene.frames) - 1) for k in range(n25)]
    frames = torch.from_numpy(scene.frames[index]).permute(0, 3, 1, 2)[None]
    syncs = [
        F.interpolate(encoder(frames)[0].T[None], size=L, mode="nearest-exact")[0].T for encoder in encoders
    ]
    pos = torch.tensor(scene.positions, dtype=torch.float32)  # [T, n, 2] at the video frame times
    acc = torch.zeros(pos.shape[0], config.max_objects, 2)  # absent objects stay zero
    acc[1:-1, : pos.shape[1]] = (pos[2:] - 2 * pos[1:-1] + pos[:-2]) / 10.0
    at = ((torch.arange(L) + 0.5) * frame_s * scene.fps).round().long().clamp(0, pos.shape[0] - 1)
    return labels, acc[at].reshape(L, -1), *syncs


def windows(x: torch.Tensor) -> torch.Tensor:
    """[N, L, D] -> [N, L, (2*CONTEXT+1)*D]: each frame with its neighbours."""
    L = x.shape[1]
    padded = F.pad(x.transpose(1, 2), (CONTEXT, CONTEXT))
    return torch.cat([padded[:, :, k : k + L] for k in range(2 * CONTEXT + 1)], 1).transpose(1, 2)


def peak_f1(prob: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    tp = fp = fn = 0
    for p, y in zip(prob, labels, strict=True):
        peaks = [
            j
            for j in range(len(p))
            if p[j] > threshold and p[j] >= p[max(j - 1, 0)] and p[j] >= p[min(j + 1, len(p) - 1)]
        ]
        truth, used = list(np.nonzero(y)[0]), set()
        for j in peaks:
            hit = [r for r in truth if abs(r - j) <= 1 and r not in used]
            if hit:
                used.add(hit[0])
                tp += 1
            else:
                fp += 1
        fn += len(truth) - len(used)
    return 2 * tp / max(2 * tp + fp + fn, 1)


def probe(features: torch.Tensor, labels: torch.Tensor, n_train: int, iters: int) -> dict[float, float]:
    torch.manual_seed(0)
    x = windows(features)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[-1], 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(iters):
        logits = model(x[:n_train]).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, labels[:n_train], pos_weight=torch.tensor(5.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        prob = torch.sigmoid(model(x[n_train:]).squeeze(-1)).numpy()
    return {th: peak_f1(prob, labels[n_train:].numpy(), th) for th in (0.3, 0.5, 0.7)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=700, help="scenes (seeds 0..n-1, the training seeds)")
    parser.add_argument(
        "--train", type=int, default=600, help="scenes the probe is fitted on; the rest test it"
    )
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--iters", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    torch.set_num_threads(1)
    lengths = SequenceLengths.for_duration(args.duration)
    config = replace(SceneConfig(), duration=args.duration + 0.25, text_only_prob=0.0)
    encoders = [
        OfflineSyncEncoder(),
        OfflineSyncEncoder(OfflineEncoderConfig(sync_dim=24, sync_features="projected")),
    ]
    items = [scene_inputs(seed, config, encoders, lengths) for seed in range(args.n)]
    labels = torch.tensor(np.stack([i[0] for i in items]))
    for name, k in (("sync (acceleration)", 2), ("sync (projected)", 3), ("oracle", 1)):
        f1 = probe(torch.stack([i[k] for i in items]), labels, args.train, args.iters)
        logger.info(
            "%s features: impact-frame F1 (thresholds 0.3 / 0.5 / 0.7) = %s",
            name,
            " / ".join(f"{v:.3f}" for v in f1.values()),
        )


if __name__ == "__main__":
    main()
