"""MLflow round trip against a real SQLite store in tmp (no mocks)."""

from __future__ import annotations

import json
import subprocess

import pytest

from nast import tracking

PARAMS = {
    "data": {"source": "demo", "seed": 0},
    "train": {"epochs": 2, "lr": 0.001},
    "nast": {"beta": 1.0},
    "llm": {"api_key_env": "OPENAI_API_KEY"},
    "tracking": {"tracking_uri": "sqlite:///unused.db", "experiment_prefix": "nast-test"},
}


@pytest.fixture()
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("NAST_TRACKING", "1")
    monkeypatch.chdir(tmp_path)
    # a repository of its own: the parent run is keyed by git commit, and the project's HEAD may move
    for cmd in (["init", "-q"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *cmd], cwd=tmp_path, check=True, capture_output=True)
    return uri


def test_scrub_drops_secrets():
    flat = tracking.flatten({"llm": {"api_key_env": "X", "model": "m"}, "a": {"token": 1, "Secret_x": 2}})
    assert tracking.scrub(flat) == {"llm.model": "m"}


def test_uri_env_overrides(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(PARAMS) == "sqlite:///unused.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///other.db")
    assert tracking.tracking_uri(PARAMS) == "sqlite:///other.db"


def test_disabled_is_noop(monkeypatch, tmp_path):
    monkeypatch.setenv("NAST_TRACKING", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'x.db'}")
    assert tracking.log_method(PARAMS, "nast", stage="train", final_metrics={"a": 1.0}) is None
    assert not (tmp_path / "x.db").exists()


def test_round_trip(store, tmp_path):
    from mlflow.tracking import MlflowClient

    inp = tmp_path / "in.parquet"
    inp.write_bytes(b"abc")
    art = tmp_path / "curve.csv"
    art.write_text("epoch,loss\n1,0.5\n")
    rid_train = tracking.log_method(
        PARAMS, "nast", stage="train", inputs=[inp],
        step_metrics=[(1, {"loss": 0.9}), (2, {"loss": 0.5})], artifacts=[art],
    )
    rid_eval = tracking.log_method(
        PARAMS, "nast", stage="evaluate", final_metrics={"mcq_negated_acc": 0.75, "skip": "text"}
    )
    rid_base = tracking.log_method(PARAMS, "zero_shot", stage="evaluate", final_metrics={"mcq_negated_acc": 0.4})
    assert rid_train and rid_train == rid_eval and rid_base != rid_train

    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("nast-test-demo")
    assert exp is not None
    # a model-training experiment: the MLflow UI opens on its runs table, not the GenAI overview
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    run = client.get_run(rid_train)
    assert run.data.metrics["mcq_negated_acc"] == 0.75
    assert "skip" not in run.data.metrics
    hist = client.get_metric_history(rid_train, "loss")
    assert sorted((m.step, m.value) for m in hist) == [(1, 0.9), (2, 0.5)]
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["nast.beta"] == "1.0"
    assert not any("key" in k.lower() for k in run.data.params)
    assert len(run.data.params["data_hash.train"]) == 16
    parent_id = run.data.tags["mlflow.parentRunId"]
    assert client.get_run(rid_base).data.tags["mlflow.parentRunId"] == parent_id
    parent = client.get_run(parent_id)
    assert parent.data.tags["nast.role"] == "pipeline"
    assert parent.data.tags["nast.git_commit"] == tracking.git_commit()
    assert [a.path for a in client.list_artifacts(rid_train)] == ["curve.csv"]
    # the parent receives report artifacts
    table = tmp_path / "summary.csv"
    table.write_text("method,x\nnast,1\n")
    assert tracking.log_pipeline_artifacts(PARAMS, [table], {"best": 0.75}) == parent_id
    assert client.get_run(parent_id).data.metrics["best"] == 0.75
    json.dumps(run.data.params)  # plain strings


def _commit_all(repo, msg="c"):
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, capture_output=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", msg], cwd=repo,
                   check=True, capture_output=True)


def test_uncommitted_code_gets_its_own_pipeline_run(store, tmp_path):
    """A run from a tree with uncommitted changes is not filed under the commit's clean parent."""
    from mlflow.tracking import MlflowClient

    (tmp_path / "stage.py").write_text("x = 1\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    _commit_all(tmp_path)
    clean = tracking.log_method(PARAMS, "nast", stage="train", final_metrics={"loss": 1.0})
    client = MlflowClient(tracking_uri=store)
    clean_parent = client.get_run(client.get_run(clean).data.tags["mlflow.parentRunId"])
    assert clean_parent.data.tags["nast.git_dirty"] == "false"
    assert client.get_run(clean).data.params["git_dirty"] == "false"

    # the pipeline rewriting dvc.lock does not make the code dirty: same parent, same run
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert tracking.git_state()[1] == ""
    assert tracking.log_method(PARAMS, "nast", stage="evaluate", final_metrics={"acc": 0.5}) == clean

    (tmp_path / "stage.py").write_text("x = 2\n")  # an uncommitted code change
    commit, dirty = tracking.git_state()
    assert commit == tracking.git_commit() and len(dirty) == 8
    assert tracking.pipeline_key(PARAMS) == f"{commit[:12]}-dirty{dirty}-{tracking.params_hash(PARAMS)}"
    changed = tracking.log_method(PARAMS, "nast", stage="train", final_metrics={"loss": 2.0})
    parent = client.get_run(client.get_run(changed).data.tags["mlflow.parentRunId"])
    assert changed != clean and parent.info.run_id != clean_parent.info.run_id
    assert parent.data.tags["nast.git_dirty"] == dirty and parent.data.tags["nast.git_commit"] == commit
    assert client.get_run(changed).data.params["git_dirty"] == dirty

    (tmp_path / "stage.py").write_text("x = 3\n")  # another change: another digest, another parent
    other = tracking.log_method(PARAMS, "nast", stage="train", final_metrics={"loss": 3.0})
    assert tracking.git_state()[1] not in ("", dirty)
    assert client.get_run(other).data.tags["mlflow.parentRunId"] not in (parent.info.run_id, clean_parent.info.run_id)


def test_an_experiment_made_without_the_kind_gets_it(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    exp_id = client.create_experiment("nast-test-demo")  # as an older version of this module made it
    assert "mlflow.experimentKind" not in client.get_experiment(exp_id).tags
    tracking.log_method(PARAMS, "nast", stage="evaluate", final_metrics={"mcq_negated_acc": 0.5})
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
