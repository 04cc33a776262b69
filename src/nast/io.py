"""Disk edges shared by all stages: deterministic parquet/JSON writes and the quarantine table.

Quarantine rows carry ``stage``, ``key`` (the row's identity, e.g. ``dicom_id`` or ``study_id``),
``reason`` (human readable) and ``source`` (the file the row came from, if any). Every stage that
drops rows asserts ``rows in = rows kept + rows quarantined`` with :func:`reconcile`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from nast.errors import StageError

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "stage": pl.Utf8,
    "key": pl.Utf8,
    "reason": pl.Utf8,
    "source": pl.Utf8,
}


def quarantine_frame(rows: Iterable[dict[str, Any]] = ()) -> pl.DataFrame:
    """Build a quarantine table from dicts with keys stage, key, reason[, source]."""
    rows = [
        {"stage": r["stage"], "key": str(r["key"]), "reason": r["reason"], "source": r.get("source")}
        for r in rows
    ]
    return pl.DataFrame(rows, schema=QUARANTINE_SCHEMA)


def reconcile(stage: str, rows_in: int, kept: int, quarantined: int) -> None:
    """Raise unless rows_in == kept + quarantined (nothing is lost silently)."""
    if rows_in != kept + quarantined:
        raise StageError(
            f"{stage}: row counts do not reconcile: in={rows_in} kept={kept} "
            f"quarantined={quarantined} (lost {rows_in - kept - quarantined})"
        )


def _atomic_target(path: Path) -> tuple[Path, Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return path, Path(tmp)


def write_parquet(df: pl.DataFrame, path: str | Path) -> Path:
    """Write atomically (temp file + rename) so a killed stage never leaves a half file."""
    path, tmp = _atomic_target(Path(path))
    df.write_parquet(tmp, statistics=False)
    os.replace(tmp, path)
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    path, tmp = _atomic_target(Path(path))
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def write_text(text: str, path: str | Path) -> Path:
    path, tmp = _atomic_target(Path(path))
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def read_parquet(path: str | Path, what: str = "input table") -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{what} not found: {path}")
    return pl.read_parquet(path)


def require_columns(df: pl.DataFrame, columns: Iterable[str], source: str | Path) -> None:
    """Structural check: stop with a message naming the file and the missing column(s)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StageError(f"{source}: missing column(s): {', '.join(repr(c) for c in missing)}")
