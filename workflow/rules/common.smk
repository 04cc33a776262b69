# Shared paths, parameter sections and resource helpers for all rules.
#
# Paths are the ones pinned in docs/CONTRACTS.md. dvc.yaml is generated from these rules'
# jobs (`nast dvc-yaml`, src/nast/dag.py): each rule's command, input, output and params.cfg
# keys become its DVC stage. Each rule declares `params: cfg=cfg_params(<sections>)`: the
# params.yaml sections (or dotted keys) the stage reads; Snakemake reruns a job when they change
# (rerun-trigger "params"), DVC when the stage's params change (tests/workflow/test_parity.py).

import os
import yaml

from nast.codedeps import code_deps as _code_deps
from nast.codedeps import declared_params as _declared_params
from nast.train.methods import trains_vision as _trains_vision

DEMO = config["data"]["source"] == "demo"
DATA_ROOT = config["data"]["root"]

COHORT = "data/interim/cohort.parquet"
PERMUTATIONS = "data/processed/permutations.parquet"
MCQ = "data/processed/mcq.parquet"
BENCHMARK = "data/processed/benchmark.parquet"
CLAIMS = "data/processed/claims.parquet"
CONTEXTUAL = "data/processed/contextual.parquet"
GROUNDING = "data/processed/grounding.parquet"
GROUNDING_CF = "data/processed/grounding_cf"
EMBEDDINGS = "data/processed/image_embeddings"
IMAGE_CACHE = "data/processed/image_cache"
GROUNDING_EMBEDDINGS = "data/processed/grounding_embeddings"
GROUNDING_DIR = "reports/grounding"
VALIDATION = "reports/validation"
BASE_DIR = "models/base"
CTE_DIR = "reports/cte"
LAYER_WEIGHTS = f"{CTE_DIR}/layer_weights.csv"
EVAL_DIR = "reports/eval"
TABLES_DIR = "reports/tables"
PLOTS_DIR = "reports/plots"
LOGS = "reports/logs"
BENCH = "reports/benchmarks"

METHODS = list(config["methods"])
BETAS = [str(b) for b in config["nast"]["betas"]]
SWEEP = [f"nast-beta{b}" for b in BETAS]


def code(command):
    """The src/nast files `nast <command>` runs (its import closure, nast.codedeps): inputs of the
    rule, so a code change reruns exactly the stages that run that code (dvc.yaml lists the same)."""
    return _code_deps(command, workflow.basedir)


def declared(command, method=None):
    """The params keys `nast <command>` declares it reads (PARAMS_KEYS in its module)."""
    return _declared_params(command, method, workflow.basedir)


def quarantine(stage):
    return f"data/interim/quarantine/{stage}.parquet"


def summary_beside(table):
    """The counts a stage writes beside a table it writes (rows in / kept / quarantined):
    <stem>.summary.json, the name the stages derive from --out / --quarantine."""
    return table[: -len(".parquet")] + ".summary.json"


def gate_outputs(suite):
    """The Great Expectations report a gated stage writes into --report-dir (VALIDATION)."""
    return dict(gate_json=f"{VALIDATION}/{suite}.json", gate_md=f"{VALIDATION}/{suite}.md")


def base_model():
    """The base model the GPU stages read: pretrained by pretrain_base on the demo, else the
    checkpoint named in params.yaml (model.checkpoint) as a plain input."""
    return BASE_DIR if DEMO else config["model"]["checkpoint"]


#: the grounding stages run on the demo (its boxes and twins) and wherever grounding.boxes names a CSV
GROUNDING_ON = DEMO or config["grounding"]["boxes"] is not None


def grounding_boxes():
    """The box CSV: grounding.boxes, or the demo tree's annotations (inside the demo_data output,
    so on the demo the rule depends on the tree and names the file on its command line)."""
    if config["grounding"]["boxes"] is not None:
        return config["grounding"]["boxes"]
    return f"{DATA_ROOT}/demo-annotations.csv.gz"


#: methods that train on the counterfactual pairs (nast.train.methods.GROUNDED)
GROUNDED = ("grounded", "nast-grounded")
if any(m in GROUNDED for m in METHODS) and not GROUNDING_ON:
    raise ValueError(
        f"params.yaml: methods {[m for m in METHODS if m in GROUNDED]} train on counterfactual pairs, "
        "but there are no grounding boxes (grounding.boxes is null on a non-demo source)"
    )


#: the preference methods (nast.train.methods.DPO): they read the counterfactual pairs where the
#: grounding stages run (image-side pairs), and train on the text pairs alone elsewhere
DPO = ("dpo", "nast-dpo")


def reads_grounding(method):
    """Does training ``method`` read the grounding table (--grounding)?"""
    return method in GROUNDED or (method in DPO and GROUNDING_ON)


