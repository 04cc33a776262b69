"""``nast label``: CheXpert-style 4-state labels for every report of a CSV, read by the report reader.

MIMIC-CXR's own labels (``mimic-cxr-2.0.0-chexpert.csv``) were made by running a rule-based labeler
over its reports; this command does the same for any report collection with this project's reader
(:mod:`nast.text.polarity`: medspaCy ConText over the lexicon in ``nast/text/data``).

Output: one row per readable report, the id column(s) as given, then the 14 CheXpert columns in the
order and spelling of ``mimic-cxr-2.0.0-chexpert.csv`` with the values ``1.0`` (positive), ``0.0``
(negative), ``-1.0`` (uncertain) and blank (not mentioned), so ``nast ingest`` and every later stage
read it unchanged (``--id-col subject_id,study_id`` writes exactly the MIMIC layout).

Aggregation (CheXpert-style), per report over all mentions of all its text
columns:

* a condition is **1** when any mention is positive, else **-1** when any is uncertain, else **0**
  when any is negative, else blank: the CheXpert labeler's own aggregation (``--precedence
  chexpert``, the default since issue 17; the CheXpert paper, Irvin et al. 2019, "Mention
  aggregation", and chexpert-labeler's ``stages/aggregate.py``: u + 1 -> 1, 0 + u -> -1,
  0 + 1 -> 1), so ``nast label`` over MIMIC-CXR reads the way ``mimic-cxr-2.0.0-chexpert.csv`` was
  made. ``--precedence uncertain-first`` (the default before issue 17) puts uncertain first
  (-1 > 1 > 0): a finding stated in one sentence and hedged in another becomes -1. Within one
  *sentence* the reader has already settled a finding to one polarity, so a hedge never leaves a
  mention also positive there (:func:`nast.text.polarity.mentions_from_doc`); the precedence only
  decides between sentences. Measured on Open-i against its manual MeSH coding (docs/RESULTS.md,
  "The report reader"): chexpert is the better reading there too;
* **No Finding** is 1 when no condition other than Support Devices is 1 or -1, else blank (it is
  never 0). A report needs text to be labelled at all (see below).

Rows that cannot be labelled are quarantined (stage ``label``), never fatal to the file, and
``rows in = rows labelled + rows quarantined`` is asserted (:mod:`nast.text.screen`): empty or
duplicate id (the first row keeps it), undecodable bytes, a section over ``claims.max_chars``
(``--max-chars``), no text in any text column.

The core (:func:`label_reports`) is pure over polars frames; ``run`` reads the CSV, writes the labels
CSV (``.csv`` or ``.csv.gz``), the quarantine CSV and a summary JSON beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import polars as pl

from nast.conditions import CHEXPERT_COLUMNS, NEGATIVE, POSITIVE, UNCERTAIN
from nast.errors import StageError
from nast.io import reconcile
from nast.text.generation import resolve_processes  # the one worker-count rule of the forked readers
from nast.text.screen import DEFAULT_MAX_CHARS, screen_reports

log = logging.getLogger(__name__)

STAGE = "label"
NO_FINDING = "No Finding"
#: Conditions that do not cancel No Finding when present (CheXpert: support devices only).
NO_FINDING_IGNORES = frozenset({"Support Devices"})
_STATE_OF_POLARITY = {"positive": POSITIVE, "negative": NEGATIVE, "uncertain": UNCERTAIN}
#: Precedence of the states of one condition within a report (higher wins). ``chexpert`` (the
#: default): what the CheXpert labeler's ``aggregate.py`` does (uncertain + positive -> positive,
#: negative + uncertain -> uncertain, negative + positive -> positive), i.e. how the labels of
#: ``mimic-cxr-2.0.0-chexpert.csv`` were aggregated. ``uncertain-first``: any hedged mention makes
#: the condition -1.
PRECEDENCE: dict[str, dict[int, int]] = {
    "uncertain-first": {UNCERTAIN: 3, POSITIVE: 2, NEGATIVE: 1},
    "chexpert": {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1},
}
DEFAULT_PRECEDENCE = "chexpert"


def chexpert_labels(mentions: Iterable, precedence: str = DEFAULT_PRECEDENCE) -> dict[str, int | None]:
    """The 14 CheXpert labels (1, 0, -1, None) of one report from its mentions (objects with
    ``.finding`` and ``.polarity``, or ``(finding, polarity)`` pairs)."""
    rank = _rank(precedence)
    out: dict[str, int | None] = {c: None for c in CHEXPERT_COLUMNS}
    for m in mentions:
        finding, polarity = (m.finding, m.polarity) if hasattr(m, "finding") else m
        if finding not in out or finding == NO_FINDING:
            continue
        state = _STATE_OF_POLARITY[polarity]
        current = out[finding]
        if current is None or rank[state] > rank[current]:
            out[finding] = state
    findings = any(
        out[c] in (POSITIVE, UNCERTAIN) for c in CHEXPERT_COLUMNS if c != NO_FINDING and c not in NO_FINDING_IGNORES
    )
    out[NO_FINDING] = None if findings else POSITIVE
    return out


def _rank(precedence: str) -> dict[int, int]:
    if precedence not in PRECEDENCE:
        raise StageError(f"unknown precedence {precedence!r} (choose from {', '.join(PRECEDENCE)})")
    return PRECEDENCE[precedence]


#: Below this many distinct sections the reading stays in-process (a pool costs more than it saves).
MIN_PARALLEL_SECTIONS = 2000
CHUNK = 1000


def _read_chunk(texts: list[str]) -> list[tuple[tuple[str, str], ...]]:
    from nast.text.polarity import extract_mentions_many

    return [tuple((m.finding, m.polarity) for m in ms) for ms in extract_mentions_many(texts, batch_size=256)]


def read_sections(texts: list[str | None], workers: int = 1) -> list[tuple[tuple[str, str], ...]]:
    """(finding, polarity) of every mention of every text, in order.

    Each distinct text is read once (MIMIC-CXR repeats impressions such as "No acute
    cardiopulmonary process." thousands of times; the reading is deterministic, so the result is the
    same). With ``workers > 1`` the distinct texts are read in chunks by forked worker processes.
    """
    from nast.text.polarity import get_nlp

    unique = list(dict.fromkeys(t for t in texts if t and t.strip()))
    workers = resolve_processes(workers)
    get_nlp()  # built once here, inherited by forked workers
    if workers <= 1 or len(unique) < MIN_PARALLEL_SECTIONS:
        parts = [_read_chunk(unique[i: i + CHUNK]) for i in range(0, len(unique), CHUNK)]
    else:
        import multiprocessing

        chunks = [unique[i: i + CHUNK] for i in range(0, len(unique), CHUNK)]
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = []
            for k, part in enumerate(pool.imap(_read_chunk, chunks, chunksize=1)):
                parts.append(part)
                if len(chunks) >= 10 and (k + 1) % max(1, len(chunks) // 10) == 0:
                    log.info("label: read %d/%d distinct sections", min((k + 1) * CHUNK, len(unique)), len(unique))
    found = dict(zip(unique, (x for part in parts for x in part)))
    return [found.get(t, ()) if t else () for t in texts]


def label_schema(id_cols: list[str]) -> dict[str, pl.DataType]:
    return {**{c: pl.Utf8 for c in id_cols}, **{c: pl.Int8 for c in CHEXPERT_COLUMNS}}


def label_reports(
    df: pl.DataFrame,
    id_cols: list[str],
    text_cols: list[str],
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    precedence: str = DEFAULT_PRECEDENCE,
    workers: int = 1,
    source: str | Path = "<table>",
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Label every readable row of ``df`` (pure).

    Returns ``(labels, quarantine, stats)``: ``labels`` has the id columns (text, verbatim but
    stripped) and the 14 CheXpert columns as nullable Int8 in input-row order; ``quarantine`` the
    rows that could not be labelled (``nast.io.QUARANTINE_SCHEMA``); ``stats`` the counts
    (``rows_in``, ``labelled``, ``quarantined``, ``quarantined_by_reason``, ``with_negative``
    (reports with at least one 0), per condition the count of each state).
    """
    _rank(precedence)
    if not id_cols:
        raise StageError("--id-col: give at least one column name")
    if not text_cols:
        raise StageError("--text-cols: give at least one column name")
    clash = [c for c in id_cols if c in CHEXPERT_COLUMNS]
    if clash:
        raise StageError(f"{source}: id column {clash[0]!r} is a CheXpert label column name")
    screened = screen_reports(df, id_cols, text_cols, stage=STAGE, max_chars=max_chars, require_text=True,
                              source=source)
    rows = [r for r in range(df.height) if screened.keep[r]]
    columns = [df[c].cast(pl.Utf8).to_list() for c in text_cols]
    id_values = [df[c].cast(pl.Utf8).str.strip_chars().to_list() for c in id_cols]
    sections = [[col[r] for col in columns] for r in rows]
    read = read_sections([t for sec in sections for t in sec], workers=workers)
    n_cols = len(columns)
    per_report = [[m for j in range(n_cols) for m in read[i * n_cols + j]] for i in range(len(sections))]
    label_rows = [chexpert_labels(m, precedence) for m in per_report]
    data = {c: [vals[r] for r in rows] for c, vals in zip(id_cols, id_values)}
    data.update({c: [lab[c] for lab in label_rows] for c in CHEXPERT_COLUMNS})
    labels = pl.DataFrame(data, schema=label_schema(id_cols))
    quarantine = screened.quarantine
    reconcile(STAGE, df.height, labels.height, quarantine.height)
    stats = label_stats(labels)
    stats.update({"precedence": precedence, "rows_in": df.height, "quarantined": quarantine.height,
                  "quarantined_by_reason": dict(sorted(screened.reasons.items()))})
    return labels, quarantine, stats


def label_stats(labels: pl.DataFrame) -> dict:
    """Counts of a labels frame: labelled rows, rows with at least one 0, states per condition."""
    conds = [c for c in CHEXPERT_COLUMNS if c != NO_FINDING]
    with_negative = labels.select(pl.any_horizontal([pl.col(c) == NEGATIVE for c in conds]).fill_null(False).sum())
    states = {}
    for c in CHEXPERT_COLUMNS:
        col = labels[c]
        states[c] = {"1": int((col == POSITIVE).sum()), "0": int((col == NEGATIVE).sum()),
                     "-1": int((col == UNCERTAIN).sum()), "blank": int(col.is_null().sum())}
    return {"labelled": labels.height, "with_negative": int(with_negative.item()) if labels.height else 0,
            "states": states}


def to_chexpert_csv(labels: pl.DataFrame) -> str:
    """CSV text in the ``mimic-cxr-2.0.0-chexpert.csv`` value format (``1.0``/``0.0``/``-1.0``/blank)."""
    return labels.with_columns([pl.col(c).cast(pl.Float64) for c in CHEXPERT_COLUMNS]).write_csv()



