"""Fixtures for the workflow tests: a throw-away copy of the project's workflow files."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

WORKFLOW_FILES = ["Snakefile", "params.yaml", "dvc.yaml", ".dvcignore", "workflow", "src"]


def copy_project(dest: Path) -> Path:
    """Snakefile, workflow/, src/ (the code the rules depend on), params.yaml, dvc.yaml and the
    `slurm` profile link in ``dest``
    (plus a .dvc/ without git), so a test can edit them freely."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    os.symlink(os.readlink(ROOT / "slurm"), dest / "slurm")
    (dest / ".dvc").mkdir()
    (dest / ".dvc" / "config").write_text("[core]\n    no_scm = true\n    analytics = false\n")
    return dest


@pytest.fixture(scope="session")
def env() -> dict:
    """Subprocess environment: the venv's bin first (snakemake, dvc, nast), this checkout's src/ on
    PYTHONPATH, no DVC analytics."""
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [e.get("PYTHONPATH")])])  # this checkout's nast
    e["DVC_NO_ANALYTICS"] = "1"
    return e


@pytest.fixture(scope="session")
def snakemake_export():
    """The Snakemake DAG of the real project (exported once per session)."""
    import dagtools

    return dagtools.snakemake_jobs(ROOT)


@pytest.fixture
def project_copy(tmp_path) -> Path:
    return copy_project(tmp_path / "project")


PRESET = ROOT / "workflow" / "presets" / "demo-full.yaml"


def merged_params(preset: Path = PRESET) -> dict:
    """params.yaml with a preset layered over it as Snakemake's --configfile does (dicts merged,
    lists and scalars replaced)."""
    import yaml

    def merge(dst, src):
        for k, v in src.items():
            dst[k] = merge(dict(dst[k]), v) if isinstance(v, dict) and isinstance(dst.get(k), dict) else v
        return dst

    return merge(yaml.safe_load((ROOT / "params.yaml").read_text()), yaml.safe_load(preset.read_text()))


@pytest.fixture(scope="session")
def full_project(tmp_path_factory) -> Path:
    """A project copy whose params.yaml is the make demo-full configuration (every method, the beta
    sweep), with its dvc.yaml generated for it: the DAG tests that need every rule use it."""
    import dagtools
    import yaml

    dest = copy_project(tmp_path_factory.mktemp("full") / "project")
    (dest / "params.yaml").write_text(yaml.safe_dump(merged_params(), sort_keys=False))
    proc = dagtools.generate_dvc_yaml(dest)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dest


@pytest.fixture(scope="session")
def full_export(full_project):
    """The Snakemake DAG of the demo-full configuration."""
    import dagtools

    return dagtools.snakemake_jobs(full_project)
