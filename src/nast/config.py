"""Load and validate ``params.yaml`` against ``workflow/schemas/params.schema.yaml``.

The same schema is used by the Snakefile (``snakemake.utils.validate``). A bad value stops with an
error naming the key, e.g. ``params.yaml: trace.direction: 'sideways' is not one of ['caption', 'foil']``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
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


# ----------------------------------------------------------------------------- the typed config
class Section(Mapping):
    """A validated params.yaml section as a frozen dataclass (:func:`load_params` builds them once,
    after validation, with the schema's defaults filled in).

    Read a key as an attribute (``params.train.epochs``); a section is also a read-only mapping
    (``section["epochs"]``, ``{**section}``) for the cores that take any mapping of the same keys
    (tests hand them plain dicts). ``replace(**changes)`` returns a changed copy; ``to_dict()`` a
    plain nested dict (JSON, hashing, MLflow). The fields are exactly the schema's properties
    (tests/core/test_config.py).
    """

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return plain_params(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "params.yaml"):
        names = set(cls.__dataclass_fields__)
        missing, extra = names - set(values), set(values) - names
        if missing or extra:  # schema validation (additionalProperties, required, defaults) prevents this
            raise ConfigError(f"{where}: section does not match {cls.__name__}: "
                              f"missing {sorted(missing)}, unknown {sorted(extra)}")
        kwargs = {}
        for name in cls.__dataclass_fields__:
            sub = SECTIONS.get(name) if cls is Params else None
            kwargs[name] = sub.from_dict(values[name], f"{where}: {name}") if sub else values[name]
        return cls(**kwargs)


@dataclass(frozen=True)
class DataParams(Section):
    """``data:``"""

    source: str
    root: str
    reports_zip: str | None
    views: list[str]
    require_report: bool
    openi_labels: str
    check_images: bool
    image_check: str
    split_fractions: dict[str, float]
    seed: int
    allow_empty: bool
    image_cache_size: int | None


@dataclass(frozen=True)
class DemoParams(Section):
    """``demo:``"""

    n_subjects: int
    split_fractions: dict[str, float]
    studies_per_subject: list[int]
    image_size: int
    lateral_fraction: float
    twins: bool
    seed: int


@dataclass(frozen=True)
class PermutationsParams(Section):
    """``permutations:``"""

    k: int
    min_zeros: int
    min_ones: int
    seed: int


@dataclass(frozen=True)
class McqParams(Section):
    """``mcq:``"""

    backend: str
    seed: int
    max_retries: int
    n_process: int
    min_kept_fraction: float


@dataclass(frozen=True)
class AffirmParams(Section):
    """``affirm:``"""

    backend: str
    seed: int
    max_retries: int
    n_process: int
    min_kept_fraction: float


@dataclass(frozen=True)
class LLMParams(Section):
    """``llm:``"""

    base_url: str
    model: str
    temperature: float
    api_key_env: str
    max_concurrency: int
    timeout_s: float
    max_retries: int
    backoff_s: float
    cache_dir: str
    allow_remote_phi: bool
    max_retry_after_s: float
    abort_after_failures: int
    max_failed_fraction: float


@dataclass(frozen=True)
class ClaimsParams(Section):
    """``claims:``"""

    text_cols: list[str]
    max_chars: int


@dataclass(frozen=True)
class ContextualParams(Section):
    """``contextual:``"""

    seed: int
    max_foils_per_claim: int


@dataclass(frozen=True)
class ModelParams(Section):
    """``model:``"""

    family: str
    name: str
    checkpoint: str
    device: str


@dataclass(frozen=True)
class PretrainParams(Section):
    """``pretrain:``"""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    caption: str
    max_shift: int
    num_threads: int
    seed: int


@dataclass(frozen=True)
class TraceParams(Section):
    """``trace:``"""

    direction: str
    unit: str
    max_examples: int
    min_abs_d: float
    example_weighting: str
    bootstrap: int
    batch_size: int
    seed: int


@dataclass(frozen=True)
class TrainParams(Section):
    """``train:``"""

    epochs: int
    batch_size: int
    lr: float
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    lambda_claim: float
    lambda_ground: float
    dpo_beta: float
    dpo_alpha: float
    lambda_image: float
    composite_claims: int
    composite_parts: int
    clip_caption: str
    train_vision: bool | list[str]
    vision_lr: float
    topk_layers: int
    full_ft_lr: float
    num_threads: int
    seed: int


@dataclass(frozen=True)
class NastParams(Section):
    """``nast:``"""

    beta: float
    betas: list[float]
    normalize: str
    scale: str


@dataclass(frozen=True)
class EvaluateParams(Section):
    """``evaluate:``"""

    bootstrap: int
    seed: int
    mednega_json: str | None


@dataclass(frozen=True)
class GroundingParams(Section):
    """``grounding:``"""

    box_format: str
    boxes: str | None
    lung_fields: list[list[float]]
    inpaint_margin: int
    inpaint_max_side: int
    split: str
    localization: str
    attributions: list[str]
    occlusion_cells: int
    mask_cells: int
    n_masks: int
    ig_steps: int
    quantile: float
    min_area: int
    top_k: int
    max_localization: int
    max_attribution: int
    examples: int
    num_threads: int
    seed: int


@dataclass(frozen=True)
class TrackingParams(Section):
    """``tracking:``"""

    tracking_uri: str
    experiment_prefix: str


@dataclass(frozen=True)
class SlurmParams(Section):
    """``slurm:``"""

    gpu_partition: str
    cpu_partition: str
    gpus_per_job: int
    gpu_runtime_min: int
    gpu_mem_mb: int
    cpu_runtime_min: int
    cpu_mem_mb: int



@dataclass(frozen=True)
class Params(Section):
    """The whole of params.yaml: one typed section per top-level key, and the method list."""

    data: DataParams
    demo: DemoParams
    permutations: PermutationsParams
    mcq: McqParams
    affirm: AffirmParams
    llm: LLMParams
    claims: ClaimsParams
    contextual: ContextualParams
    model: ModelParams
    pretrain: PretrainParams
    trace: TraceParams
    train: TrainParams
    nast: NastParams
    methods: list[str]
    evaluate: EvaluateParams
    grounding: GroundingParams
    tracking: TrackingParams
    slurm: SlurmParams


#: params.yaml section name -> its dataclass
SECTIONS: dict[str, type[Section]] = {
    "data": DataParams, "demo": DemoParams, "permutations": PermutationsParams, "mcq": McqParams,
    "affirm": AffirmParams, "llm": LLMParams, "claims": ClaimsParams, "contextual": ContextualParams,
    "model": ModelParams, "pretrain": PretrainParams, "trace": TraceParams, "train": TrainParams,
    "nast": NastParams, "evaluate": EvaluateParams, "grounding": GroundingParams,
    "tracking": TrackingParams, "slurm": SlurmParams,
}


def typed(params: Mapping[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping (defaults filled) and build the typed :class:`Params` once."""
    if isinstance(params, (Params, RecordingParams)):
        return params
    return Params.from_dict(validate_params(copy.deepcopy(dict(params)), source), source)


def with_values(section: Mapping[str, Any], **changes: Any) -> Mapping[str, Any]:
    """A copy of a section with some keys changed (a typed section stays typed, a dict a dict)."""
    if isinstance(section, (Section, RecordingParams)):
        return section.replace(**changes)
    return {**section, **changes}


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml and build the typed :class:`Params` (remembered as
    :func:`params_file` for error messages)."""
    params = read_params(path)
    return Params.from_dict(params, str(path))


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and validate params.yaml into a plain dict, schema defaults filled (for callers that
    build variants of it, e.g. tests; the stages get :func:`load_params`'s typed copy)."""
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


class RecordingParams(Mapping):
    """Typed params (or one of their sections) that remember every key read, as dotted paths, in a
    shared set (:meth:`recorded`).

    ``params.train.epochs`` and ``params["train"]["epochs"]`` record ``train`` and ``train.epochs``;
    ``in`` records the key asked for; ``items()`` / ``values()`` / ``to_dict()`` (a whole section
    serialised, hashed or flattened) record every key of that section; ``replace`` keeps recording.
    Used by ``nast`` when ``NAST_RECORD_PARAMS`` names a folder (:func:`nast.cli.main`) so the test
    suite can check that each stage reads only the keys its DAG rule declares.
    """

    __slots__ = ("_target", "_sink", "_prefix")

    def __init__(self, target: Mapping[str, Any], sink: set[str] | None = None, prefix: str = ""):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_sink", set() if sink is None else sink)
        object.__setattr__(self, "_prefix", prefix)

    def recorded(self) -> list[str]:
        return sorted(self._sink)

    def _note(self, key: str) -> None:
        self._sink.add(f"{self._prefix}{key}")

    def _wrap(self, key: str, value: Any) -> Any:
        if isinstance(value, Mapping) and not isinstance(value, RecordingParams):
            return RecordingParams(value, self._sink, f"{self._prefix}{key}.")
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(self._target, name)
        if name in self._target:
            self._note(name)
            return self._wrap(name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __getitem__(self, key: str) -> Any:
        value = self._target[key]
        self._note(key)
        return self._wrap(key, value)

    def __contains__(self, key: object) -> bool:
        self._note(str(key))
        return key in self._target

    def __iter__(self):
        return iter(self._target)

    def __len__(self) -> int:
        return len(self._target)

    def _note_all(self) -> None:
        for key in self._target:
            self._note(key)
            value = self._wrap(key, self._target[key])
            if isinstance(value, RecordingParams):
                value._note_all()

    def items(self):
        self._note_all()
        return {k: self._wrap(k, v) for k, v in self._target.items()}.items()

    def values(self):
        return [v for _, v in self.items()]

    def to_dict(self) -> dict[str, Any]:
        self._note_all()
        return plain_params(self._target)

    def replace(self, **changes: Any) -> RecordingParams:
        return RecordingParams(with_values(self._target, **changes), self._sink, self._prefix)

    def __reduce__(self):  # pickled (worker processes): the plain target, reads there are not recorded
        return (_unpickle_target, (self._target,))


def _unpickle_target(target: Any) -> Any:
    return target


def plain_params(params: Any) -> Any:
    """A plain nested-dict copy of (typed, recording or dict) params, nothing recorded."""
    if isinstance(params, RecordingParams):
        return plain_params(params._target)
    if isinstance(params, Mapping):
        return {k: plain_params(params[k]) for k in params}
    if isinstance(params, list):
        return [plain_params(v) for v in params]
    return params


def covered(key: str, declared: list[str] | tuple[str, ...]) -> bool:
    """Whether reading ``key`` is covered by the declared keys: the key itself, a key inside a
    declared section, or a section on the way to a declared dotted key."""
    return any(key == d or key.startswith(d + ".") or d.startswith(key + ".") for d in declared)
