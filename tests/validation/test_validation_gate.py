"""nast.validation.gate: GX suites given as data, readable reports, failure raises."""

from __future__ import annotations

import json

import polars as pl
import pytest

from nast.errors import StageError, ValidationGateError
from nast.validation import gate

SUITE = [
    ("ExpectColumnValuesToBeInSet", {"column": "label", "value_set": [1, 0, -1]}),
    ("ExpectColumnValuesToBeUnique", {"column": "id"}),
    ("ExpectColumnValuesToBeOfType", {"column": "label", "type_": "int"}),
    ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": ["train", "validate", "test"]}),
]


def _frame(labels, ids, splits):
    return pl.DataFrame(
        {"id": ids, "label": labels, "split": splits},
        schema={"id": pl.Utf8, "label": pl.Int8, "split": pl.Utf8},
    )


def test_gate_passes_with_nulls_and_writes_report(tmp_path):
    df = _frame([1, 0, -1, None], ["a", "b", "c", "d"], ["train", "test", "validate", "train"])
    summary = gate(df, "good", SUITE, report_dir=tmp_path)
    assert summary["success"] is True
    assert summary["n_rows"] == 4
    md = (tmp_path / "good.md").read_text()
    assert "PASSED" in md
    data = json.loads((tmp_path / "good.json").read_text())
    assert data["success"] is True and data["failed_expectations"] == 0
    assert len(data["results"]) == len(SUITE)


def test_gate_fails_on_broken_frame_and_names_report(tmp_path):
    df = _frame([1, 2, 2, None, 7], ["a", "b", "b", "c", "d"], ["train", "test", "holdout", "train", "test"])
    with pytest.raises(ValidationGateError) as err:
        gate(df, "broken", SUITE, report_dir=tmp_path)
    assert str(tmp_path / "broken.md") in str(err.value)
    md = (tmp_path / "broken.md").read_text()
    assert "FAILED" in md
    assert "ExpectColumnValuesToBeInSet on column `label`" in md
    assert "unexpected values: 3 of 5" in md  # 2, 2, 7 (the null is allowed)
    assert "ExpectColumnValuesToBeUnique on column `id`" in md
    assert "`'holdout'`" in md
    data = json.loads((tmp_path / "broken.json").read_text())
    by = {(r["expectation"], r["column"]): r for r in data["results"]}
    assert by[("ExpectColumnValuesToBeInSet", "label")]["unexpected_count"] == 3
    assert sorted(by[("ExpectColumnValuesToBeInSet", "label")]["examples"]) == [2, 2, 7]
    assert by[("ExpectColumnValuesToBeUnique", "id")]["unexpected_count"] == 2
    assert by[("ExpectColumnValuesToBeOfType", "label")]["success"] is True
    assert data["failed_expectations"] == 3


def test_gate_missing_column_fails(tmp_path):
    df = pl.DataFrame({"x": [1]})
    with pytest.raises(ValidationGateError):
        gate(df, "nocol", [("ExpectColumnToExist", {"column": "label"})], report_dir=tmp_path)
    assert "column `label`" in (tmp_path / "nocol.md").read_text()


def test_gate_report_is_deterministic(tmp_path):
    df = _frame([1, 0], ["a", "b"], ["train", "test"])
    gate(df, "det", SUITE, report_dir=tmp_path / "1")
    gate(df, "det", SUITE, report_dir=tmp_path / "2")
    assert (tmp_path / "1" / "det.json").read_bytes() == (tmp_path / "2" / "det.json").read_bytes()


def test_malformed_suite_is_a_stage_error(tmp_path):
    df = pl.DataFrame({"x": [1]})
    with pytest.raises(StageError, match="ExpectNoSuchThing"):
        gate(df, "bad", [("ExpectNoSuchThing", {"column": "x"})], report_dir=tmp_path)
    with pytest.raises(StageError, match="bad arguments"):
        gate(df, "bad", [("ExpectColumnValuesToBeInSet", {"column": "x"})], report_dir=tmp_path)


def test_list_columns_are_accepted(tmp_path):
    df = pl.DataFrame({"opts": [[1, 0], [0, 1]], "k": [2, 2]}, schema={"opts": pl.List(pl.Int8), "k": pl.Int64})
    out = gate(df, "lists", [("ExpectColumnValuesToNotBeNull", {"column": "opts"}),
                             ("ExpectColumnValuesToBeBetween", {"column": "k", "min_value": 2, "max_value": 2})],
               report_dir=tmp_path)
    assert out["success"]