def grounded_train_inputs(wc):
    """The grounding table and its images for the grounded and preference methods' training, else
    nothing (the images as the base model's embeddings, or as pixels when the tower trains)."""
    if not reads_grounding(wc.method):
        return {}
    return dict(grounding=GROUNDING, grounding_cf=GROUNDING_CF, **grounding_store_input(wc.method))


def grounded_train_args(method):
    """The command-line arguments naming :func:`grounded_train_inputs`."""
    if not reads_grounding(method):
        return ""
    return f" --grounding {GROUNDING}{grounding_store_arg(method, '--grounding-embeddings')}"


def grounding_store_input(method):
    """The base model's embeddings of the grounding pairs' images as an input of a job of
    ``method`` (unpack), or nothing when its vision tower trains (it reads pixels)."""
    return {} if train_pixels(method) else dict(grounding_embeddings=GROUNDING_EMBEDDINGS)


def grounding_store_arg(method, flag="--embeddings"):
    """The command-line argument naming :func:`grounding_store_input` ("" when the tower trains)."""
    return "" if train_pixels(method) else f" {flag} {GROUNDING_EMBEDDINGS}"


def grounding_inputs():
    """report's extra inputs when the grounding stages are part of the DAG."""
    if not GROUNDING_ON:
        return {}
    return dict(
        grounding=expand(f"{GROUNDING_DIR}/{{method}}.json", method=METHODS + SWEEP),
        grounding_maps=expand(f"{GROUNDING_DIR}/{{method}}.npz", method=METHODS + SWEEP),
        grounding_table=GROUNDING,
        grounding_cf=GROUNDING_CF,
    )


#: the pre-resized image cache (data.image_cache_size set): built by cache_images, read by the
#: pixel-reading rules instead of the JPEGs
CACHE_ON = config["data"]["image_cache_size"] is not None


def train_pixels(method):
    """Do training and evaluating ``method`` read pixels? Only when its vision tower trains
    (train.train_vision true, or a list naming it; the beta sweep is "nast"); else they read the
    embedding store, and the image cache is no input of theirs."""
    return _trains_vision(method, config["train"])


def image_inputs(method, embeddings=None):
    """What the train / evaluate job of ``method`` reads for its images: the base model's
    ``embeddings`` store (default: the cohort's), or the pixels (the image cache, when there is
    one) when its vision tower trains."""
    if train_pixels(method):
        return image_cache_input()
    return dict(embeddings=embeddings or EMBEDDINGS)


def image_args(method, embeddings=None):
    """The command-line arguments naming :func:`image_inputs`."""
    if train_pixels(method):
        return image_cache_arg()
    return f" --embeddings {embeddings or EMBEDDINGS}"


def image_cache_input(pixels=True):
    """The cache as an input of a rule that reads pixels (unpack), or nothing without a cache."""
    return dict(image_cache=IMAGE_CACHE) if CACHE_ON and pixels else {}


def image_cache_arg(pixels=True):
    """The --image-cache argument of a command that reads pixels ("" without a cache)."""
    return f" --image-cache {IMAGE_CACHE}" if CACHE_ON and pixels else ""


def dataset_root():
    """The dataset tree: written by demo_data on the demo, else a plain input (data.root)."""
    return DATA_ROOT


def _params_file():
    """The params file passed to every `nast` command.

    Normally params.yaml itself. When the Snakemake config differs from params.yaml
    (`--config` / `--configfile` overrides), the effective, validated config is written to
    .snakemake/nast/params.effective.yaml and passed instead, so the stages see what the DAG sees.
    """
    with open("params.yaml") as fh:
        on_disk = yaml.safe_load(fh)
    validate(on_disk, "../schemas/params.schema.yaml")  # the same schema defaults as the config's
    if on_disk == config:
        return "params.yaml"
    path = ".snakemake/nast/params.effective.yaml"
    text = yaml.safe_dump(dict(config), sort_keys=False)
    if not os.path.exists(path) or open(path).read() != text:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    return path


PARAMS = _params_file()



def _lookup(key):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def cfg_params(*keys):
    """{key: value} for the params.yaml sections / dotted keys a stage depends on."""
    return {key: _lookup(key) for key in keys}


def train_keys(method):
    """params.yaml keys a training job reads (src/nast/stages/train.py PARAMS_KEYS + PARAMS_KEYS_BY_METHOD);
    the beta sweep (method None) passes --beta on the command line."""
    return declared("train", "sweep" if method is None else method)


_S = config["slurm"]


def cpu_resources():
    return dict(
        slurm_partition=_S["cpu_partition"], runtime=_S["cpu_runtime_min"], mem_mb=_S["cpu_mem_mb"]
    )


def gpu_resources():
    res = dict(
        slurm_partition=_S["gpu_partition"], runtime=_S["gpu_runtime_min"], mem_mb=_S["gpu_mem_mb"]
    )
    if _S["gpus_per_job"] > 0:
        res["gres"] = f"gpu:{_S['gpus_per_job']}"
    return res


def all_targets():
    return [TABLES_DIR, PLOTS_DIR]

