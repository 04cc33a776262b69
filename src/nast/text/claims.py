"""Claim extraction from radiology report text: ``nast extract-claims`` (any report CSV).

A *claim* is one mention of a CheXpert finding in a report with its polarity, location and severity:

    id | finding (CheXpert name) | polarity (positive|negative|uncertain) | location | severity | evidence

``location`` is the normalised laterality and zone ("left lower", "bilateral basilar", "right", or
null), ``severity`` the normalised severity word (mild|moderate|severe|small|large|borderline or null),
``evidence`` the sentence the mention was read from. The reading itself (medspaCy ConText over the
CSV lexicon in ``nast/text/data``) lives in :mod:`nast.text.polarity`; this module applies it to a
table: every text column of every row is read separately (a sentence never spans two sections) and
the mentions are stacked, in report order.

Works on any CSV with an id column and one or more text columns (MIMIC-CXR sections, Open-i
``indiana_reports.csv`` ``findings,impression``, a hospital export). A missing id/text column stops
with an error naming the file and column; empty or missing text is fine (no claims) and counted.
A report that cannot be read (empty or duplicate id, undecodable bytes, a section over
``claims.max_chars``; :mod:`nast.text.screen`) becomes a quarantine row with its reason
(``OUT.quarantine.parquet`` beside the output) and the run goes on.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import polars as pl

from nast.io import reconcile
from nast.text.screen import DEFAULT_MAX_CHARS, screen_reports

log = logging.getLogger(__name__)

CLAIM_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Utf8,
    "finding": pl.Utf8,
    "polarity": pl.Utf8,
    "location": pl.Utf8,
    "severity": pl.Utf8,
    "evidence": pl.Utf8,
}
POLARITIES = ("positive", "negative", "uncertain")

#: Great Expectations suite for claims tables (kept as data; see nast.validation.gate).
CLAIMS_EXPECTATIONS: list[tuple[str, dict]] = [
    ("ExpectColumnValuesToNotBeNull", {"column": "id"}),
    ("ExpectColumnValuesToNotBeNull", {"column": "finding"}),
    ("ExpectColumnValuesToNotBeNull", {"column": "evidence"}),
    ("ExpectColumnValuesToBeInSet", {"column": "polarity", "value_set": list(POLARITIES)}),
]


def _finding_set() -> list[str]:
    from nast.conditions import CONDITIONS

    return list(CONDITIONS)


def claims_expectations() -> list[tuple[str, dict]]:
    return CLAIMS_EXPECTATIONS + [
        ("ExpectColumnValuesToBeInSet", {"column": "finding", "value_set": _finding_set()}),
    ]


def extract_claims(
    df: pl.DataFrame,
    id_col: str,
    text_cols: list[str],
    source: str | Path = "<table>",
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    stage: str = "extract_claims",
    row_in_source: bool = True,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Claims of every readable row of ``df`` (pure: frame in, frames out).

    Rows are screened first (:func:`nast.text.screen.screen_reports`): an empty or duplicate id, a
    section with undecodable bytes or longer than ``max_chars`` quarantines the whole report (its
    other sections are not read either, so no report is half-read) and the run goes on.

    Returns the claims table (schema :data:`CLAIM_SCHEMA`, rows in input-row then report order), the
    quarantine table (``nast.io.QUARANTINE_SCHEMA``, ``stage`` = ``stage``) and counts: ``rows``,
    ``rows_quarantined``, ``rows_empty`` (read, but no text in any text column), ``rows_with_claims``,
    ``claims``; ``rows = rows read + rows_quarantined`` is asserted.
    """
    from nast.text.polarity import extract_mentions_many

    screened = screen_reports(df, [id_col], text_cols, stage=stage, max_chars=max_chars, source=source,
                              row_in_source=row_in_source)
    ids = screened.ids
    columns = [df[c].cast(pl.Utf8).to_list() for c in text_cols]
    read_rows = [row for row in range(df.height) if screened.keep[row]]
    texts: list[str | None] = []
    owners: list[int] = []
    for row in read_rows:
        for col in columns:
            texts.append(col[row])
            owners.append(row)
    rows: list[dict] = []
    with_claims: set[int] = set()
    empty_rows = sum(1 for row in read_rows if not any((col[row] or "").strip() for col in columns))
    step = max(1, len(texts) // 10)
    for k, (owner, mentions) in enumerate(zip(owners, extract_mentions_many(texts))):
        if k and k % step == 0:
            log.info("read %d/%d report sections", k, len(texts))
        for m in mentions:
            with_claims.add(owner)
            rows.append(
                {
                    "id": ids[owner],
                    "finding": m.finding,
                    "polarity": m.polarity,
                    "location": m.location,
                    "severity": m.severity,
                    "evidence": m.evidence,
                }
            )
    claims = pl.DataFrame(rows, schema=CLAIM_SCHEMA)
    reconcile(stage, df.height, len(read_rows), screened.quarantine.height)
    stats = {
        "rows": df.height,
        "rows_quarantined": screened.quarantine.height,
        "rows_empty": empty_rows,
        "rows_with_claims": len(with_claims),
        "claims": claims.height,
    }
    return claims, screened.quarantine, stats


def gate_claims(claims: pl.DataFrame, suite: str = "claims", report_dir: str | Path = "reports/validation") -> None:
    """Great Expectations gate (nast.validation) over a claims table; raises ValidationGateError."""
    from nast.validation import gate

    gate(claims, suite, claims_expectations(), report_dir=report_dir)


# --------------------------------------------------------------------------- CLI
def max_chars_of(args: argparse.Namespace, params: dict) -> int:
    """``--max-chars`` when given, else ``params.claims.max_chars`` (schema default: spaCy's limit)."""
    if getattr(args, "max_chars", None) is not None:
        return args.max_chars
    return int(params["claims"]["max_chars"])


def sibling_path(out: str | Path, tail: str) -> Path:
    """``OUT<tail>`` beside the output, its ``.csv.gz`` / ``.parquet`` / ``.csv`` suffix stripped."""
    out = Path(out)
    name = out.name
    for ext in (".csv.gz", ".parquet", ".csv"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return out.with_name(name + tail)


def default_quarantine_path(out: str | Path, suffix: str = ".parquet") -> Path:
    """``OUT.quarantine<suffix>`` beside the output."""
    return sibling_path(out, ".quarantine" + suffix)



