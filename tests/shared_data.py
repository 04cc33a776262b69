"""The one rule for the shared data next to the checkout: ``../shared`` (the folder beside this
repository, e.g. /work/shared for /work/main or /work/wt-N).

Tests that need a file there ask for it with :func:`require` (or the ``openi_dev_csv`` fixture of
tests/conftest.py), never with a path of their own and never with a module-level skip. A missing
file skips only those tests - unless ``CI`` is set (true/1/yes) and ``../shared/data/openi`` exists:
then the data is meant to be there and a skip would hide a broken test, so it fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OPENI_DIR = SHARED / "data" / "openi"
OPENI_DEV_CSV = OPENI_DIR / "openi-dev-reports.csv"


def must_run(shared: Path | None = None) -> bool:
    shared = SHARED if shared is None else shared
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return ci and (shared / "data" / "openi").is_dir()


def require(path: Path, shared: Path | None = None) -> Path:
    """``path`` if it is a file; else skip the calling test (fail it under the CI rule above)."""
    path = Path(path)
    if path.is_file():
        return path
    msg = f"shared data not found: {path}"
    if must_run(shared):
        pytest.fail(f"{msg} (CI is set and {(SHARED if shared is None else shared) / 'data' / 'openi'} exists: "
                    "these tests must run)")
    pytest.skip(msg)
