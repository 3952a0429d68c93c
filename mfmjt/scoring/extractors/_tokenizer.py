"""The text tokenizers of the CLAP extractors: where their files are found, and the message when they are not.

A tokenizer is a folder of ``vocab.json`` and ``merges.txt`` (byte-level BPE: RoBERTa's for LAION-CLAP,
GPT-2's for MS-CLAP). It is looked for in ``tokenizer=`` (a folder), then ``$MFMJT_WEIGHTS_DIR/<name>/``,
then the Hugging Face Hub (its cache first; nothing is downloaded with ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os
from pathlib import Path

from mfmjt import hub

FILES = ("vocab.json", "merges.txt")


def load_tokenizer(
    cls_name: str, hub_id: str, folder_name: str, source: str | os.PathLike[str] | None, description: str
):
    """A ``transformers`` tokenizer of class ``cls_name`` (e.g. ``RobertaTokenizer``) built from the two
    files. (The files are checked here: ``from_pretrained`` on a folder without them gives an empty
    tokenizer, not an error.)"""
    import transformers

    cls = getattr(transformers, cls_name)
    if source is not None:
        path = Path(source).expanduser()
        if not all((path / f).is_file() for f in FILES):
            raise FileNotFoundError(
                f"tokenizer folder {path} does not hold vocab.json and merges.txt; pass a folder holding them"
            )
        return cls.from_pretrained(str(path))
    local = os.environ.get(hub.WEIGHTS_DIR_ENV)
    if local and all((Path(local).expanduser() / folder_name / f).is_file() for f in FILES):
        return cls.from_pretrained(str(Path(local).expanduser() / folder_name))
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "on", "yes", "true"}
    from huggingface_hub import hf_hub_download

    try:
        paths = [Path(hf_hub_download(hub_id, f, local_files_only=offline)) for f in FILES]
    except Exception as err:  # not cached and offline, no connection, or a Hub error (several classes)
        raise hub.WeightsOfflineError(
            f"The {description} tokenizer ({hub_id}: vocab.json and merges.txt) is not on disk and could "
            f"not be downloaded ({type(err).__name__}). Download those two files from "
            f"https://huggingface.co/{hub_id} on a machine with internet access and put them in a folder "
            f"{folder_name}/ inside ${hub.WEIGHTS_DIR_ENV}."
        ) from err
    return cls.from_pretrained(str(paths[0].parent))
