"""Kill the openai-backend `nast mcq` halfway, rerun: same table, no repeated request, no key leak."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import yaml
from conftest import make_permutations
from fake_openai_server import FakeOpenAI

from nast.cli import main
from nast.io import write_parquet

FAKE_KEY = "sk-nast-resume-SECRET-77b1e2d4"
N_QUESTIONS, KILL_AFTER = 12, 5


def _params_file(params, path: Path, base_url: str, cache: Path) -> Path:
    p = {**params, "mcq": {**params["mcq"], "backend": "openai"},
         "llm": {**params["llm"], "base_url": base_url, "cache_dir": str(cache), "max_concurrency": 2}}
    path.write_text(yaml.safe_dump(p))
    return path


def _cache_keys(cache: Path) -> list[str]:
    f = cache / "responses.jsonl"
    if not f.exists():
        return []
    import json
    return [json.loads(x)["key"] for x in f.read_text().splitlines() if x.endswith("}")]


def test_kill_and_resume(params, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # GX reports land under tmp_path/reports
    monkeypatch.setenv("NAST_TEST_FAKE_KEY", FAKE_KEY)
    perm_path = tmp_path / "permutations.parquet"
    write_parquet(make_permutations(N_QUESTIONS, seed=21), perm_path)
    cache = tmp_path / "cache"
    log_path = tmp_path / "killed_run.log"

    with FakeOpenAI("block_after", block_after=KILL_AFTER) as srv:
        pfile = _params_file(params, tmp_path / "params.yaml", srv.base_url, cache)
        cmd = [sys.executable, "-m", "nast.cli", "mcq", "--params", str(pfile), "--permutations", str(perm_path),
               "--out", str(tmp_path / "killed" / "mcq.parquet"),
               "--quarantine", str(tmp_path / "killed" / "q.parquet")]
        env = {**os.environ, "NAST_TEST_FAKE_KEY": FAKE_KEY}
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            deadline = time.time() + 120
            while len(_cache_keys(cache)) < KILL_AFTER and time.time() < deadline and proc.poll() is None:
                time.sleep(0.05)
            time.sleep(0.2)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        first_keys = _cache_keys(cache)
        assert len(first_keys) == KILL_AFTER, log_path.read_text()
        assert not (tmp_path / "killed" / "mcq.parquet").exists()
        n_first = len(srv.log)
        assert srv.log[0]["auth"] == f"Bearer {FAKE_KEY}"   # the key really was in use

        srv.mode = "correct"
        srv.release()
        out = tmp_path / "resumed" / "mcq.parquet"
        rc = main(["mcq", "--params", str(pfile), "--permutations", str(perm_path), "--out", str(out),
                   "--quarantine", str(tmp_path / "resumed" / "q.parquet")])
        assert rc == 0
        second = srv.keys()[n_first:]
        assert not set(second) & set(first_keys)               # nothing cached was asked again
        assert len(second) == len(set(second)) == N_QUESTIONS - KILL_AFTER
        assert sorted(_cache_keys(cache)) == sorted(set(first_keys) | set(second))  # no duplicate lines

        pfile2 = _params_file(params, tmp_path / "params2.yaml", srv.base_url, tmp_path / "cache2")
        ref = tmp_path / "uninterrupted" / "mcq.parquet"
        assert main(["mcq", "--params", str(pfile2), "--permutations", str(perm_path), "--out", str(ref),
                     "--quarantine", str(tmp_path / "uninterrupted" / "q.parquet")]) == 0

    resumed, reference = pl.read_parquet(out), pl.read_parquet(ref)
    assert resumed.height == N_QUESTIONS and resumed.equals(reference)
    assert out.read_bytes() == ref.read_bytes()
    assert (tmp_path / "resumed" / "mcq.summary.json").exists()

    # the API key never lands in cache files, outputs, summaries, reports or logs
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert leaked == []
    assert FAKE_KEY not in caplog.text
