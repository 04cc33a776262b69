"""Snakefile DAG == dvc.yaml DAG: same stages, commands, deps, outs and params keys.

The negative tests edit temp copies and prove the parity check catches a stage added to only one
file, a changed command and a changed dependency.
"""

from __future__ import annotations

import dagtools
import networkx as nx
import yaml
from conftest import ROOT


def _dvc_append(path, text):
    yaml_text = path.read_text()
    marker = "\nmetrics:"
    assert marker in yaml_text
    path.write_text(yaml_text.replace(marker, text + marker, 1))


def test_snakemake_and_dvc_dags_are_identical(snakemake_export):
    smk, problems = dagtools.normalise_snakemake(snakemake_export)
    assert problems == []
    dvc = dagtools.dvc_stages(ROOT)
    assert dagtools.compare(smk, dvc) == []
    # not vacuous: the full DAG with every method and every beta of the sweep
    assert len(smk) == len(dvc) >= 12
    assert {f"train@{m}" for m in ("zero_shot", "nast", "full_ft")} <= set(dvc)


def test_parity_fails_on_a_stage_only_in_dvc_yaml(snakemake_export, project_copy):
    _dvc_append(project_copy / "dvc.yaml", (
        "\n  extra:\n    cmd: nast report --params params.yaml --eval-dir reports/eval"
        " --out reports/x --plots reports/y\n    outs:\n      - reports/x\n"
    ))
    smk, _ = dagtools.normalise_snakemake(snakemake_export)
    diffs = dagtools.compare(smk, dagtools.dvc_stages(project_copy))
    assert diffs == ["extra: in dvc.yaml only"]


def test_parity_fails_on_changed_cmd_and_deps(snakemake_export, project_copy):
    path = project_copy / "dvc.yaml"
    text = path.read_text()
    text = text.replace(
        "--cohort data/interim/cohort.parquet\n      --out data/processed/claims.parquet",
        "--cohort data/interim/cohort.parquet --out data/processed/claims.parquet --verbose",
    )
    text = text.replace(
        "    deps:\n      - data/processed/mcq.parquet\n",
        "    deps:\n      - data/processed/mcq.parquet\n      - data/interim/cohort.parquet\n",
    )
    path.write_text(text)
    smk, _ = dagtools.normalise_snakemake(snakemake_export)
    diffs = dagtools.compare(smk, dagtools.dvc_stages(project_copy))
    assert any(d.startswith("claims: cmd differs") for d in diffs), diffs
    assert "affirm: dep data/interim/cohort.parquet in dvc.yaml only" in diffs
    assert len(diffs) == 2


def test_parity_fails_on_a_rule_only_in_the_snakefile(project_copy):
    snakefile = project_copy / "Snakefile"
    text = snakefile.read_text().replace(
        "        all_targets(),", '        all_targets(),\n        "reports/extra.txt",'
    )
    text += (
        "\n\nrule extra:\n    input:\n        COHORT,\n    output:\n        \"reports/extra.txt\",\n"
        "    log:\n        \"reports/logs/extra.log\",\n"
        "    shell:\n        \"nast report --out {output} > {log} 2>&1\"\n"
    )
    snakefile.write_text(text)
    smk, problems = dagtools.normalise_snakemake(dagtools.snakemake_jobs(project_copy))
    assert problems == []
    diffs = dagtools.compare(smk, dagtools.dvc_stages(project_copy))
    assert diffs == ["extra: in the Snakefile DAG only"]


def test_nast_beta_reruns_only_nast_training_its_evaluation_and_the_report(snakemake_export):
    from dvc.repo import Repo

    dvc = dagtools.dvc_stages(ROOT)
    readers = {name for name, s in dvc.items() if "nast.beta" in s["params"] or "nast" in s["params"]}
    assert {name for name, s in dvc.items() if "nast.scale" in s["params"]} == {
        "train@nast", "train@nast-grounded", "train@nast-dpo",
        *(f"train_sweep@{b}" for b in yaml.safe_load((ROOT / "params.yaml").read_text())["nast"]["betas"])
    }
    assert readers == {"train@nast", "train@nast-grounded", "train@nast-dpo"}
    smk, _ = dagtools.normalise_snakemake(snakemake_export)
    assert {name for name, s in smk.items() if "nast.beta" in s["params"]} == {"train@nast", "train@nast-grounded",
                                                                              "train@nast-dpo"}
    with Repo(str(ROOT)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        by_name = {stage.name: stage for stage in graph.nodes}
        downstream = {s.name for s in nx.ancestors(graph, by_name["train@nast"])}
        grounded = {s.name for s in nx.descendants(graph, by_name["train@grounded"])}
        preference = {s.name for s in nx.descendants(graph, by_name["train@dpo"])}
        plain = {s.name for s in nx.descendants(graph, by_name["train@lora_uniform"])}
    assert downstream == {"evaluate@nast", "evaluate_grounding@nast", "report"}
    # only the grounded and preference methods' training depends on the counterfactual pairs
    assert "grounding_data" in grounded and "grounding_data" in preference and "grounding_data" not in plain


def test_dvc_declares_metrics_and_plots():
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        metrics = [m for ms in repo.index._metrics.values() for m in ms]
        plots = [p for ps in repo.index._plots.values() for p in ps]
    assert "reports/tables/metrics.json" in metrics and "reports/eval" in metrics
    flat = [next(iter(p)) if isinstance(p, dict) else p for p in plots]
    assert "reports/plots" in flat and "reports/cte/layer_weights.csv" in flat


def test_stages_declare_what_they_read(snakemake_export):
    """nast.normalize changes NAST's weights; evaluate and evaluate_grounding load the base model."""
    dvc = dagtools.dvc_stages(ROOT)
    smk, _ = dagtools.normalise_snakemake(snakemake_export)
    for dag in (dvc, smk):
        assert "nast.normalize" in dag["train@nast"]["params"]
        sweep = [s for name, s in dag.items() if name.startswith("train_sweep@")]
        assert sweep and all("nast.normalize" in s["params"] for s in sweep)
        assert "nast.normalize" not in dag["train@lora_uniform"]["params"]
        for name, s in dag.items():
            if name.startswith(("evaluate@", "evaluate_sweep@", "evaluate_grounding")):
                assert "models/base" in s["deps"], name
                assert "--base models/base" in s["cmd"], name
