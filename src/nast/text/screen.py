"""Which report rows the reader can read: the per-row guard of ``label``, ``extract-claims`` and ``claims``.

A report table (any CSV or the cohort's study rows) is screened row by row *before* any text reaches
spaCy. A row that fails becomes one quarantine row (``nast.io.QUARANTINE_SCHEMA``: stage, key, reason,
source) and the rest of the run goes on; nothing is fatal to the file. Checks in order, the first
defect wins:

1. ``empty id``: an id column is null or blank;
2. ``duplicate id``: the id (tuple of the id columns) was already seen; the *first* row keeps it,
   later rows are quarantined with the row number of the first;
3. ``undecodable``: a text column holds U+FFFD, the replacement character the CSV reader puts where
   the file had bytes that are not UTF-8 (:func:`read_report_csv` decodes lossily, so one bad byte
   costs one row, not the file);
4. ``oversized``: a text column is longer than ``max_chars`` characters after the reader's whitespace
   normalisation (default and upper bound: spaCy's ``Language.max_length``, 1,000,000 characters,
   beyond which spaCy refuses the text with E088);
5. ``no text`` (only where ``require_text``): every text column is empty.

Row numbers in reasons are 1-based data rows of the input (the header is not counted; a quoted
field may span several lines of the file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from nast.errors import StageError
from nast.io import quarantine_frame, require_columns

#: spaCy's ``Language.max_length``: the longest text ``nlp(text)`` accepts (E088 beyond it).
SPACY_MAX_CHARS = 1_000_000
DEFAULT_MAX_CHARS = SPACY_MAX_CHARS
REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True)
class Screened:
    """Outcome of :func:`screen_reports`: ``keep[i]`` for input row i, and the quarantine rows."""

    keep: list[bool]
    ids: list[str | None]  # the row key as text (id columns joined by "/")
    quarantine: pl.DataFrame
    reasons: dict[str, int]  # quarantined rows per reason kind


def check_max_chars(max_chars: int) -> int:
    max_chars = int(max_chars)
    if not 1 <= max_chars <= SPACY_MAX_CHARS:
        raise StageError(f"max_chars must be between 1 and {SPACY_MAX_CHARS:,} (spaCy's limit): {max_chars}")
    return max_chars


def section_problem(text: str | None, column: str, max_chars: int) -> tuple[str, str] | None:
    """(kind, reason) when one text section cannot be read, else None."""
    if not text:
        return None
    pos = text.find(REPLACEMENT_CHAR)
    if pos >= 0:
        return "undecodable", (
            f"undecodable bytes in column {column!r} (not UTF-8; replaced by U+FFFD at character {pos})"
        )
    if len(text) > max_chars // 2:  # normalisation changes the length a little: measure what spaCy gets
        from nast.text.polarity import normalise_text

        n = len(normalise_text(text))
        if n > max_chars:
            return "oversized", (
                f"column {column!r} is {n:,} characters long, over the reader's limit of {max_chars:,} "
                "(claims.max_chars; spaCy's own limit is 1,000,000)"
            )
    return None


def screen_reports(
    df: pl.DataFrame,
    id_cols: list[str],
    text_cols: list[str],
    *,
    stage: str,
    max_chars: int = DEFAULT_MAX_CHARS,
    require_text: bool = False,
    source: str | Path = "<table>",
    row_in_source: bool = True,
) -> Screened:
    """Screen every row of ``df`` (pure). Missing columns are structural: StageError naming file + column.

    A quarantine row's ``source`` is ``"<source> row N"``, or just ``source`` when ``row_in_source``
    is false (a frame derived from the file, whose row numbers would mislead)."""
    require_columns(df, [*id_cols, *text_cols], source)
    max_chars = check_max_chars(max_chars)
    id_values = [df[c].cast(pl.Utf8).to_list() for c in id_cols]
    texts = [df[c].cast(pl.Utf8).to_list() for c in text_cols]
    first_row: dict[tuple, int] = {}
    keep: list[bool] = []
    ids: list[str | None] = []
    bad: list[dict] = []
    reasons: dict[str, int] = {}

    def quarantine(row: int, key: str, kind: str, reason: str) -> None:
        keep.append(False)
        reasons[kind] = reasons.get(kind, 0) + 1
        bad.append({"stage": stage, "key": key, "reason": reason,
                    "source": f"{source} row {row + 1}" if row_in_source else str(source)})

    for row in range(df.height):
        parts = tuple(None if col[row] is None else str(col[row]).strip() for col in id_values)
        key = "/".join(p or "" for p in parts)
        ids.append(key)
        empty = [c for c, p in zip(id_cols, parts) if not p]
        if empty:
            quarantine(row, key, "empty_id", f"empty id in column {empty[0]!r}")
            continue
        if parts in first_row:
            quarantine(row, key, "duplicate_id", f"duplicate id {key!r} (kept at row {first_row[parts] + 1})")
            continue
        first_row[parts] = row
        problem = None
        for c, col in zip(text_cols, texts):
            problem = section_problem(col[row], c, max_chars)
            if problem:
                break
        if problem:
            quarantine(row, key, *problem)
            continue
        if require_text and not any((col[row] or "").strip() for col in texts):
            quarantine(row, key, "no_text", f"no report text in column(s) {', '.join(text_cols)}")
            continue
        keep.append(True)
    return Screened(keep=keep, ids=ids, quarantine=quarantine_frame(bad), reasons=reasons)


def read_report_csv(path: str | Path) -> pl.DataFrame:
    """A report CSV (plain or gzipped) with every column as text (ids stay verbatim).

    Bytes that are not UTF-8 are decoded lossily (U+FFFD) so that :func:`screen_reports` quarantines
    the rows that hold them instead of the whole file failing; an unreadable file is a StageError.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError(f"report CSV not found: {path}")
    try:
        return pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")
    except Exception as exc:  # noqa: BLE001 - polars raises several error types
        raise StageError(f"{path}: not a readable CSV: {exc}") from exc
