"""DVC end to end on a tiny two-stage pipeline in a temp git repo: repro, the local remote of
scripts/dvc_remote.sh, push, wipe cache + outputs, pull, identical files; and a params change that
reruns only the stage that reads the changed key (what `dvc exp run -S nast.beta=...` relies on).
The foreach repeats a dep and a params key the way `nast dvc-yaml` pads its items."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT

PIPELINE = """\
stages:
  make:
    cmd: python -c "import yaml; p = yaml.safe_load(open('params.yaml')); open('data.txt', 'w').write('x' * p['a'])"
    params: [a]
    outs: [data.txt]
  train:
    # the pattern of the generated dvc.yaml: a per-item params key (nast.beta only for nast, the
    # others repeat `a`) and a per-item dep (here every item repeats data.txt: DVC takes duplicates)
    foreach:
      lora: {beta: a, dep: data.txt}
      nast: {beta: nast.beta, dep: data.txt}
    do:
      cmd: python -c "import os, yaml; p = yaml.safe_load(open('params.yaml')); os.makedirs('models', exist_ok=True); open('models/${key}.txt', 'w').write(open('data.txt').read() + '${key}' + (str(p['nast']['beta']) if '${key}' == 'nast' else ''))"
      deps: [data.txt, "${item.dep}"]
      params: [a, "${item.beta}"]
      outs: ["models/${key}.txt"]
"""  # noqa: E501 -- a DVC cmd is one YAML line


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}"
    return proc.stdout + proc.stderr


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _repro(repo: Path) -> list[str]:
    """dvc repro through the Python API (the CLI's code path, without a process per call)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        return sorted(stage.name for stage in r.reproduce())


def test_push_wipe_pull_roundtrip(tmp_path, env, monkeypatch):
    from dvc.repo import Repo

    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    monkeypatch.chdir(repo)  # DVC's API, like its CLI, resolves targets from the working dir
    _run(["git", "init", "-q"], repo, env)
    Repo.init(str(repo)).close()
    (repo / "params.yaml").write_text("a: 3\nnast: {beta: 1.0}\n")
    (repo / "dvc.yaml").write_text(PIPELINE)
    assert _repro(repo) == ["make", "train@lora", "train@nast"]
    outputs = ["data.txt", "models/lora.txt", "models/nast.txt"]
    before = {f: _sha(repo / f) for f in outputs}
    assert (repo / "models/nast.txt").read_text() == "xxxnast1.0"
    assert (repo / "models/lora.txt").read_text() == "xxxlora"

    # the project's script configures the remote (CLI, as `make dvc-remote` runs it)
    _run(["bash", str(ROOT / "scripts/dvc_remote.sh"), str(remote)], repo, env)
    assert str(remote) in (repo / ".dvc" / "config.local").read_text()
    with Repo(str(repo)) as r:
        assert r.push() == 3
    assert sum(p.is_file() for p in remote.rglob("*")) == 3

    shutil.rmtree(repo / ".dvc" / "cache")
    for f in outputs:
        (repo / f).unlink()
    with Repo(str(repo)) as r:
        assert r.pull()["stats"]["fetched"] == 3
        assert r.status() == {}
    assert {f: _sha(repo / f) for f in outputs} == before

    # a nast.beta change invalidates only the stage that lists it
    (repo / "params.yaml").write_text("a: 3\nnast: {beta: 2.0}\n")
    with Repo(str(repo)) as r:
        assert set(r.status()) == {"train@nast"}
    assert _repro(repo) == ["train@nast"]
    assert (repo / "models/nast.txt").read_text() == "xxxnast2.0"
    assert _sha(repo / "models/lora.txt") == before["models/lora.txt"]
