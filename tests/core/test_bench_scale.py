"""benchmarks/bench_scale.py at a tiny size: the whole text chain runs, the last line's format, the
row counts of every stage reconcile with the tree it built."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_scale_tiny(tmp_path):
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--studies", "50",
                          "--work", str(tmp_path / "w")], capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    m = re.fullmatch(r"studies=(\d+) seconds=(\d+\.\d) peak_rss_mb=(\d+)", lines[-1])
    assert m and int(m.group(1)) == 50 and int(m.group(3)) > 0
    stages = {}
    for line in lines:
        if line.startswith("stage="):
            kv = dict(t.split("=", 1) for t in line.split())
            stages[kv["stage"]] = {k: float(v) if k in ("seconds", "peak_rss_mb") else v for k, v in kv.items()}
    assert list(stages) == ["ingest", "permutations", "mcq", "affirm", "claims", "contextual"]
    n = {s: {k: int(v) for k, v in d.items() if k.startswith(("rows", "quar", "filt", "studies"))}
         for s, d in stages.items()}
    tree = json.loads((tmp_path / "w" / "mimic" / "bench-tree.json").read_text())
    assert tree["studies"] == 50
    ing = n["ingest"]
    assert ing["rows_in"] == tree["images"] == ing["rows_out"] + ing["quarantined"] + ing["filtered_view"]
    assert ing["studies_out"] == 50  # one frontal per study, every report readable
    assert n["permutations"]["rows_in"] == 50
    assert 0 < n["permutations"]["rows_out"] + n["permutations"]["quarantined"] <= 50
    assert n["mcq"]["rows_in"] == n["permutations"]["rows_out"] == n["mcq"]["rows_out"] + n["mcq"]["quarantined"]
    assert n["affirm"]["rows_in"] == n["mcq"]["rows_out"] == n["affirm"]["rows_out"] + n["affirm"]["quarantined"]
    assert n["claims"]["rows_in"] == 50 and n["claims"]["rows_out"] > 0
    assert n["contextual"]["rows_in"] == n["claims"]["rows_out"] and n["contextual"]["rows_out"] > 0
    assert sum(d["seconds"] for d in stages.values()) == pytest.approx(float(m.group(2)), abs=0.5)
    assert max(d["peak_rss_mb"] for d in stages.values()) == pytest.approx(int(m.group(3)), abs=1)
