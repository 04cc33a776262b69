"""`nast mcq` and `nast affirm` end to end through the CLI (template backend), incl. structural errors."""

from __future__ import annotations

import json

import polars as pl
from conftest import CHECKER_NORMAL_CONDITIONS, REPO, make_permutations

from nast.cli import main
from nast.io import write_parquet


def test_mcq_then_affirm_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    params = str(REPO / "params.yaml")
    perm = make_permutations(10, seed=41, conditions=CHECKER_NORMAL_CONDITIONS)
    write_parquet(perm, "permutations.parquet")
    assert main(["mcq", "--params", params, "--permutations", "permutations.parquet", "--out", "p/mcq.parquet",
                 "--quarantine", "q/mcq.parquet"]) == 0
    summary = json.loads((tmp_path / "p" / "mcq.summary.json").read_text())
    assert summary["rows_in"] == 10 and summary["rows_kept"] + summary["rows_quarantined"] == 10
    assert summary["share_options_verified"] == 1.0
    assert pl.read_parquet("q/mcq.parquet").columns == ["stage", "key", "reason", "source"]
    assert main(["affirm", "--params", params, "--mcq", "p/mcq.parquet", "--out", "p/benchmark.parquet",
                 "--quarantine", "q/affirm.parquet"]) == 0
    bench = pl.read_parquet("p/benchmark.parquet")
    assert bench.height == 10 and bench["affirm_verified"].all()
    assert json.loads((tmp_path / "p" / "benchmark.summary.json").read_text())["options_with_negation_cue"] == 0
    assert (tmp_path / "reports" / "validation" / "benchmark.md").exists()

    # a structural problem stops with a message naming the file and the column
    write_parquet(perm.drop("option_C"), "broken.parquet")
    capsys.readouterr()
    assert main(["mcq", "--params", params, "--permutations", "broken.parquet", "--out", "x.parquet",
                 "--quarantine", "xq.parquet"]) == 2
    err = capsys.readouterr().err
    assert "broken.parquet" in err and "'option_C'" in err
    assert main(["affirm", "--params", params, "--mcq", "nowhere.parquet", "--out", "x.parquet",
                 "--quarantine", "xq.parquet"]) == 2
    assert "not found: nowhere.parquet" in capsys.readouterr().err
