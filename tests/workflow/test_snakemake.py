"""The Snakemake workflow resolves: full DAG dry runs (local and the slurm profile), config
validation, log + benchmark on every rule, GPU/CPU placement of the rules."""

from __future__ import annotations

import re
import subprocess

import yaml
from conftest import ROOT

GPU_RULES = {"pretrain_base", "trace", "embed_images", "embed_images_grounding", "train", "train_sweep", "evaluate",
             "evaluate_sweep", "evaluate_grounding", "evaluate_grounding_sweep"}


def _snakemake(args, cwd, env, timeout=180):
    return subprocess.run(
        ["snakemake", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _job_counts(text: str) -> dict[str, int]:
    block = text.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, flags=re.M)}


def test_dry_run_resolves_the_full_dag(project_copy, env):
    """The make demo-full configuration: params.yaml with workflow/presets/demo-full.yaml over it."""
    from conftest import merged_params

    params = merged_params()
    assert len(params["methods"]) > len(yaml.safe_load((ROOT / "params.yaml").read_text())["methods"])
    proc = _snakemake(["-n", "--quiet", "rules", "--configfile", "workflow/presets/demo-full.yaml"], project_copy, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = _job_counts(proc.stdout + proc.stderr)
    n_methods, n_betas = len(params["methods"]), len(params["nast"]["betas"])
    assert counts == {
        "demo_data": 1, "ingest": 1, "permutations": 1, "mcq": 1, "affirm": 1, "claims": 1,
        "contextual": 1, "pretrain_base": 1, "trace": 1, "embed_images": 1, "cache_images": 1,
        "embed_images_grounding": 1,
        "train": n_methods, "train_sweep": n_betas,
        "evaluate": n_methods, "evaluate_sweep": n_betas,
        "grounding_data": 1, "evaluate_grounding": n_methods, "evaluate_grounding_sweep": n_betas,
        "report": 1, "all": 1, "total": 15 + 3 * n_methods + 3 * n_betas,
    }


def test_slurm_profile_is_found_from_the_project_root(project_copy, env):
    assert (ROOT / "slurm").resolve() == (ROOT / "workflow/profiles/slurm").resolve()
    profile = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    proc = _snakemake(["--profile", "slurm", "-n"], project_copy, env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    assert "Using profile slurm" in out
    # the rules' resources reach the jobs: GPU rules on the gpu partition with a gres
    assert re.search(r"rule train:.*?slurm_partition=gpu.*?gres=gpu:1", out, flags=re.S)


def test_every_rule_has_log_benchmark_and_its_partition(snakemake_export):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["slurm"]
    assert snakemake_export
    for name, job in snakemake_export.items():
        assert len(job["log"]) == 1 and job["log"][0].startswith("reports/logs/"), name
        assert job["benchmark"] and job["benchmark"].startswith("reports/benchmarks/"), name
        res = job["resources"]
        if job["rule"] in GPU_RULES:
            assert res["slurm_partition"] == params["gpu_partition"], name
            assert res["gres"] == f"gpu:{params['gpus_per_job']}", name
            assert res["mem_mb"] == params["gpu_mem_mb"] and res["runtime"] == params["gpu_runtime_min"]
        else:
            assert res["slurm_partition"] == params["cpu_partition"], name
            assert "gres" not in res, name
            assert res["mem_mb"] == params["cpu_mem_mb"] and res["runtime"] == params["cpu_runtime_min"]
    # logs and benchmarks are distinct per job
    assert len({j["log"][0] for j in snakemake_export.values()}) == len(snakemake_export)
    assert len({j["benchmark"] for j in snakemake_export.values()}) == len(snakemake_export)


def test_invalid_params_stop_the_workflow_naming_the_key(project_copy, env):
    path = project_copy / "params.yaml"
    path.write_text(path.read_text().replace("direction: caption", "direction: sideways"))
    proc = _snakemake(["-n"], project_copy, env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "On instance['trace']['direction']" in out and "'sideways'" in out


def test_config_overrides_reach_the_nast_commands(project_copy, env):
    override = project_copy / "override.yaml"
    override.write_text("nast: {beta: 2.0, betas: [3.0]}\nmethods: [nast]\n")
    proc = _snakemake(["-n", "-p", "--configfile", "params.yaml", "override.yaml"], project_copy, env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    counts = _job_counts(out)
    assert counts["train"] == 1 and counts["train_sweep"] == 1
    effective = project_copy / ".snakemake/nast/params.effective.yaml"
    assert "--params .snakemake/nast/params.effective.yaml" in out
    assert "--params params.yaml" not in out
    assert "--beta 3.0" in out
    cfg = yaml.safe_load(effective.read_text())
    assert cfg["nast"]["beta"] == 2.0 and cfg["nast"]["betas"] == [3.0] and cfg["methods"] == ["nast"]
    assert cfg["trace"] == yaml.safe_load((ROOT / "params.yaml").read_text())["trace"]
