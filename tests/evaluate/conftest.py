import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # stub_model

import tiny_world  # noqa: E402

torch.set_num_threads(1)  # tiny models: threads only add contention on a shared 2-core box


@pytest.fixture(scope="session")
def eval_world(tmp_path_factory):
    return tiny_world.build(tmp_path_factory.mktemp("eval_world"), train={"epochs": 1})


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch):
    monkeypatch.setenv("NAST_TRACKING", "0")
