"""Print the Snakemake DAG of a workflow directory as JSON (used by the parity test).

    python export_snakemake_dag.py WORKDIR

One entry per job, keyed like a DVC stage: the rule name, plus ``@<wildcard value>`` for rules
with one wildcard (train@nast, train_sweep@0.5). Each entry: the shell command with the log
redirection stripped, deps (input files), outs (output files), params (the params.yaml keys of
the rule's ``params.cfg``), log and benchmark. Built through the Snakemake API with
``forceall`` (nothing is run, nothing needs to exist).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings,
    DAGSettings,
    DeploymentSettings,
    OutputSettings,
    Quietness,
    ResourceSettings,
    StorageSettings,
    WorkflowSettings,
)


def export(workdir: Path) -> dict:
    workdir = workdir.resolve()
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        wapi = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(),
            storage_settings=StorageSettings(),
            workflow_settings=WorkflowSettings(),
            deployment_settings=DeploymentSettings(),
            snakefile=workdir / "Snakefile",
            workdir=workdir,
        )
        wapi.dag(DAGSettings(forceall=True))
        workflow = wapi._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
        jobs = {}
        for job in workflow.dag.jobs:
            rule = job.rule
            if rule.name == "all":
                continue
            wc = dict(job.wildcards_dict)
            if len(wc) > 1:
                raise SystemExit(f"rule {rule.name}: more than one wildcard: {wc}")
            name = rule.name + (f"@{next(iter(wc.values()))}" if wc else "")
            cmd = " ".join(str(job.shellcmd).split())
            logs = [str(f) for f in job.log]
            jobs[name] = {
                "rule": rule.name,
                "cmd": cmd,
                "deps": sorted(str(f) for f in job.input),
                "outs": sorted(str(f) for f in job.output),
                "params": sorted(job.params.cfg) if hasattr(job.params, "cfg") else None,
                "log": logs,
                "benchmark": str(job.benchmark) if job.benchmark else None,
                "resources": {k: v for k, v in job.resources.items() if not callable(v)},
            }
        return jobs


if __name__ == "__main__":
    json.dump(export(Path(sys.argv[1])), sys.stdout, indent=1, sort_keys=True, default=str)
