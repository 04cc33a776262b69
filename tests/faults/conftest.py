"""Fixtures of the fault-injection suite: tiny inputs, a params file per test, the loopback server.

Every case here reproduces one way the pipeline used to fail quietly (issue 18) and asserts the new
behaviour: a clear error naming what failed, or a quarantine row with its reason. The only network
traffic is to 127.0.0.1 (tests/text_gen/fake_openai_server.py).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # faultkit

from faultkit import FAKE_KEY, REPO  # noqa: E402


@pytest.fixture(scope="session")
def base_params() -> dict:
    from nast.config import read_params

    return read_params(REPO / "params.yaml")


@pytest.fixture()
def params(base_params, tmp_path) -> dict:
    """params with fast transport settings, the openai backends and a per-test cache."""
    p = copy.deepcopy(base_params)
    p["llm"].update({"cache_dir": str(tmp_path / "cache"), "timeout_s": 1.0, "backoff_s": 0.01,
                     "max_retries": 1, "max_concurrency": 2, "api_key_env": "NAST_TEST_FAKE_KEY"})
    p["mcq"].update({"backend": "openai", "max_retries": 1, "n_process": 1})
    p["affirm"].update({"backend": "openai", "max_retries": 1, "n_process": 1})
    return p


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # GX reports land under tmp_path/reports
    monkeypatch.setenv("NAST_TEST_FAKE_KEY", FAKE_KEY)
    return tmp_path
