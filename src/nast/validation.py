"""Great Expectations gates for every tabular artifact of the pipeline.

One generic entry point, :func:`gate`, used by every stage::

    from nast.validation import gate
    gate(df, "cohort", [
        ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": ["train", "validate", "test"]}),
        ("ExpectColumnValuesToBeUnique", {"column": "dicom_id"}),
    ])

How it works
------------
* ``df`` is a polars frame. It is handed to Great Expectations (GX 1.x) as a pandas frame backed
  by Arrow arrays (``to_pandas(use_pyarrow_extension_array=True)``), so nullable integers stay
  integers (a null ``Int8`` label is a null, not a float NaN) and list columns survive.
  ``ExpectColumnValuesToBeOfType`` therefore sees Python-level types: use ``type_="int"``,
  ``"str"``, ``"float"``, ``"bool"``.
* ``expectations`` is data: a list of ``(expectation_class_name, kwargs)`` where the class name is
  any class in ``great_expectations.expectations`` (e.g. ``ExpectColumnValuesToBeBetween``) and
  ``kwargs`` its constructor arguments. An unknown class or bad kwargs is a
  :class:`~nast.errors.StageError` naming the suite and the expectation (a bug in the suite, not
  in the data).
* One *ephemeral* GX data context per process (GX is slow to import; nothing is written to a
  ``gx/`` folder, analytics are disabled, no network). Each call registers a pandas dataframe
  asset, a whole-dataframe batch definition, an expectation suite and a validation definition,
  and runs the validation definition directly (no checkpoint).
* Every call writes ``<report_dir>/<suite>.md`` (readable: status, then one line per expectation
  with the column, the number and share of unexpected values and a few example values) and
  ``<report_dir>/<suite>.json`` (the same, machine-readable and deterministic: no timestamps, so a
  re-run with the same data gives the same bytes). On failure it then raises
  :class:`~nast.errors.ValidationGateError` whose message names the report; on success it returns
  the summary dict.

Checks that are not row-wise (e.g. "patients are in one split only", "exactly one option equals
the true labels") are expressed by deriving a column in polars first (e.g. the number of splits
per subject via a window) and gating that column with a plain expectation
(``ExpectColumnValuesToBeBetween`` with ``max_value=1``). See ``nast.ingest.COHORT_EXPECTATIONS``
and ``nast.permutations`` for examples.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from nast.errors import StageError, ValidationGateError
from nast.io import write_json, write_text

log = logging.getLogger(__name__)

Expectation = tuple[str, dict[str, Any]]

#: examples of unexpected values shown per expectation in the reports
N_EXAMPLES = 5

_CONTEXT: Any = None
_COUNTER = itertools.count()


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # quiet its import-time INFO lines
    import great_expectations as gx  # slow import: only when a gate runs

    return gx


def _context():
    """The process-wide ephemeral GX data context (created on first use)."""
    global _CONTEXT
    if _CONTEXT is None:
        gx = _gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        ctx.data_sources.add_pandas("nast")
        _CONTEXT = ctx
    return _CONTEXT


def build_expectations(suite_name: str, expectations: Sequence[Expectation]) -> list[Any]:
    """Instantiate GX expectation objects from ``(class_name, kwargs)`` data."""
    gx = _gx()
    out = []
    for i, item in enumerate(expectations):
        try:
            cls_name, kwargs = item
        except (TypeError, ValueError):
            raise StageError(
                f"validation suite '{suite_name}': expectation #{i} must be (class_name, kwargs), got {item!r}"
            ) from None
        cls = getattr(gx.expectations, cls_name, None)
        if cls is None:
            raise StageError(
                f"validation suite '{suite_name}': unknown expectation class '{cls_name}' "
                "(see great_expectations.expectations)"
            )
        try:
            out.append(cls(**dict(kwargs)))
        except Exception as exc:  # pydantic validation error of the expectation's arguments
            raise StageError(
                f"validation suite '{suite_name}': bad arguments for {cls_name}({kwargs!r}): {exc}"
            ) from None
    return out


def _jsonable(value: Any) -> Any:
    """Plain JSON values (pd.NA / numpy scalars / arrays become None / python scalars / lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar / array, pyarrow scalar
        return _jsonable(value.tolist())
    if hasattr(value, "as_py"):
        return _jsonable(value.as_py())
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def validate(df: pl.DataFrame, suite_name: str, expectations: Sequence[Expectation]) -> dict[str, Any]:
    """Run the expectations on ``df``; return the summary dict (no files written, nothing raised)."""
    gx = _gx()
    objs = build_expectations(suite_name, expectations)
    ctx = _context()
    uid = f"{suite_name}-{next(_COUNTER)}"
    ds = ctx.data_sources.get("nast")
    asset = ds.add_dataframe_asset(uid)
    batch_def = asset.add_batch_definition_whole_dataframe(uid)
    suite = ctx.suites.add(gx.ExpectationSuite(name=uid))
    for obj in objs:
        suite.add_expectation(obj)
    vdef = ctx.validation_definitions.add(gx.ValidationDefinition(name=uid, data=batch_def, suite=suite))
    pdf = df.to_pandas(use_pyarrow_extension_array=True)
    result = vdef.run(
        batch_parameters={"dataframe": pdf},
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": N_EXAMPLES},
    )
    by_id = {r.expectation_config.id: r for r in result.results}
    rows = []
    for (cls_name, kwargs), obj in zip(expectations, objs):
        res = by_id.get(obj.id)
        rd = dict(res.result) if res is not None else {}
        exc = (res.exception_info or {}) if res is not None else {}
        if isinstance(exc, dict) and "raised_exception" not in exc:  # keyed by metric id
            exc = next(iter(exc.values()), {}) if exc else {}
        examples = rd.get("partial_unexpected_list")
        rows.append(
            {
                "expectation": cls_name,
                "kwargs": _jsonable(dict(kwargs)),
                "column": kwargs.get("column"),
                "success": bool(res.success) if res is not None else False,
                "element_count": rd.get("element_count"),
                "unexpected_count": rd.get("unexpected_count"),
                "unexpected_percent": rd.get("unexpected_percent"),
                "observed_value": _jsonable(rd.get("observed_value")),
                "examples": _jsonable(examples[:N_EXAMPLES]) if examples else [],
                "exception": exc.get("exception_message") if exc.get("raised_exception") else None,
            }
        )
    n_failed = sum(not r["success"] for r in rows)
    return {
        "suite": suite_name,
        "success": n_failed == 0,
        "n_rows": df.height,
        "n_columns": df.width,
        "evaluated_expectations": len(rows),
        "failed_expectations": n_failed,
        "results": rows,
    }


def _fmt_value(v: Any, limit: int = 80) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def render_markdown(summary: dict[str, Any]) -> str:
    """Readable report: status, failures first with examples, then every expectation."""
    status = "PASSED" if summary["success"] else "FAILED"
    lines = [
        f"# Validation gate `{summary['suite']}`: {status}",
        "",
        f"- rows: {summary['n_rows']}, columns: {summary['n_columns']}",
        f"- expectations: {summary['evaluated_expectations']}, failed: {summary['failed_expectations']}",
        "",
    ]
    failed = [r for r in summary["results"] if not r["success"]]
    if failed:
        lines += ["## Failures", ""]
        for r in failed:
            where = f"column `{r['column']}`" if r["column"] else "table"
            lines.append(f"### {r['expectation']} on {where}")
            lines.append("")
            args = {k: v for k, v in r["kwargs"].items() if k != "column"}
            if args:
                lines.append(f"- arguments: `{_fmt_value(args, 200)}`")
            if r["unexpected_count"] is not None:
                pct = r["unexpected_percent"] or 0.0
                lines.append(
                    f"- unexpected values: {r['unexpected_count']} of {r['element_count']} ({pct:.2f} % of non-null)"
                )
            if r["examples"]:
                lines.append("- examples: " + ", ".join(f"`{_fmt_value(v, 60)}`" for v in r["examples"]))
            if r["observed_value"] is not None:
                lines.append(f"- observed: `{_fmt_value(r['observed_value'], 200)}`")
            if r["exception"]:
                lines.append(f"- error: {r['exception']}")
            if r["unexpected_count"] is None and r["observed_value"] is None and not r["exception"]:
                lines.append("- failed (table-level check; no row details)")
            lines.append("")
    lines += ["## All expectations", "", "| # | expectation | column | ok | unexpected | examples |",
              "|---|---|---|---|---|---|"]
    for i, r in enumerate(summary["results"]):
        unexpected = "" if r["unexpected_count"] is None else str(r["unexpected_count"])
        ex = ", ".join(_fmt_value(v, 30) for v in r["examples"]).replace("|", "\\|")
        lines.append(
            f"| {i} | {r['expectation']} | {r['column'] or ''} | {'yes' if r['success'] else '**no**'} | "
            f"{unexpected} | {ex} |"
        )
    return "\n".join(lines) + "\n"


def gate(
    df: pl.DataFrame,
    suite_name: str,
    expectations: Sequence[Expectation],
    report_dir: str | Path = "reports/validation",
) -> dict[str, Any]:
    """Validate ``df`` with a GX suite given as data; write reports; raise if it fails.

    Args:
        df: the table (polars). List columns are allowed.
        suite_name: names the suite and the report files ``<report_dir>/<suite_name>.md|.json``.
        expectations: ``[(class_name, kwargs), ...]`` of ``great_expectations.expectations`` classes.
        report_dir: folder of the reports (created if needed).

    Returns:
        The summary dict (also written as JSON) when every expectation passed.

    Raises:
        ValidationGateError: at least one expectation failed; the message names the report.
        StageError: the suite itself is malformed (unknown class, bad kwargs).
    """
    summary = validate(df, suite_name, expectations)
    report_dir = Path(report_dir)
    md_path = report_dir / f"{suite_name}.md"
    write_json(summary, report_dir / f"{suite_name}.json")
    write_text(render_markdown(summary), md_path)
    if not summary["success"]:
        failed = [r for r in summary["results"] if not r["success"]]
        first = failed[0]
        what = f"{first['expectation']} on column '{first['column']}'" if first["column"] else first["expectation"]
        # the whole report goes to the log too: a workflow manager removes a failed job's outputs
        log.error("validation gate '%s' failed:\n%s", suite_name, render_markdown(summary))
        raise ValidationGateError(
            f"validation gate '{suite_name}' failed: {len(failed)} of {summary['evaluated_expectations']} "
            f"expectations (first: {what}); see {md_path}"
        )
    log.info("validation gate '%s' passed (%d expectations, %d rows) -> %s",
             suite_name, summary["evaluated_expectations"], summary["n_rows"], md_path)
    return summary
