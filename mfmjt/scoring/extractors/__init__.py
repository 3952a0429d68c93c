"""Feature extractors of the evaluation models, by name (the contract is :mod:`mfmjt.scoring.extractor`).

``get_extractor(name, weights=None, device="cpu", seed=0)``:

* ``weights=None``: the published checkpoint (``MFMJT_WEIGHTS_DIR``, the cache, or a checksummed
  download; offline, the error says what to download and where to put it);
* ``weights="random"``: the real architecture with seeded random weights (tests, benchmarks);
* ``weights=<path>``: that checkpoint file (in its publisher's layout: keys are converted on loading).

The model packages (``pip install "mfmjt[eval]"``) are imported only when an extractor is built.
Every extractor takes mono float32 waveforms at its ``sample_rate``; resampling, cropping to the
evaluated length and av-benchmark's mean subtraction belong to the scorer.
"""

from __future__ import annotations

import importlib
import os

import torch

from mfmjt.scoring.extractor import Extractor

# name -> (module, class); each module's docstring says what it computes and where its facts come from
_EXTRACTORS: dict[str, tuple[str, str]] = {
    "panns": ("mfmjt.scoring.extractors.panns", "PannsExtractor"),
    "vggish": ("mfmjt.scoring.extractors.vggish", "VggishExtractor"),
    "passt": ("mfmjt.scoring.extractors.passt", "PasstExtractor"),
    "synchformer": ("mfmjt.scoring.extractors.synchformer", "SynchformerExtractor"),
    "imagebind": ("mfmjt.scoring.extractors.imagebind", "ImageBindExtractor"),
    "laion_clap": ("mfmjt.scoring.extractors.laion_clap", "LaionClapExtractor"),
    "ms_clap": ("mfmjt.scoring.extractors.ms_clap", "MsClapExtractor"),
}

EXTRACTOR_NAMES: tuple[str, ...] = tuple(_EXTRACTORS)


def get_extractor(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    seed: int = 0,
    **options: object,
) -> Extractor:
    """Build the extractor ``name`` (one of :data:`EXTRACTOR_NAMES`); ``options`` go to its class (the
    CLAP extractors take ``tokenizer=<folder>``)."""
    if name not in _EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; choose one of {list(EXTRACTOR_NAMES)}")
    module_name, cls_name = _EXTRACTORS[name]
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, cls_name)
        return cls(weights=weights, device=device, seed=seed, **options)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"the {name!r} extractor needs the package {err.name!r}; install the evaluation extra: "
            'pip install "mfmjt[eval]"'
        ) from err
