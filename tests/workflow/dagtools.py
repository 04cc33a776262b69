"""Read the Snakemake DAG and the dvc.yaml DAG of a project directory and compare them.

Both sides become ``{stage: {"cmd", "deps", "outs", "params"}}`` keyed like DVC stages
(``train@nast``, ``train_sweep@0.5``):

* Snakemake: every job of the full DAG through the Snakemake API (``nast.dag.export_jobs``, run in
  a subprocess so each call gets a fresh Snakemake). The shell command must end in
  ``> {log} 2>&1``; that redirection is removed before comparing.
* DVC: the resolved stages (foreach expanded, params.yaml interpolated) through ``dvc.repo.Repo``.

Everything must match exactly (a dependency that dvc.yaml repeats, the padding of a foreach item
with fewer deps than another, counts once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    """This checkout's src/ first, so the subprocess runs the package under test."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def snakemake_jobs(workdir: Path) -> dict:
    """Raw export (cmd with log redirection, log, benchmark, resources) of the Snakemake DAG:
    ``nast.dag.export_jobs`` in a fresh process (one Snakemake per process)."""
    proc = subprocess.run(
        [sys.executable, "-m", "nast.dag", str(workdir)],
        capture_output=True, text=True, timeout=180, cwd=workdir, env=_env(),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"Snakemake DAG export failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def normalise_snakemake(jobs: dict) -> tuple[dict, list[str]]:
    """Strip the log redirection; problems (no log, no redirection) are returned as messages."""
    from nast.dag import normalise

    return normalise(jobs)


def generate_dvc_yaml(workdir: Path, out: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """``nast dvc-yaml`` for ``workdir`` in a fresh process."""
    cmd = [sys.executable, "-m", "nast.cli", "dvc-yaml", "--params", str(workdir / "params.yaml")]
    if out is not None:
        cmd += ["--out", str(out)]
    if check:
        cmd.append("--check")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=workdir, env=_env())


def dvc_stages(workdir: Path) -> dict:
    """The resolved dvc.yaml stages of ``workdir``."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    stages = {}
    with Repo(str(workdir)) as repo:
        for stage in repo.index.stages:
            params, deps = [], []
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    if dep.def_path != "params.yaml":
                        raise AssertionError(f"{stage.name}: params from {dep.def_path}")
                    params.extend(dep.params)
                else:
                    deps.append(dep.def_path)
            stages[stage.name] = {
                "cmd": " ".join(str(stage.cmd).split()),
                "deps": sorted(deps),
                "outs": sorted(o.def_path for o in stage.outs),
                "params": sorted(set(params)),
            }
    return stages


def compare(smk: dict, dvc: dict) -> list[str]:
    """All differences between the two DAGs, as readable lines (empty = parity)."""
    diffs = []
    for name in sorted(set(smk) - set(dvc)):
        diffs.append(f"{name}: in the Snakefile DAG only")
    for name in sorted(set(dvc) - set(smk)):
        diffs.append(f"{name}: in dvc.yaml only")
    for name in sorted(set(smk) & set(dvc)):
        s, d = smk[name], dvc[name]
        if s["cmd"] != d["cmd"]:
            diffs.append(f"{name}: cmd differs\n  snakemake: {s['cmd']}\n  dvc:       {d['cmd']}")
        if s["outs"] != d["outs"]:
            diffs.append(f"{name}: outs differ: snakemake {s['outs']} dvc {d['outs']}")
        if s["params"] != d["params"]:
            diffs.append(f"{name}: params differ: snakemake {s['params']} dvc {d['params']}")
        sdeps, ddeps = set(s["deps"]), set(d["deps"])  # a dep repeated by the foreach padding counts once
        diffs += [f"{name}: dep {dep} in the Snakefile only" for dep in sorted(sdeps - ddeps)]
        diffs += [f"{name}: dep {dep} in dvc.yaml only" for dep in sorted(ddeps - sdeps)]
    return diffs
