"""The ``nast`` command line: one subcommand per pipeline stage.

Each DAG stage lives in its own module, ``nast.stages.<rule>`` (named like its Snakemake rule and DVC
stage), and each tool that is no stage in ``nast.tools.<command>``; both expose::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace, params: dict) -> int: ...

Modules are imported only when their subcommand runs, so ``nast --help`` stays fast (no torch).
Every subcommand takes ``--params`` (default ``params.yaml``), validated on load. With
``NAST_RECORD_PARAMS=DIR`` each run writes the params keys the stage read to ``DIR/*.json`` (the
test suite checks them against the keys each stage declares, ``PARAMS_KEYS``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from pathlib import Path

#: subcommand -> (module, one-line help). Order = DAG order.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("nast.stages.demo_data", "write the synthetic demo dataset in the MIMIC-CXR-JPG layout"),
    "ingest": ("nast.stages.ingest", "read MIMIC-CXR-JPG / Open-i / demo into the cohort table (+ quarantine)"),
    "permutations": ("nast.stages.permutations", "NAST label permutations: k conditions, options A-D, correct letter"),
    "mcq": ("nast.stages.mcq", "write negated multiple-choice questions (template or LLM), each verified"),
    "affirm": ("nast.stages.affirm", "affirmative rewrites of the negated options, verified cue-free"),
    "extract-claims": ("nast.tools.extract_claims",
                       "extract (finding, polarity, location, severity) claims from any report CSV"),
    "claims": ("nast.stages.claims", "extract claims from the cohort's reports"),
    "label": ("nast.tools.label",
              "CheXpert-style 4-state labels (1/0/-1/blank) for any report CSV, read by the reader"),
    "contextual": ("nast.stages.contextual", "true contextual captions and minimal-edit foils"),
    "mednega": ("nast.tools.mednega", "export/import the official MedNega-CXR JSON benchmark layout"),
    "pretrain-base": ("nast.stages.pretrain_base", "pretrain the tiny demo open_clip model (CLIP loss)"),
    "trace": ("nast.stages.trace", "causal tracing effects (CTE) per text-encoder layer"),
    "cache-images": ("nast.stages.cache_images",
                     "pre-resized image cache: every image decoded once into uint8 crops at the model's input size"),
    "embed-images": ("nast.stages.embed_images",
                     "embed every cohort image once with the base model (read by train and evaluate)"),
    "train": ("nast.stages.train", "train NAST or a baseline (LoRA through PEFT, alpha_l^beta gradient scaling)"),
    "evaluate": ("nast.stages.evaluate", "evaluate a method: MCQ negated/affirmative, claims, retrieval, AUROC"),
    "grounding-data": ("nast.stages.grounding_data",
                       "finding boxes -> counterfactual images (finding removed) and background controls"),
    "evaluate-grounding": ("nast.stages.evaluate_grounding",
                           "score a method on counterfactual pairs: polarity, localisation, verified attribution"),
    "report": ("nast.stages.report", "summary tables and plots over all evaluated methods"),
    "dvc-yaml": ("nast.tools.dvc_yaml",
                 "write dvc.yaml from the Snakemake DAG for params.yaml (same stages as the Snakefile)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nast", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def _stage_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"nast {name}", description=help_text)
    parser.add_argument("--params", default="params.yaml", help="pipeline configuration (default: params.yaml)")
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    verbose = "-v" in argv[:1] or "--verbose" in argv[:1]
    if verbose:
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.print_usage(sys.stderr)
        print(f"nast: unknown command '{name}' (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    parser, module = _stage_parser(name)
    args = parser.parse_args(rest)

    from nast.config import ConfigError, RecordingParams, load_params
    from nast.errors import StageError

    record = os.environ.get("NAST_RECORD_PARAMS")
    params = None
    try:
        params = load_params(args.params)
        if record:
            params = RecordingParams(params)
        return int(module.run(args, params) or 0)
    except (ConfigError, StageError) as exc:
        print(f"nast {name}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if record and isinstance(params, RecordingParams):
            _write_record(Path(record), name, rest, params.recorded())


def _write_record(folder: Path, command: str, argv: list[str], keys: list[str]) -> None:
    """NAST_RECORD_PARAMS: one JSON file per run with the params keys the stage read."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{command}-{os.getpid()}-{time.time_ns()}.json"
    path.write_text(json.dumps({"command": command, "argv": argv, "keys": keys}))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
