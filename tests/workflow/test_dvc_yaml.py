"""dvc.yaml on a real-data source, by params.yaml alone (issue 15, deliverable 5).

* `nast dvc-yaml` for a project whose params.yaml says ``data.source: mimic`` (or ``openi``),
  with a tiny dataset tree and a ``model.checkpoint`` file: the generated dvc.yaml has no demo
  stage (demo_data, pretrain_base) and no grounding stage (no boxes), DVC parses it, and it is the
  Snakemake DAG of that params.yaml stage by stage.
* The committed (demo) dvc.yaml with only params.yaml changed: ``dvc repro ingest`` ingests that
  tree and runs no demo stage; ``demo_data`` of the stale file stops with an error naming
  ``nast dvc-yaml``, and the dataset tree is untouched throughout.

The MIMIC-CXR-JPG tree is written by the demo generator without its demo-only files (a MIMIC
layout the demo-data guard must not take for a demo tree); the Open-i folder is four made-up
reports and 16 x 16 PNGs (never the shared real reports).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import dagtools
import polars as pl
import pytest
import yaml
from PIL import Image

from nast.demo.generate import ANNOTATIONS_FILE, METADATA_FILE, generate_demo

OPENI_REPORTS = [
    ("No focal consolidation. Small left pleural effusion.", "Small left pleural effusion."),
    ("Heart size is normal. No pneumothorax.", "No acute cardiopulmonary process."),
    ("Mild cardiomegaly. No pleural effusion.", "Cardiomegaly without edema."),
    ("Lungs are clear. No effusion or pneumothorax.", "Normal chest."),
]


def _mimic_tree(root: Path) -> int:
    """A MIMIC-CXR-JPG 2.0.0 layout tree; returns the number of frontal images."""
    generate_demo(root, n_subjects=6, studies_per_subject=(1, 2), image_size=48, lateral_fraction=0.3,
                  twins=False, seed=3)
    (root / ANNOTATIONS_FILE).unlink()  # a real download has no demo boxes
    meta = pl.read_csv(root / METADATA_FILE)
    return meta.filter(pl.col("ViewPosition").is_in(["PA", "AP"])).height


def _openi_tree(root: Path) -> int:
    """The Open-i layout (indiana_reports.csv, indiana_projections.csv, images/); returns the number
    of frontal images."""
    images = root / "images" / "images_normalized"
    images.mkdir(parents=True)
    reports, projections = [], []
    for uid, (findings, impression) in enumerate(OPENI_REPORTS, start=1):
        reports.append({"uid": str(uid), "MeSH": "normal", "Problems": "normal", "image": "Xray Chest PA and Lateral",
                        "indication": "cough", "comparison": "None.", "findings": findings, "impression": impression})
        for j, proj in enumerate(("Frontal", "Lateral"), start=1):
            name = f"{uid}_IM-{uid:04d}-{j:04d}.dcm.png"
            projections.append({"uid": str(uid), "filename": name, "projection": proj})
            Image.new("L", (16, 16), color=40 * uid + j).save(images / name)
    pl.DataFrame(reports).write_csv(root / "indiana_reports.csv")
    pl.DataFrame(projections).write_csv(root / "indiana_projections.csv")
    return len(OPENI_REPORTS)


TREES = {"mimic": _mimic_tree, "openi": _openi_tree}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(params=sorted(TREES))
def real_source(request, tmp_path, project_copy):
    """project_copy with params.yaml pointing at a tiny tree of the source, and a base checkpoint."""
    source = request.param
    root = tmp_path / f"{source}-root"
    n_frontal = TREES[source](root)
    checkpoint = tmp_path / "base-model" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"not read by ingest")
    path = project_copy / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["data"].update(source=source, root=str(root))
    params["model"]["checkpoint"] = str(checkpoint)
    params["methods"] = [m for m in params["methods"] if m not in ("grounded", "nast-grounded")]  # need boxes
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return dict(source=source, project=project_copy, root=root, n_frontal=n_frontal, checkpoint=checkpoint,
                params=params)


def test_generated_for_a_real_source_has_no_demo_stage(real_source):
    project = real_source["project"]
    proc = dagtools.generate_dvc_yaml(project)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (project / "dvc.yaml").read_text()
    assert f"data.source: {real_source['source']}" in text.split("stages:")[0]
    stages = yaml.safe_load(text)["stages"]
    assert {"demo_data", "pretrain_base", "grounding_data", "evaluate_grounding",
            "evaluate_grounding_sweep"}.isdisjoint(stages)
    body = text.split("\nstages:\n", 1)[1]
    body = "\n".join(ln for ln in body.splitlines() if not ln.strip().startswith("- src/nast/"))  # code deps
    assert "data/raw/demo" not in body and "models/base" not in body and "grounding" not in body
    # DVC parses it and it is the Snakemake DAG of this params.yaml, stage by stage
    dvc = dagtools.dvc_stages(project)
    smk, problems = dagtools.normalise_snakemake(dagtools.snakemake_jobs(project))
    assert problems == [] and dagtools.compare(smk, dvc) == []
    methods, betas = real_source["params"]["methods"], real_source["params"]["nast"]["betas"]
    assert len(dvc) == 10 + 2 * len(methods) + 2 * len(betas)  # cache_images: data.image_cache_size is set
    assert dvc["cache_images"]["deps"][0] == "data/interim/cohort.parquet"
    assert "--grounding" not in dvc["cache_images"]["cmd"]
    ckpt = str(real_source["checkpoint"])
    assert ckpt in dvc["embed_images"]["deps"] and f"--base {ckpt}" in dvc["embed_images"]["cmd"]
    assert ckpt in dvc["trace"]["deps"] and f"--base {ckpt}" in dvc[f"evaluate@{methods[0]}"]["cmd"]
    data_deps = [d for d in dvc["ingest"]["deps"] if not d.startswith("src/nast/")]
    assert data_deps == [str(real_source["root"])]
    assert f"--source {real_source['source']} --root {real_source['root']}" in dvc["ingest"]["cmd"]


def test_committed_dvc_yaml_ingests_a_real_source_by_params_alone(real_source, env):
    project, root, source = real_source["project"], real_source["root"], real_source["source"]
    before = _digest(root)
    proc = subprocess.run(["dvc", "repro", "ingest"], cwd=project, env=env, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Running stage 'ingest'" in out and f"--source {source} --root {root}" in out
    assert "demo_data" not in out and not (project / "data" / "raw").exists()
    cohort = pl.read_parquet(project / "data/interim/cohort.parquet")
    assert cohort.height == real_source["n_frontal"] > 0
    assert cohort["dataset"].unique().to_list() == [source]
    assert _digest(root) == before
    # the stale demo stages fail loudly instead of writing an unused demo tree
    proc = subprocess.run(["dvc", "repro", "-s", "demo_data"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"dvc.yaml was generated for the demo; params.yaml says data.source: {source}" in out
    assert "`nast dvc-yaml`" in out
    assert not (project / "data" / "raw" / "demo").exists() and _digest(root) == before
    # code is a dependency: a one-line edit of the reader makes ingest (and only ingest) changed
    assert subprocess.run(["dvc", "status", "ingest"], cwd=project, env=env, capture_output=True,
                          text=True).stdout.strip().endswith("up to date.")
    reader = project / "src/nast/ingest/mimic.py"
    reader.write_text(reader.read_text() + "\n# a one-line edit\n")
    proc = subprocess.run(["dvc", "status", "ingest"], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ingest:" in proc.stdout and "modified:" in proc.stdout and "src/nast/ingest/mimic.py" in proc.stdout


def _job(rule, order, wildcard, cmd, deps, outs, params, log):
    return {"rule": rule, "order": order, "wildcard": wildcard, "cmd": f"{cmd} > {log} 2>&1", "deps": sorted(deps),
            "outs": sorted(outs), "params": sorted(params), "log": [log], "benchmark": None, "resources": {}}


def test_generator_takes_any_rule_set(tmp_path):
    """Synthetic jobs (no Snakemake): items that differ in args, deps and params keys, a key that is
    also a word of the command, a rule added later; DVC resolves the rendered file to the same jobs."""
    from nast.dag import build_stages, normalise, render

    jobs = {"prep": _job("prep", 0, None, "nast prep --root data/raw --out data/p.parquet", ["data/raw"],
                         ["data/p.parquet"], ["data"], "logs/prep.log")}
    extra = {"nast": (["--beta-key nast.beta"], [], ["nast.beta", "nast.scale"]),
             "dpo": (["--pairs", "data/pairs.parquet"], ["data/pairs.parquet", "src/nast/train/dpo.py"], []),
             "nast-dpo": (["--pairs", "data/pairs.parquet"], ["data/pairs.parquet"], ["nast.beta"]),
             "zero_shot": ([], [], [])}
    for m, (args, deps, keys) in extra.items():
        cmd = " ".join(["nast train --method", m, "--cohort data/p.parquet", *args, f"--out models/{m}"])
        jobs[f"train@{m}"] = _job("train", 1, "method", cmd, ["data/p.parquet", "src/nast/stages/train.py", *deps],
                                  [f"models/{m}", f"reports/eval/{m}.json"], ["train", *keys], f"logs/train/{m}.log")
    params = {"data": {"source": "demo", "root": "data/raw"}, "train": {"epochs": 1},
              "nast": {"beta": 1.0, "scale": "lr"}, "methods": list(extra)}
    stages = build_stages(jobs, params)
    assert stages["prep"]["cmd"] == "nast prep --root data/raw --out data/p.parquet"  # only ingest is templated
    assert list(stages["train"]["foreach"]) == list(extra)  # the params.yaml order
    assert stages["train"]["do"]["outs"] == ["models/${key}", {"reports/eval/${key}.json": {"cache": False}}]
    (tmp_path / "dvc.yaml").write_text(render(stages, "data.source: demo"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")
    smk, problems = normalise(jobs)
    assert problems == [] and dagtools.compare(smk, dagtools.dvc_stages(tmp_path)) == []


def test_generator_refuses_what_dvc_cannot_express():
    from nast.dag import build_stages
    from nast.errors import StageError

    jobs = {f"train@{m}": _job("train", 0, "method", f"nast train --out models/{m}", ["data/p.parquet"], outs,
                               ["train"], f"logs/{m}.log")
            for m, outs in (("a", ["models/a"]), ("b", ["models/b", "models/b.extra"]))}
    with pytest.raises(StageError, match="differ in their number of outs"):
        build_stages(jobs, {"methods": ["a", "b"]})
    jobs["train@a"]["cmd"] = "nast train --out models/a"  # no log redirection: dvc.yaml would differ
    with pytest.raises(StageError, match="does not end with"):
        build_stages(jobs, {"methods": ["a", "b"]})
