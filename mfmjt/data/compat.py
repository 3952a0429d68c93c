"""Whether the stores of a run fit the network and each other, checked before any training step.

:func:`store_problems` lists every disagreement as a sentence naming the store, the array (by the
name its layout uses) and the expected per-item shape; :func:`check_stores` raises them together.
"""

from __future__ import annotations

from collections.abc import Sequence

from mfmjt.config import AUDIO_MODES, SYNC_TOKENS_PER_SEGMENT, NetworkConfig, SequenceLengths
from mfmjt.data.mmaudio_store import MMAudioStore
from mfmjt.data.stores import FEATURE_NAMES, TrainingStore, array_label

_DIM_FIELDS = {
    "latent_mean": "latent_dim",
    "latent_std": "latent_dim",
    "clip_f": "clip_dim",
    "sync_f": "sync_dim",
    "text_f": "text_dim",
}


def _real_arrays(store: TrainingStore) -> tuple[str, ...]:
    """The arrays a store actually holds (an audio-text MMAudio store has no clip/sync, a store
    without audio no latents)."""
    if isinstance(store, MMAudioStore) and not store.has_video:
        return ("latent_mean", "latent_std", "text_f")
    return tuple(n for n in FEATURE_NAMES if n in store.shapes)


def _expected_lengths(store: MMAudioStore, cfg: NetworkConfig) -> dict[str, int] | None:
    mode = next((m for m in AUDIO_MODES.values() if m.latent_dim == cfg.latent_dim), None)
    if mode is None or store.duration is None:
        return None
    try:
        lengths = SequenceLengths.for_duration(store.duration, mode)
    except ValueError:
        return None
    return {
        "latent_mean": lengths.latent,
        "latent_std": lengths.latent,
        "clip_f": lengths.clip,
        "sync_f": lengths.sync,
    }


def store_problems(stores: Sequence[TrainingStore], cfg: NetworkConfig) -> list[str]:
    """Every way the stores disagree with the network ``cfg`` or with each other."""
    problems: list[str] = []
    for store in stores:
        where = f"store {store.path}"
        for name in _real_arrays(store):
            length, channels = store.shapes[name]
            dim = getattr(cfg, _DIM_FIELDS[name])
            expect_len = cfg.text_seq_len if name == "text_f" else length
            if channels != dim or length != expect_len:
                reasons = []
                if channels != dim:
                    reasons.append(f"{channels} channels but the network's {_DIM_FIELDS[name]} is {dim}")
                if length != expect_len:
                    reasons.append(f"{length} tokens but the network's text_seq_len is {expect_len}")
                problems.append(
                    f"{where}: {array_label(store, name)} has "
                    + " and ".join(reasons)
                    + f" (per-item shape [{length}, {channels}], expected [{expect_len}, {dim}])"
                )
        if "sync_f" in _real_arrays(store) and store.shapes["sync_f"][0] % SYNC_TOKENS_PER_SEGMENT:
            length = store.shapes["sync_f"][0]
            problems.append(
                f"{where}: {array_label(store, 'sync_f')} has {length} tokens per item, not a multiple of "
                f"{SYNC_TOKENS_PER_SEGMENT} (8 Synchformer tokens per segment)"
            )
        if isinstance(store, MMAudioStore):
            expected = _expected_lengths(store, cfg)
            for name in _real_arrays(store):
                if expected is None or name not in expected or store.shapes[name][0] == expected[name]:
                    continue
                problems.append(
                    f"{where}: {array_label(store, name)} has per-item shape {list(store.shapes[name])}, "
                    f"expected [{expected[name]}, {store.shapes[name][1]}] for {store.duration:g} s clips"
                )
    # one batch stacks items of every store: their lengths must agree
    first = stores[0]
    for store in stores[1:]:
        for name in FEATURE_NAMES:
            if name not in _real_arrays(store) or name not in _real_arrays(first):
                continue
            if store.shapes[name][0] != first.shapes[name][0]:
                problems.append(
                    f"store {store.path}: {array_label(store, name)} has per-item shape "
                    f"{list(store.shapes[name])}, expected "
                    f"[{first.shapes[name][0]}, {store.shapes[name][1]}] "
                    f"like store {first.path} (the stores of one run must share one clip duration)"
                )
    return problems


def fill_audio_only(stores: Sequence[TrainingStore], cfg: NetworkConfig) -> None:
    """Give audio-text MMAudio stores zero clip/sync features shaped like the run's video stores
    (or MMAudio's lengths for their duration) with the network's feature sizes."""
    video = [s for s in stores if "clip_f" in _real_arrays(s)]
    for store in stores:
        if not isinstance(store, MMAudioStore) or store.has_video:
            continue
        if video:
            clip_len, sync_len = video[0].shapes["clip_f"][0], video[0].shapes["sync_f"][0]
        else:
            clip_len, sync_len = store.video_fill_shapes["clip_f"][0], store.video_fill_shapes["sync_f"][0]
        store.set_video_fill((clip_len, cfg.clip_dim), (sync_len, cfg.sync_dim))


def check_stores(stores: Sequence[TrainingStore], cfg: NetworkConfig, variant: str = "") -> None:
    """Raise one ValueError listing every problem of :func:`store_problems`."""
    problems = store_problems(stores, cfg)
    if problems:
        raise ValueError(
            f"the feature store{'s' if len(stores) > 1 else ''} "
            f"do{'' if len(stores) > 1 else 'es'} not match network variant {variant!r}: "
            + "; ".join(problems)
            + " (set the network's sizes with --network name=value, e.g. --network sync_dim=48)"
        )


__all__ = ["check_stores", "fill_audio_only", "store_problems"]
