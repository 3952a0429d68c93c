"""The text tokenizers of the CLAP extractors: where their files are found, and the message when they are not.

A tokenizer is a folder of ``vocab.json`` and ``merges.txt`` (byte-level BPE: RoBERTa's for LAION-CLAP,
GPT-2's for MS-CLAP). It is looked for in ``tokenizer=`` (a folder), then ``$MFMJT_WEIGHTS_DIR/<name>/``,
then the Hugging Face Hub (its cache first; nothing is downloaded with ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os
from pathlib import Path

from mfmjt import hub


def load_tokenizer(
    cls_name: str, hub_id: str, folder_name: str, source: str | os.PathLike[str] | None, description: str
):
    """A ``transformers`` tokenizer of class ``cls_name`` (e.g. ``RobertaTokenizer``)."""
    import transformers

    cls = getattr(transformers, cls_name)
    if source is not None:
        path = Path(source).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"tokenizer folder {path} does not exist; pass a folder holding vocab.json and merges.txt"
            )
        return cls.from_pretrained(str(path))
    local = os.environ.get(hub.WEIGHTS_DIR_ENV)
    if local and (Path(local).expanduser() / folder_name).is_dir():
        return cls.from_pretrained(str(Path(local).expanduser() / folder_name))
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "on", "yes", "true"}
    try:
        return cls.from_pretrained(hub_id, local_files_only=offline)
    except OSError as err:  # not cached and offline, no connection, or a Hub error
        raise hub.WeightsOfflineError(
            f"The {description} tokenizer ({hub_id}: vocab.json and merges.txt) is not on disk and could "
            f"not be downloaded. Download those two files from https://huggingface.co/{hub_id} on a machine "
            f"with internet access and put them in a folder {folder_name}/ inside ${hub.WEIGHTS_DIR_ENV}."
        ) from err
