"""Shared fixtures of the report-reader tests: one medspaCy pipeline per test session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import shared_data

REPO = Path(__file__).resolve().parents[2]
OPENI_CSV = shared_data.OPENI_DEV_CSV  # the one rule for ../shared (tests/shared_data.py)


@pytest.fixture(scope="session")
def nlp():
    from nast.text.polarity import get_nlp

    return get_nlp()


@pytest.fixture(scope="session")
def eval_module():
    spec = importlib.util.spec_from_file_location("eval_claims_openi", REPO / "benchmarks" / "eval_claims_openi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def params_path() -> Path:
    return REPO / "params.yaml"
