"""params.yaml is validated on load; a bad key or value is named in the error."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from nast.config import ConfigError, load_params, read_params, validate_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params() -> dict:
    return read_params(ROOT / "params.yaml")


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


# ----------------------------------------------------------------------------- the typed config
def test_each_section_is_a_frozen_dataclass_with_exactly_the_schema_keys():
    import dataclasses

    from nast.config import SECTIONS, Params, load_schema

    schema = load_schema()
    assert set(SECTIONS) == {k for k, v in schema["properties"].items() if v.get("type") == "object"}
    assert [f.name for f in dataclasses.fields(Params)] == list(schema["properties"])
    for name, cls in SECTIONS.items():
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, name
        props = list(schema["properties"][name]["properties"])
        assert [f.name for f in dataclasses.fields(cls)] == props, name
        # no field default: the defaults live in the schema only (filled on load)
        assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(cls)), name


def test_load_params_builds_the_typed_config_once_with_schema_defaults(tmp_path, params):
    from nast.config import Params, TrainParams

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"].pop("lambda_image", None)  # absent: the schema's default fills it
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    typed = load_params(path)
    assert isinstance(typed, Params) and isinstance(typed.train, TrainParams)
    assert typed.train.lambda_image == 0.0 and typed.train.epochs == raw["train"]["epochs"]
    assert typed.data.reports_zip is None and typed.methods == raw["methods"]
    with pytest.raises(dataclasses_frozen()):
        typed.train.epochs = 99
    assert typed.train["epochs"] == typed.train.epochs and dict(typed.train) == params["train"]
    assert typed.to_dict() == params


def dataclasses_frozen():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_no_stage_reads_params_with_a_default():
    """``.get(key, default)`` on params would hide a default outside the schema (nast.config, the
    loader that fills the schema's defaults into the raw mapping, is the one exception)."""
    import re

    pattern = re.compile(r"params(\.\w+|\[\"\w+\"\])*\.get\(")
    offenders = []
    for path in sorted((ROOT / "src" / "nast").rglob("*.py")):
        if path.name == "config.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
