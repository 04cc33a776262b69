"""Shared fixtures: tiny random models of the three families, built once per session from
nast/models/tiny/ (used by tests/models and tests/trace)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch


def _load_shared_data():
    """tests/shared_data.py as the module ``shared_data`` (importable from every test and conftest;
    pytest runs in importlib mode, and putting tests/ on sys.path would turn its folders into
    importable namespace packages)."""
    spec = importlib.util.spec_from_file_location("shared_data", Path(__file__).resolve().parent / "shared_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["shared_data"] = module
    spec.loader.exec_module(module)
    return module


shared_data = _load_shared_data()

# one thread: tiny tensors, and on a shared 2-core machine OpenMP spin-waiting makes 2 threads ~20x slower
torch.set_num_threads(1)

from nast.models.testing import TINY_CONFIGS as CONFIGS  # noqa: E402

FAMILIES = ("open_clip", "open_clip_hf", "hf_clip")


@pytest.fixture(scope="session")
def tiny_model_params(tmp_path_factory):
    from nast.models.testing import save_tiny

    root = tmp_path_factory.mktemp("tiny_models")
    return {fam: save_tiny(fam, CONFIGS, root / fam, seed=0) for fam in FAMILIES}


@pytest.fixture(scope="session")
def tiny_models(tiny_model_params):
    from nast.models import load_model

    return {fam: load_model(mp, "cpu") for fam, mp in tiny_model_params.items()}


@pytest.fixture(scope="session", autouse=True)
def _mlflow_store_in_tmp(tmp_path_factory):
    """No test writes to the project's own MLflow store (mlruns.db): every test that does not
    choose a tracking URI itself (session fixtures included) logs to a throw-away SQLite file."""
    store = tmp_path_factory.getbasetemp() / "mlruns.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        yield


@pytest.fixture(scope="session")
def openi_dev_csv() -> Path:
    """The Open-i development sample in ../shared (tests/shared_data.py: skipped when absent, failed
    when CI is set and ../shared/data/openi exists)."""
    return shared_data.require(shared_data.OPENI_DEV_CSV)


# --- declared = read: every `nast <stage>` run of the suite records the params keys it read -----
#: keys that change where runs are logged, never an output file: no stage declares them
UNDECLARED_OK = ("tracking",)
_RECORDS: dict[str, Path] = {}


def pytest_configure(config):
    import os
    import tempfile

    if "NAST_RECORD_PARAMS" not in os.environ:  # subprocesses (nast ..., snakemake, dvc) inherit it
        folder = Path(tempfile.mkdtemp(prefix="nast-params-read-"))
        os.environ["NAST_RECORD_PARAMS"] = str(folder)
        _RECORDS["dir"] = folder


def pytest_sessionfinish(session, exitstatus):
    folder = _RECORDS.get("dir")
    if folder is None:
        return
    from nast.codedeps import undeclared_reads

    try:
        problems, runs = undeclared_reads(folder, Path(__file__).resolve().parents[1], UNDECLARED_OK)
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)  # one folder per pytest run: do not leave it in /tmp
    _RECORDS["result"] = (problems, runs)
    if problems and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    problems, runs = _RECORDS.get("result", ([], {}))
    if runs:
        terminalreporter.write_line(
            "params read vs declared (PARAMS_KEYS): "
            + ", ".join(f"{c} x{n}" for c, n in sorted(runs.items()))
            + (" - all declared" if not problems else ""))
    for line in problems:
        terminalreporter.write_line(f"UNDECLARED PARAMS KEY: {line}", red=True)
