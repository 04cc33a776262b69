"""Dispatch a dataset layout to its reader; the summary path beside the quarantine table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def summary_path(quarantine: str | Path) -> Path:
    q = Path(quarantine)
    return q.with_name(q.stem + ".summary.json")



def ingest(source: str, root: str, data: dict[str, Any], reports_zip: str | None = None):
    """Dispatch to the reader of ``source``; returns ``(cohort, quarantine, summary)``."""
    common = dict(
        views=list(data["views"]),
        require_report=bool(data["require_report"]),
        check_images=bool(data["check_images"]),
        image_check=str(data["image_check"]),
        split_fractions=dict(data["split_fractions"]),
        seed=int(data["seed"]),
    )
    if source == "openi":
        from nast.ingest.openi import read_openi

        return read_openi(root, labels=str(data["openi_labels"]), **common)
    from nast.ingest.mimic import read_mimic

    return read_mimic(root, dataset=source, reports_zip=reports_zip, **common)
