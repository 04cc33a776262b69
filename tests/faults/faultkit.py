"""Helpers of the fault-injection suite (imported by its tests as ``faultkit``)."""

from __future__ import annotations

import copy
import importlib.util
import socket
import sys
from pathlib import Path

import yaml

TEXT_GEN = Path(__file__).resolve().parents[1] / "text_gen"
if str(TEXT_GEN) not in sys.path:
    sys.path.insert(0, str(TEXT_GEN))  # fake_openai_server (pytest runs in importlib mode)

_spec = importlib.util.spec_from_file_location("_text_gen_conftest", TEXT_GEN / "conftest.py")
_tg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tg)
make_permutations = _tg.make_permutations
CHECKER_NORMAL_CONDITIONS = _tg.CHECKER_NORMAL_CONDITIONS
REPO = _tg.REPO

FAKE_KEY = "sk-nast-faults-SECRET-5d2c9b81"


def write_params(params: dict, path: Path, **llm) -> Path:
    p = copy.deepcopy(params)
    p["llm"].update(llm)
    path.write_text(yaml.safe_dump(p))
    return path


def free_port() -> int:
    """A loopback port with nothing listening on it (bound once, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_ispec = importlib.util.spec_from_file_location("_ingest_conftest", TEXT_GEN.parent / "ingest" / "conftest.py")
_ing = importlib.util.module_from_spec(_ispec)
sys.modules["_ingest_conftest"] = _ing  # dataclasses look their module up
_ispec.loader.exec_module(_ing)
build_mimic_tree = _ing.build_mimic_tree
jpeg_bytes = _ing.jpeg_bytes
