"""Disk edges shared by all stages: deterministic parquet/JSON writes and the quarantine table.

Quarantine rows carry ``stage``, ``key`` (the row's identity, e.g. ``dicom_id`` or ``study_id``),
``reason`` (human readable) and ``source`` (the file the row came from, if any). Every stage that
drops rows asserts ``rows in = rows kept + rows quarantined`` with :func:`reconcile`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import polars as pl

from nast.errors import StageError

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "stage": pl.Utf8,
    "key": pl.Utf8,
    "reason": pl.Utf8,
    "source": pl.Utf8,
}


#: columns the model stages (train, evaluate) read from the contextual and benchmark tables
CONTEXTUAL_COLUMNS = ("dicom_id", "image_path", "split", "caption", "foil", "foil_type")
BENCHMARK_COLUMNS = ("dicom_id", "image_path", "split", "correct", "conditions",
                     "option_A", "option_B", "option_C", "option_D",
                     "negated_A", "negated_B", "negated_C", "negated_D",
                     "affirmative_A", "affirmative_B", "affirmative_C", "affirmative_D")


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


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """``with atomic_write(p) as tmp: save(tmp)``: a unique temp file in the same folder (two
    writers never share one), renamed onto ``p`` when the block succeeds, removed when it fails."""
    path, tmp = _atomic_target(Path(path))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def staged_dir(folder: str | Path) -> Iterator[Path]:
    """``with staged_dir(d) as tmp: write files into tmp``: a fresh sibling folder that replaces
    ``d`` (an earlier ``d`` is removed) only when the block succeeds, and is removed when it fails,
    so readers never see a half-written folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def output_lock(folder: str | Path, what: str = "output folder") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` for the block; a second run targeting the same folder
    stops at once with a :class:`StageError` naming the folder and the run holding it.

    The lock is ``<parent>/.<name>.lock`` (beside the folder, so it is never part of a DVC output),
    taken with ``fcntl.flock``: the kernel releases it when the holder exits or is killed, so a
    crashed run never leaves a stale lock."""
    import fcntl

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.parent / f".{folder.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", errors="replace").strip() or "another process"
            raise StageError(
                f"{what} {folder} is in use by another run ({holder}); two runs must not write the same "
                f"folder: wait for it to finish, or use another --out (lock: {lock})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode(), 0)
        yield lock
    finally:
        os.close(fd)  # releases the flock


def write_parquet(df: pl.DataFrame, path: str | Path) -> Path:
    """Write atomically (temp file + rename) so a killed stage never leaves a half file."""
    path, tmp = _atomic_target(Path(path))
    df.write_parquet(tmp, statistics=False)
    os.replace(tmp, path)
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    path, tmp = _atomic_target(Path(path))
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")
    os.replace(tmp, path)
    return path


def write_text(text: str, path: str | Path) -> Path:
    path, tmp = _atomic_target(Path(path))
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def read_parquet(path: str | Path, what: str = "input table") -> pl.DataFrame:
    """Read a parquet input; a missing, truncated or corrupt file is a :class:`StageError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{what} not found: {path}")
    try:
        return pl.read_parquet(path)
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # polars raises ComputeError/OSError, and a pyo3 PanicException on some corruptions
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise StageError(
            f"{what} {path} is not a readable parquet file (truncated or corrupt?): {type(exc).__name__}: "
            f"{detail}; delete it and rerun the stage that writes it"
        ) from None


def read_table(path: str | Path, what: str = "input table", params: dict[str, Any] | None = None,
               allow_empty: bool | None = None) -> pl.DataFrame:
    """The stages' reader for input tables: :func:`read_parquet`, and a 0-row table stops the stage
    with a message unless ``allow_empty`` (default: params ``data.allow_empty``, false)."""
    df = read_parquet(path, what)
    if allow_empty is None:
        allow_empty = bool(((params or {}).get("data") or {}).get("allow_empty", False))
    if df.height == 0 and not allow_empty:
        from nast.config import params_file

        raise StageError(
            f"{what} {path} has 0 rows: the stage that wrote it kept nothing (see its quarantine table and "
            f"summary); set data.allow_empty: true in {params_file()} to run on empty tables anyway"
        )
    return df


def require_columns(df: pl.DataFrame, columns: Iterable[str], source: str | Path) -> None:
    """Structural check: stop with a message naming the file and the missing column(s)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StageError(f"{source}: missing column(s): {', '.join(repr(c) for c in missing)}")


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` of every JSON the pipeline writes or hashes: a typed params
    section (a read-only mapping) as its plain dict, anything else as ``str``."""
    from collections.abc import Mapping

    if isinstance(obj, Mapping):
        from nast.config import plain_params

        return plain_params(obj)
    return str(obj)


def json_safe(obj):
    """NaN -> None (and keys to str) so the JSON written is standard."""
    from collections.abc import Mapping

    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def method_files(folder: str | Path, methods: list[str] | None, what: str) -> list[Path]:
    """The ``{method}.json`` files of ``folder`` that ``nast report`` reads: those of ``methods`` (the
    DAG's list; a missing one is an error naming it), or every JSON there when ``methods`` is None.
    Only the named ones: a stale JSON of a method no longer in the list (or a copy kept beside the
    DAG's) must not enter the tables."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StageError(f"{what} folder not found: {folder}")
    if methods is None:
        return sorted(folder.glob("*.json"))
    if len(set(methods)) != len(methods):
        raise StageError(f"--methods names a method twice: {methods}")
    paths = [folder / f"{m}.json" for m in methods]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise StageError(f"{what} JSON not found for --methods: {', '.join(missing)}")
    return paths


def check_method_name(path: Path, data: dict[str, Any]) -> None:
    """A JSON's ``method`` must be its file's name (``nast evaluate --method M --out .../M.json``): a
    copied or renamed file would otherwise enter the tables as a second row of the same method, and
    the paired tables would take whichever came last as the reference."""
    if data["method"] != path.stem:
        raise StageError(f"{path}: says method '{data['method']}' but is named '{path.stem}'; each method's "
                         "JSON is {method}.json (a copy or a renamed file would be counted as that method)")
