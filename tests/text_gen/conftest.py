"""Fixtures for the benchmark text generation tests (tiny frames, loopback LLM server)."""

from __future__ import annotations

import copy
import random
import sys
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # fake_openai_server (pytest runs in importlib mode)

from nast.conditions import CONDITIONS  # noqa: E402
from nast.config import read_params  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def make_permutations(n: int, seed: int = 0, k: int = 3, conditions=CONDITIONS) -> pl.DataFrame:
    """A permutations table in the contract schema, built the NAST way (distractors flip 1..k labels)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        conds = rng.sample(list(conditions), k)
        truth = [rng.randint(0, 1) for _ in conds]
        vectors = [tuple(truth)]
        while len(vectors) < 4:
            v = list(truth)
            for j in rng.sample(range(k), rng.randint(1, k)):
                v[j] = 1 - v[j]
            if tuple(v) not in vectors:
                vectors.append(tuple(v))
        correct = rng.randrange(4)
        vectors[0], vectors[correct] = vectors[correct], vectors[0]
        row = {"subject_id": 10000000 + i // 2, "study_id": 50000000 + i, "dicom_id": f"d{i:05d}",
               "image_path": f"files/p10/s{i}/d{i:05d}.jpg", "split": "test", "conditions": conds,
               "true_labels": list(truth), "correct": "ABCD"[correct]}
        for L, v in zip("ABCD", vectors):
            row[f"option_{L}"] = list(v)
        rows.append(row)
    schema = {"subject_id": pl.Int64, "study_id": pl.Int64, "dicom_id": pl.Utf8, "image_path": pl.Utf8,
              "split": pl.Utf8, "conditions": pl.List(pl.Utf8), "true_labels": pl.List(pl.Int8),
              **{f"option_{L}": pl.List(pl.Int8) for L in "ABCD"}, "correct": pl.Utf8}
    cols = ["subject_id", "study_id", "dicom_id", "image_path", "split", "conditions", "true_labels",
            "option_A", "option_B", "option_C", "option_D", "correct"]
    return pl.DataFrame(rows, schema=schema).select(cols)


@pytest.fixture(scope="session")
def base_params() -> dict:
    return read_params(REPO / "params.yaml")


@pytest.fixture()
def params(base_params, tmp_path) -> dict:
    p = copy.deepcopy(base_params)
    p["llm"].update({"cache_dir": str(tmp_path / "cache"), "timeout_s": 2.0, "backoff_s": 0.01,
                     "max_retries": 2, "max_concurrency": 4, "api_key_env": "NAST_TEST_FAKE_KEY"})
    return p


@pytest.fixture(scope="session")
def perm_small() -> pl.DataFrame:
    return make_permutations(24, seed=3)


#: conditions whose affirmative-normal phrasings the polarity checker already recognises
#: (targets.csv rows with polarity "negative"); used where a test needs rewrites that verify.
CHECKER_NORMAL_CONDITIONS = ("Cardiomegaly", "Enlarged Cardiomediastinum", "Lung Opacity", "Pleural Effusion")
