"""Unreadable and empty inputs, bad params: every stage stops with exit 2 and a message naming the
file (no polars traceback), the params file actually passed, or the key."""

from __future__ import annotations

import polars as pl
import pytest
import yaml
from faultkit import REPO, make_permutations

from nast.cli import main
from nast.io import write_parquet

#: stage -> arguments; every input is the file under test, outputs go to out/
STAGES = {
    "permutations": ["--cohort", "{f}", "--out", "out/p.parquet", "--quarantine", "out/q.parquet"],
    "mcq": ["--permutations", "{f}", "--out", "out/m.parquet", "--quarantine", "out/q.parquet"],
    "affirm": ["--mcq", "{f}", "--out", "out/b.parquet", "--quarantine", "out/q.parquet"],
    "contextual": ["--claims", "{f}", "--cohort", "{f}", "--out", "out/c.parquet", "--quarantine", "out/q.parquet"],
    "trace": ["--benchmark", "{f}", "--out", "out/cte"],
    "train": ["--method", "lora_uniform", "--cohort", "{f}", "--benchmark", "{f}", "--contextual", "{f}",
              "--out", "out/model"],
    "evaluate": ["--method", "zero_shot", "--model-dir", "out/none", "--cohort", "{f}", "--benchmark", "{f}",
                 "--contextual", "{f}", "--out", "out/e.json"],
    "pretrain-base": ["--cohort", "{f}", "--out", "out/base"],
    "claims": ["--cohort", "{f}", "--out", "out/claims.parquet"],
    "grounding-data": ["--box-format", "generic", "--boxes", "boxes.csv", "--root", ".", "--cohort", "{f}",
                       "--cf-dir", "out/cf", "--out", "out/g.parquet", "--quarantine", "out/q.parquet"],
    "evaluate-grounding": ["--method", "zero_shot", "--model-dir", "out/none", "--grounding", "{f}",
                           "--cf-dir", "out/cf", "--out", "out/g.json", "--maps", "out/g.npz"],
}
#: stages that read through nast.io.read_parquet but not (yet) read_table's 0-row check
READ_ONLY: dict[str, list[str]] = {}


def _run(stage, f, params="params.yaml"):
    args = {**STAGES, **READ_ONLY}[stage]
    return main([stage, "--params", str(params), *[a.format(f=f) for a in args]])


@pytest.fixture()
def proj(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "boxes.csv").write_text("image_path,finding,x0,y0,x1,y1\na.png,Edema,1,1,5,5\n")
    return tmp_path


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("stage", [*STAGES, *READ_ONLY])
def test_unreadable_parquet_is_exit_2_naming_the_file(proj, capsys, stage, damage):
    f = proj / "input.parquet"
    write_parquet(make_permutations(20, seed=1), f)
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"PAR1 this is not parquet at all PAR1")
    assert _run(stage, f) == 2
    err = capsys.readouterr().err
    assert f"{f} is not a readable parquet file" in err and "Traceback" not in err
    assert not (proj / "out").exists() or not any((proj / "out").rglob("*.parquet"))


@pytest.mark.parametrize("stage", list(STAGES))
def test_empty_input_stops_with_a_message(proj, capsys, stage):
    f = proj / "empty.parquet"
    write_parquet(make_permutations(2, seed=1).clear(), f)
    assert _run(stage, f) == 2
    err = capsys.readouterr().err
    assert f"{f} has 0 rows" in err and "data.allow_empty: true in params.yaml" in err


def test_empty_input_allowed_by_param(proj, capsys):
    p = yaml.safe_load((proj / "params.yaml").read_text())
    p["data"]["allow_empty"] = True
    (proj / "allow.yaml").write_text(yaml.safe_dump(p))
    f = proj / "empty.parquet"
    write_parquet(make_permutations(2, seed=1).clear(), f)
    assert _run("mcq", f, proj / "allow.yaml") == 0
    assert pl.read_parquet(proj / "out" / "m.parquet").height == 0
    assert (proj / "reports" / "validation" / "mcq.md").exists()  # the gate ran on the empty table


def _params_with(proj, name, edit):
    p = yaml.safe_load((proj / "params.yaml").read_text())
    edit(p)
    path = proj / "configs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(p))
    return path


def test_split_fractions_must_sum_to_one(proj, capsys):
    path = _params_with(proj, "bad_split.yaml", lambda p: p["data"].update(
        split_fractions={"train": 0.9, "validate": 0.9, "test": 0.9}))
    assert _run("permutations", proj / "x.parquet", path) == 2
    err = capsys.readouterr().err
    assert f"{path}: data.split_fractions: must sum to 1, got 2.7" in err


def test_errors_name_the_params_file_passed(proj, capsys):
    path = _params_with(proj, "my_params.yaml", lambda p: p["permutations"].update(k=40))
    f = proj / "cohort.parquet"
    from nast.ingest.common import COHORT_SCHEMA

    row = {"dataset": "demo", "dicom_id": "d", "subject_id": 1, "study_id": 2, "view": "PA", "split": "test",
           "image_path": "x.jpg"}
    cohort = pl.DataFrame([{c: row.get(c) for c in COHORT_SCHEMA}], schema=COHORT_SCHEMA)
    write_parquet(cohort, f)
    assert _run("permutations", f, path) == 2
    err = capsys.readouterr().err
    assert f"{path}: permutations.k must be between" in err and "error: params.yaml:" not in err


def test_cuda_without_cuda_is_one_line(monkeypatch):
    import torch

    from nast.errors import StageError
    from nast.models.base import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(StageError) as exc:
        resolve_device("cuda")
    msg = str(exc.value)
    assert "\n" not in msg and "model.device: cuda but CUDA is not available" in msg
    assert str(resolve_device("auto")) == "cpu"
