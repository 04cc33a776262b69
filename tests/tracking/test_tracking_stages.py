"""Tracking switched on for real stages (nast train / evaluate / report on the tiny world), read back
from the SQLite store with the MLflow client; tracking failures are warnings naming the error."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from nast import tracking
from nast.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
import tiny_world  # noqa: E402


def _git_repo(path: Path) -> str:
    for cmd in (["init", "-q"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *cmd], cwd=path, check=True, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracked")
    head = _git_repo(tmp)  # the stages run from their own repository: the parent key is stable
    world = tiny_world.build(tmp / "w", evaluate={"bootstrap": 20})
    f = world["files"]
    uri = f"sqlite:///{tmp / 'mlruns.db'}"
    inputs = ["--cohort", f["cohort"], "--benchmark", f["benchmark"], "--contextual", f["contextual"]]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAST_TRACKING", "1")
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(tmp)
        assert main(["train", "--params", f["params"], "--method", "nast", *inputs,
                     "--layer-weights", f["layer_weights"], "--out", str(tmp / "models" / "nast")]) == 0
        assert main(["evaluate", "--params", f["params"], "--method", "nast",
                     "--model-dir", str(tmp / "models" / "nast"),
                     *inputs, "--out", str(tmp / "eval" / "nast.json")]) == 0
        assert main(["report", "--params", f["params"], "--eval-dir", str(tmp / "eval"), "--out", str(tmp / "tables"),
                     "--plots", str(tmp / "plots"), "--models-dir", str(tmp / "models"),
                     "--cte-dir", str(tmp / "no_cte")]) == 0
    return {"tmp": tmp, "uri": uri, "head": head, "world": world}


def _method_run(client, name):
    exp = client.get_experiment_by_name("nast-demo")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`nast.method` = '{name}'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def test_stage_params_and_metrics_read_back(tracked):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracked["uri"])
    run = _method_run(client, "nast")
    params, tp = run.data.params, tracked["world"]["params"]["train"]
    assert params["method"] == "nast"
    assert params["train.lr"] == str(tp["lr"]) and params["train.epochs"] == str(tp["epochs"])
    assert params["nast.beta"] == "1.0" and params["nast.scale"] == "lr" and params["model.family"] == "open_clip"
    assert params["git_commit"] == tracked["head"] and params["git_dirty"] == "false"
    assert len(params["data_hash.train"]) == len(params["data_hash.evaluate"]) == 16
    assert run.data.tags["nast.stage.train"] == "done" and run.data.tags["nast.stage.evaluate"] == "done"

    # per-epoch training metrics = curve.csv, step = epoch
    curve = pl.read_csv(tracked["tmp"] / "models" / "nast" / "curve.csv")
    assert curve.height == tp["epochs"]
    for col, metric in (("loss", "train_loss"), ("claim_loss", "train_claim_loss"),
                        ("val_mcq_negated_acc", "val_mcq_negated_acc")):
        hist = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))
        assert [s for s, _ in hist] == curve["epoch"].to_list(), metric
        assert [v for _, v in hist] == pytest.approx(curve[col].to_list(), abs=1e-6), metric

    # the evaluation's numbers, under the names the README/UI use
    res = json.loads((tracked["tmp"] / "eval" / "nast.json").read_text())
    m = run.data.metrics
    expected = {k: v for k, v in res.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}
    expected.update({f"retrieval_{k}": v for k, v in res["retrieval"].items()})
    expected.update({f"claim_acc_{k}": v for k, v in res["claim_acc_by_foil_type"].items()})
    expected.update({f"claim_acc_{k}_image_shuffled": v
                     for k, v in res["claim_acc_by_foil_type_image_shuffled"].items()})
    expected.update({f"auroc_{k.replace(' ', '_')}": v for k, v in res["auroc"].items()})
    for key in ("mcq_negated_acc", "mcq_affirmative_acc", "mcq_gap", "claim_acc", "claim_acc_image_shuffled",
                "retrieval_r5", "retrieval_t2i_r1", "claim_acc_polarity", "n_mcq"):
        assert key in expected, key
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
    names = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/adapter.pt", "model/adapter_config.json", "model/curve.csv", "model/params_used.json"} <= names
    assert [a.path for a in client.list_artifacts(run.info.run_id, "eval")] == ["eval/nast.json"]

    # the report goes to the parent (pipeline) run
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["nast.role"] == "pipeline" and parent.data.tags["nast.git_commit"] == tracked["head"]
    for key in ("mcq_negated_acc", "mcq_gap", "claim_acc", "retrieval_r5"):
        assert parent.data.metrics[f"nast.{key}"] == pytest.approx(res[key], abs=1e-12), key
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"tables", "plots"} <= top
    tables = {a.path for a in client.list_artifacts(parent.info.run_id, "tables")}
    assert "tables/summary.csv" in tables


# ------------------------------------------------------------------------ failures warn
PARAMS = {"data": {"source": "demo"}, "train": {"lr": 0.1}, "tracking": {"experiment_prefix": "nast-fail"}}


@pytest.fixture()
def on(tmp_path, monkeypatch, tracked):
    """Tracking on, into the module's store (a fresh SQLite store costs seconds of migrations)."""
    monkeypatch.setenv("NAST_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked["uri"])
    monkeypatch.chdir(tracked["tmp"])
    return tmp_path


def test_a_broken_store_is_a_warning_naming_the_error(on, caplog, monkeypatch):
    (on / "broken.db").write_bytes(b"this is not an sqlite database" * 100)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{on / 'broken.db'}")
    with caplog.at_level(logging.WARNING, logger="nast.tracking"):
        assert tracking.log_method(PARAMS, "nast", stage="evaluate", final_metrics={"a": 1.0}) is None
        assert tracking.log_pipeline_artifacts(PARAMS, [], {"b": 2.0}) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "nast.tracking"]
    assert len(warnings) == 2, caplog.text
    assert "MLflow tracking failed for nast (evaluate stage)" in warnings[0].getMessage()
    assert "MLflow tracking failed for the pipeline run" in warnings[1].getMessage()
    for w in warnings:
        assert "not a database" in w.getMessage().lower() or "database" in w.getMessage().lower(), w.getMessage()


