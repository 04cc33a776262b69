"""Load and validate ``params.yaml`` against ``workflow/schemas/params.schema.yaml``.

The same schema is used by the Snakefile (``snakemake.utils.validate``). A bad value stops with an
error naming the key, e.g. ``params.yaml: trace.direction: 'sideways' is not one of ['caption', 'foil']``.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names the file and the key."""


#: the params file the running command loaded (named in error messages; see :func:`params_file`)
_PARAMS_FILE = "params.yaml"


def params_file() -> str:
    """The params file the current command loaded (``params.yaml`` until :func:`load_params` runs)."""
    return _PARAMS_FILE


def schema_path() -> Path:
    """The JSON schema shipped with the package (a copy of workflow/schemas/params.schema.yaml)."""
    return Path(str(resources.files("nast") / "params.schema.yaml"))


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(schema_path().read_text())


def validate_params(params: dict[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """Validate a params mapping; raise :class:`ConfigError` naming the first bad key."""
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"{source}: {key}: {err.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    check_params(params, source)
    fill_defaults(params, schema)
    return params


def section_defaults(section: str) -> dict[str, Any]:
    """The schema defaults of one params.yaml section (for callers of a stage core that build the
    section by hand, e.g. tests: ``{**section_defaults("data"), "source": "mimic", ...}``)."""
    sub = load_schema()["properties"][section]
    return fill_defaults({}, sub)


def fill_defaults(params: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Set every absent key that has a ``default`` in the schema (in place, nested sections too):
    defaults live in the schema only, so stages read ``params[section][key]`` and never repeat one.
    (Snakemake's ``validate(config, schema)`` fills the same defaults into the DAG's config.)"""
    for key, sub in (schema.get("properties") or {}).items():
        if key not in params and "default" in sub:
            params[key] = copy.deepcopy(sub["default"])
        if isinstance(params.get(key), dict) and sub.get("type") == "object":
            fill_defaults(params[key], sub)
    return params


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and validate params.yaml (remembered as :func:`params_file` for error messages)."""
    global _PARAMS_FILE
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    params = validate_params(params, source=str(path))
    _PARAMS_FILE = str(path)
    return params


def check_params(params: dict[str, Any], source: str = "params.yaml") -> None:
    """Checks a JSON schema cannot express: split fractions that sum to 1."""
    problems = []
    for sec in ("data", "demo"):
        fr = (params.get(sec) or {}).get("split_fractions")
        if isinstance(fr, dict) and fr and abs(sum(float(v) for v in fr.values()) - 1.0) > 1e-6:
            total = sum(float(v) for v in fr.values())
            problems.append(f"{source}: {sec}.split_fractions: must sum to 1, got {total:g} ({fr})")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """One section of validated params (KeyError names the section)."""
    try:
        return params[name]
    except KeyError:
        raise ConfigError(f"{params_file()}: missing section '{name}'") from None


class RecordingParams(dict):
    """The validated params, remembering every key read (as dotted paths) in a shared set.

    ``params["train"]["epochs"]`` records ``train`` and ``train.epochs``; ``.get`` and ``in`` record the
    key asked for; ``.items()`` / ``.values()`` (a whole section serialised, hashed or flattened)
    record every key of that section. Copies by ``{**params}`` keep the same recorders. Used by
    ``nast`` when ``NAST_RECORD_PARAMS`` names a folder (:func:`nast.cli.main`) so the test suite
    can check that each stage reads only the keys its DAG rule declares.
    """

    def __init__(self, data: dict[str, Any], sink: set[str] | None = None, prefix: str = ""):
        self.sink = set() if sink is None else sink
        self.prefix = prefix
        super().__init__({k: self._wrap(k, v) for k, v in data.items()})

    def _wrap(self, key, value):
        return RecordingParams(value, self.sink, f"{self.prefix}{key}.") if isinstance(value, dict) else value

    def _note(self, key) -> None:
        self.sink.add(f"{self.prefix}{key}")

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._note(key)
        return super().get(key, default)

    def __contains__(self, key) -> bool:
        self._note(key)
        return super().__contains__(key)

    def _note_all(self) -> None:
        for key in dict.keys(self):
            self._note(key)
            value = dict.__getitem__(self, key)
            if isinstance(value, RecordingParams):
                value._note_all()

    def items(self):
        self._note_all()
        return super().items()

    def values(self):
        self._note_all()
        return super().values()

    def copy(self):
        return RecordingParams(dict(dict.items(self)), self.sink, self.prefix)

    def __reduce__(self):  # pickled (worker processes): a plain dict, reads there are not recorded
        return (dict, (plain_params(self),))


def plain_params(params: Any) -> Any:
    """A plain-dict copy of (possibly recording) params, nothing recorded."""
    if isinstance(params, dict):
        return {k: plain_params(dict.__getitem__(params, k)) for k in dict.keys(params)}
    return params


def covered(key: str, declared: list[str] | tuple[str, ...]) -> bool:
    """Whether reading ``key`` is covered by the declared keys: the key itself, a key inside a
    declared section, or a section on the way to a declared dotted key."""
    return any(key == d or key.startswith(d + ".") or d.startswith(key + ".") for d in declared)
