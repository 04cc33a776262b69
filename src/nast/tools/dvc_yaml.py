"""``nast dvc-yaml``: a tool (no rule of the DAG) over :mod:`nast.dag`."""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from pathlib import Path

import yaml

from nast.dag import generate
from nast.errors import StageError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write dvc.yaml from the Snakemake DAG of the project whose params.yaml is --params (the "
        "Snakefile next to it): the same stages, commands, deps, outs and params keys, for that "
        "params.yaml. Run it after changing data.source, methods or grounding.boxes."
    )
    parser.add_argument("--out", default=None, help="dvc.yaml to write (default: dvc.yaml next to --params)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 with a diff when --out is not the generated text")



def run(args: argparse.Namespace, params: dict) -> int:
    pfile = Path(args.params).resolve()
    root = pfile.parent
    if pfile.name != "params.yaml" or not (root / "Snakefile").is_file():
        raise StageError(f"{args.params}: expected the project's params.yaml, next to its Snakefile "
                         "(the Snakefile reads params.yaml of its folder)")
    out = Path(args.out) if args.out else root / "dvc.yaml"
    try:
        text = generate(root)
    except Exception as exc:  # Snakemake's own errors (missing input, bad rule) end up here
        if isinstance(exc, StageError):
            raise
        raise StageError(f"building the Snakemake DAG of {root} failed: {type(exc).__name__}: {exc}") from exc
    if args.check:
        current = out.read_text() if out.is_file() else ""
        if current == text:
            log.info("dvc-yaml: %s is up to date", out)
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=str(out), tofile="generated"))
        print(f"nast dvc-yaml: {out} is not the generated file; run `nast dvc-yaml`", file=sys.stderr)
        return 1
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    log.info("dvc-yaml: wrote %s (%d stages)", out, len(yaml.safe_load(text)["stages"]))
    return 0