def test_a_stage_goes_on_when_tracking_raises(on, caplog, monkeypatch, tmp_path):
    def down(_params):
        raise ConnectionError("tracking server down")

    monkeypatch.setattr(tracking, "_client", down)
    world = tiny_world.build(tmp_path / "w")
    f = world["files"]
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--params", f["params"], "--method", "zero_shot", "--cohort", f["cohort"],
                     "--benchmark", f["benchmark"], "--contextual", f["contextual"], "--out", str(tmp_path / "z")]) == 0
    assert (tmp_path / "z" / "manifest.json").is_file()
    (rec,) = [r for r in caplog.records if r.name == "nast.tracking"]
    assert rec.levelno == logging.WARNING
    assert rec.getMessage() == ("MLflow tracking failed for zero_shot (train stage): ConnectionError: tracking server "
                                "down; continuing without it")


def test_missing_artifact_and_missing_git_are_warnings(on, caplog, monkeypatch):
    with caplog.at_level(logging.WARNING, logger="nast.tracking"):
        rid = tracking.log_method(PARAMS, "nast", stage="train", artifacts=[on / "no_such_file.csv"])
    assert rid is not None
    assert f"artifact not found, not logged: {on / 'no_such_file.csv'}" in caplog.text
    assert [r.levelno for r in caplog.records if r.name == "nast.tracking"] == [logging.WARNING]
    caplog.clear()

    def no_git(*_a, **_k):
        raise FileNotFoundError("git: not installed")

    monkeypatch.setattr(tracking.subprocess, "run", no_git)
    monkeypatch.setattr(tracking, "_GIT_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="nast.tracking"):
        assert tracking.git_state() == ("unknown", "")
        assert tracking.git_state() == ("unknown", "")
    msgs = [r.getMessage() for r in caplog.records if r.name == "nast.tracking"]
    assert msgs == ["MLflow tracking: git unavailable (FileNotFoundError: git: not installed); "
                    "runs are keyed by commit 'unknown'"]  # once, not per call
