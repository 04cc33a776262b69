"""The one rule for ../shared (tests/shared_data.py): skip when absent, fail under CI when the
shared Open-i folder exists."""

from __future__ import annotations

import pytest
import shared_data


def test_present_file_is_returned(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a\n")
    assert shared_data.require(f, shared=tmp_path) == f


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_missing_file_skips_outside_ci(tmp_path, monkeypatch, ci):
    (tmp_path / "data" / "openi").mkdir(parents=True)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="shared data not found"):
        shared_data.require(tmp_path / "data" / "openi" / "missing.csv", shared=tmp_path)


def test_missing_file_fails_under_ci_when_the_shared_folder_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.skip.Exception):  # no ../shared/data/openi: nothing is expected to be there
        shared_data.require(tmp_path / "data" / "openi" / "missing.csv", shared=tmp_path)
    (tmp_path / "data" / "openi").mkdir(parents=True)
    with pytest.raises(pytest.fail.Exception, match="these tests must run"):
        shared_data.require(tmp_path / "data" / "openi" / "missing.csv", shared=tmp_path)


def test_the_rule_is_the_folder_beside_the_checkout():
    assert shared_data.SHARED == shared_data.REPO.parent / "shared"
    assert shared_data.OPENI_DEV_CSV == shared_data.REPO.parent / "shared" / "data" / "openi" / "openi-dev-reports.csv"
