"""Caption tables of training sets: MMAudio's tab-separated ``id`` + caption files.

VGGSound-style video sets name the caption column ``label``, AudioCaps/WavCaps-style audio sets
``caption``; either is accepted. ``id`` is the media file's name without its extension. Bad tables
are refused with the line number of the first problem, before any work starts.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

CAPTION_COLUMNS = ("label", "caption")


class TsvError(ValueError):
    """A caption table cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class CaptionRow:
    """One table row: media id, caption and the 1-based line it came from."""

    id: str
    caption: str
    line: int


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise TsvError(
            f"{path}, line {line}: the text is not valid UTF-8 (byte {raw[err.start]:#04x}); "
            "save the table as UTF-8"
        ) from None


def read_caption_tsv(path: str | Path) -> list[CaptionRow]:
    """Rows of a tab-separated table with an ``id`` column and a ``label`` or ``caption`` column.

    Other columns are ignored. Raises :class:`TsvError` for an unreadable file, a missing column,
    a row with fewer fields than the header, an empty id, or an id given twice.
    """
    path = Path(path)
    if not path.is_file():
        raise TsvError(f"caption table {path} does not exist")
    text = _decode(path, path.read_bytes())
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    try:
        header = next(reader)
    except StopIteration:
        raise TsvError(
            f"{path} is empty: expected a header line with 'id' and 'label' (or 'caption')"
        ) from None
    header = [h.strip() for h in header]
    if "id" not in header:
        raise TsvError(f"{path}, line 1: the header {header} has no 'id' column (tab-separated)")
    caption_cols = [c for c in CAPTION_COLUMNS if c in header]
    if not caption_cols:
        raise TsvError(f"{path}, line 1: the header {header} has no 'label' or 'caption' column")
    if len(caption_cols) > 1:
        raise TsvError(f"{path}, line 1: give either a 'label' or a 'caption' column, not both")
    id_col, cap_col = header.index("id"), header.index(caption_cols[0])
    need = max(id_col, cap_col) + 1

    rows: list[CaptionRow] = []
    first_line: dict[str, int] = {}
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise TsvError(f"{path}, line {line}: {err}") from None
        if not fields or all(not f.strip() for f in fields):
            continue  # blank line
        if len(fields) < need:
            raise TsvError(
                f"{path}, line {line}: {len(fields)} field(s), expected at least {need} "
                f"(columns {header[:need]}, separated by tabs)"
            )
        item_id, caption = fields[id_col].strip(), fields[cap_col].strip()
        if not item_id:
            raise TsvError(f"{path}, line {line}: the id is empty")
        if item_id in first_line:
            raise TsvError(f"{path}, line {line}: id {item_id!r} repeats line {first_line[item_id]}")
        first_line[item_id] = line
        rows.append(CaptionRow(item_id, caption, line))
    if not rows:
        raise TsvError(f"{path} has a header but no rows")
    return rows
