"""MLflow tracking: the only module that imports ``mlflow`` (lazily, inside functions).

Layout
    * one **experiment** per dataset: ``<tracking.experiment_prefix>-<data.source>``;
    * one **pipeline run** (parent) per (git commit, uncommitted changes, params hash): found again
      by its tag ``nast.pipeline_key`` so separate CLI processes (train, evaluate, report) nest
      under it; runs from a tree with uncommitted changes get their own parent, tagged
      ``nast.git_dirty`` with a digest of the diff (``false`` when clean);
    * one **method run** per method (``nast.method`` tag, ``mlflow.parentRunId`` = the pipeline run):
      ``nast train`` logs params + per-epoch metrics + adapter files into it, ``nast evaluate`` the
      final metrics + the eval JSON; ``nast report`` logs tables/plots/CTE heatmap to the parent.

Privacy
    Only aggregates are logged (numbers, tables of aggregates, plots). Callers never pass report
    text, captions or images; :func:`scrub` drops every param whose key mentions
    ``key``/``token``/``secret``/``password`` (so ``llm.api_key_env`` is never logged either).

Configuration
    URI = env ``MLFLOW_TRACKING_URI`` if set, else ``params.tracking.tracking_uri``
    (default ``sqlite:///mlruns.db``). ``NAST_TRACKING=0`` disables tracking entirely (every
    function becomes a no-op returning None). Tracking failures are logged as warnings and never
    fail a pipeline stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)

SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "credential")
#: params sections logged with every method run (others are unrelated to training/evaluation).
RUN_SECTIONS = ("data", "model", "train", "nast", "evaluate", "trace", "contextual", "permutations")


def _unrecorded(params: Mapping[str, Any]) -> dict[str, Any]:
    """The config as plain dicts: MLflow gets the whole validated config (the pipeline run's key,
    each run's params), which changes where runs are logged but no output file, so these reads are
    not a stage's params dependency (nast.config.RecordingParams does not see them)."""
    from nast.config import plain_params

    return plain_params(params)


def enabled() -> bool:
    return os.environ.get("NAST_TRACKING", "1").strip().lower() not in ("0", "false", "no", "off")


def tracking_uri(params: Mapping[str, Any]) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or params["tracking"]["tracking_uri"]


def experiment_name(params: Mapping[str, Any]) -> str:
    return f"{params['tracking']['experiment_prefix']}-{params['data']['source']}"


def is_secret(key: str) -> bool:
    k = key.lower()
    return any(w in k for w in SECRET_WORDS)


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b.c": "value"} with values as strings (lists JSON-encoded)."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = json.dumps(obj) if isinstance(obj, (list, tuple)) else str(obj)
    return out


def scrub(flat: Mapping[str, str]) -> dict[str, str]:
    """Drop any entry whose key names a key/token/secret."""
    return {k: v for k, v in flat.items() if not is_secret(k)}


def params_hash(params: Mapping[str, Any]) -> str:
    from nast.io import json_default

    blob = json.dumps(params, sort_keys=True, default=json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def data_hash(paths: Iterable[str | Path]) -> str:
    """sha256 over the contents of the input files (missing files hash their name only)."""
    h = hashlib.sha256()
    for p in sorted(str(x) for x in paths if x is not None):
        h.update(p.encode())
        path = Path(p)
        if path.is_file():
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


#: tracked files that the pipeline itself rewrites (``dvc repro`` writes ``dvc.lock``, ``dvc add``
#: the ``.dvc`` files): a change there is not a change of the code that produced the numbers.
GIT_STATE_EXCLUDE = (":(top,exclude)dvc.lock", ":(top,exclude,glob)**/*.dvc")


_GIT_WARNED: set[str] = set()


def _git(args: list[str], where) -> subprocess.CompletedProcess | None:
    """``git ARGS`` in ``where``; None (with one warning per kind of error) when git cannot run:
    runs are then keyed by commit "unknown" - still tracked, but not told apart by code state."""
    try:
        return subprocess.run(["git", *args], cwd=where, capture_output=True, timeout=30)
    except Exception as exc:  # noqa: BLE001 - no git is fine, but never silently
        kind = type(exc).__name__
        if kind not in _GIT_WARNED:
            _GIT_WARNED.add(kind)
            log.warning("MLflow tracking: git unavailable (%s: %s); runs are keyed by commit 'unknown'", kind, exc)
        return None


def git_state(cwd: str | Path | None = None) -> tuple[str, str]:
    """(HEAD, dirty digest) of the working directory's repository, else of the repository holding
    this package; ``("unknown", "")`` without git. The digest is ``""`` for a clean tree and
    otherwise the first 8 hex digits of the sha256 of ``git diff HEAD`` over the tracked files
    of the whole repository (without ``dvc.lock`` and ``*.dvc``), so runs made from uncommitted
    code are told apart from the commit's own runs and from each other."""
    for where in ([cwd] if cwd else [None, Path(__file__).resolve().parent]):
        head = _git(["rev-parse", "HEAD"], where)
        if head is None or head.returncode != 0 or not head.stdout.strip():
            continue
        diff = _git(["diff", "HEAD", "--no-ext-diff", "--binary", "--", ":(top)", *GIT_STATE_EXCLUDE], where)
        dirty = hashlib.sha256(diff.stdout).hexdigest()[:8] if diff is not None and diff.stdout.strip() else ""
        return head.stdout.decode().strip(), dirty
    return "unknown", ""


def git_commit(cwd: str | Path | None = None) -> str:
    """HEAD of the working directory's repository, else of the repository holding this package."""
    return git_state(cwd)[0]


def pipeline_key(params: Mapping[str, Any]) -> str:
    """``<commit[:12]>[-dirty<digest>]-<params hash>``: one pipeline run per code state and params."""
    commit, dirty = git_state()
    return f"{commit[:12]}{'-dirty' + dirty if dirty else ''}-{params_hash(params)}"


def _git_params() -> dict[str, str]:
    commit, dirty = git_state()
    return {"git_commit": commit, "git_dirty": dirty or "false"}


def _artifact_location(uri: str, name: str) -> str | None:
    """For a local sqlite store keep artifacts next to the database file."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent.resolve() / "mlartifacts" / name).as_uri()
    return None


def _client(params: Mapping[str, Any]):
    from mlflow.tracking import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=tracking_uri(params))


#: the experiment type MLflow 3's UI reads: a model-training experiment opens on the runs table
#: (without it, an experiment with no runs yet opens on the GenAI overview)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(client, params: Mapping[str, Any]) -> str:
    name = experiment_name(params)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        for key, value in EXPERIMENT_KIND.items():
            if exp.tags.get(key) != value:  # experiments made before the tag existed
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=_artifact_location(tracking_uri(params), name),
                                    tags=EXPERIMENT_KIND)


def _find_run(client, exp_id: str, tags: Mapping[str, str]):
    flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([exp_id], filter_string=flt, max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def _parent_run(client, exp_id: str, params: Mapping[str, Any]):
    key = pipeline_key(params)
    run = _find_run(client, exp_id, {"nast.pipeline_key": key, "nast.role": "pipeline"})
    if run is not None:
        return run
    git = _git_params()
    run = client.create_run(
        exp_id,
        run_name=f"pipeline-{key}",
        tags={"nast.pipeline_key": key, "nast.role": "pipeline", **{f"nast.{k}": v for k, v in git.items()}},
    )
    _log_params(client, run.info.run_id, {**git, "params_hash": params_hash(params)})
    return run


def _log_params(client, run_id: str, flat: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    existing = client.get_run(run_id).data.params
    new = [Param(k, str(v)[:6000]) for k, v in scrub(flat).items() if k not in existing]
    for i in range(0, len(new), 100):
        client.log_batch(run_id, params=new[i : i + 100])


def _conflicts(client, run_id: str, flat: Mapping[str, str]) -> bool:
    existing = client.get_run(run_id).data.params
    return any(k in existing and existing[k] != str(v)[:6000] for k, v in scrub(flat).items())


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            out[k.replace("@", "_at_")] = float(v)
    return out


def method_run_id(params: Mapping[str, Any], method: str, run_params: Mapping[str, str]) -> str | None:
    """Find or create the method run (nested under the pipeline run); None when disabled."""
    if not enabled():
        return None
    client = _client(params)
    exp_id = _experiment_id(client, params)
    parent = _parent_run(client, exp_id, params)
    tags = {"nast.method": method, "mlflow.parentRunId": parent.info.run_id}
    run = _find_run(client, exp_id, tags)
    if run is None or _conflicts(client, run.info.run_id, run_params):
        run = client.create_run(exp_id, run_name=method, tags={**tags, "nast.role": "method"})
    _log_params(client, run.info.run_id, run_params)
    return run.info.run_id


def log_method(
    params: Mapping[str, Any],
    method: str,
    *,
    stage: str,
    inputs: Iterable[str | Path] = (),
    step_metrics: Iterable[tuple[int, Mapping[str, Any]]] = (),
    final_metrics: Mapping[str, Any] | None = None,
    artifacts: Iterable[str | Path] = (),
    artifact_dir: str | None = None,
) -> str | None:
    """Log one stage's results into the method's run. Never raises (tracking is best effort)."""
    if not enabled():
        return None
    params = _unrecorded(params)
    try:
        from mlflow.entities import Metric

        flat = flatten({k: params[k] for k in RUN_SECTIONS if k in params})
        flat.update({**_git_params(), "method": method, f"data_hash.{stage}": data_hash(inputs)})
        run_id = method_run_id(params, method, flat)
        client = _client(params)
        now = int(time.time() * 1000)
        metrics = []
        for step, values in step_metrics:
            metrics += [Metric(k, v, now, int(step)) for k, v in _numeric(values).items()]
        if final_metrics:
            metrics += [Metric(k, v, now, 0) for k, v in _numeric(final_metrics).items()]
        for i in range(0, len(metrics), 500):
            client.log_batch(run_id, metrics=metrics[i : i + 500])
        for path in artifacts:
            _log_artifact(client, run_id, path, artifact_dir)
        client.set_tag(run_id, f"nast.stage.{stage}", "done")
        client.set_terminated(run_id, "FINISHED")
        return run_id
    except Exception as exc:  # noqa: BLE001 - tracking must never break a stage
        log.warning("MLflow tracking failed for %s (%s stage): %s: %s; continuing without it", method, stage,
                    type(exc).__name__, exc)
        return None


def log_pipeline_artifacts(
    params: Mapping[str, Any], artifacts: Iterable[str | Path], metrics: Mapping[str, Any] | None = None
) -> str | None:
    """Tables, plots and the CTE heatmap go to the pipeline (parent) run."""
    if not enabled():
        return None
    params = _unrecorded(params)
    try:
        client = _client(params)
        exp_id = _experiment_id(client, params)
        run_id = _parent_run(client, exp_id, params).info.run_id
        if metrics:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in _numeric(metrics).items()])
        for path in artifacts:
            _log_artifact(client, run_id, path, None)
        client.set_terminated(run_id, "FINISHED")
        return run_id
    except Exception as exc:  # noqa: BLE001
        log.warning("MLflow tracking failed for the pipeline run: %s: %s; continuing without it",
                    type(exc).__name__, exc)
        return None


def _log_artifact(client, run_id: str, path: str | Path, artifact_dir: str | None) -> None:
    path = Path(path)
    if path.is_dir():
        client.log_artifacts(run_id, str(path), artifact_path=artifact_dir or path.name)
    elif path.is_file():
        client.log_artifact(run_id, str(path), artifact_path=artifact_dir)
    else:
        log.warning("MLflow tracking: artifact not found, not logged: %s", path)
