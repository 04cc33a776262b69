"""params.yaml is validated on load; a bad key or value is named in the error."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from nast.config import ConfigError, load_params, validate_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params() -> dict:
    return load_params(ROOT / "params.yaml")


def test_shipped_params_are_valid(params):
    assert params["data"]["source"] in {"demo", "mimic", "openi"}
    assert params["permutations"]["k"] >= 2


def test_bad_enum_names_the_key(params):
    bad = copy.deepcopy(params)
    bad["trace"]["direction"] = "sideways"
    with pytest.raises(ConfigError, match=r"trace\.direction: 'sideways' is not one of"):
        validate_params(bad)


def test_unknown_key_is_refused(params):
    bad = copy.deepcopy(params)
    bad["nast"]["betta"] = 1.0
    with pytest.raises(ConfigError, match=r"nast: Additional properties are not allowed \('betta'"):
        validate_params(bad)


def test_missing_key_is_named(params):
    bad = copy.deepcopy(params)
    del bad["permutations"]["k"]
    with pytest.raises(ConfigError, match=r"permutations: 'k' is a required property"):
        validate_params(bad)


def test_wrong_type_names_the_key(tmp_path, params):
    bad = copy.deepcopy(params)
    bad["train"]["epochs"] = "ten"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=rf"{path}: train\.epochs: 'ten' is not of type 'integer'"):
        load_params(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="params file not found: .*nope.yaml"):
        load_params(tmp_path / "nope.yaml")


def test_every_schema_key_has_a_description():
    from nast.config import load_schema

    missing: list[str] = []

    def walk(node: dict, path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            here = f"{path}.{key}" if path else key
            if "description" not in sub and "$ref" not in sub:
                missing.append(here)
            if isinstance(sub, dict):
                walk(sub, here)

    walk(load_schema(), "")
    assert missing == []
