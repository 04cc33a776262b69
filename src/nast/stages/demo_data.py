"""``nast demo-data``: write the synthetic demo dataset (MIMIC-CXR-JPG 2.0.0 layout).

Size, shape and seed come from the ``demo:`` section of params.yaml (n_subjects,
studies_per_subject, image_size, lateral_fraction, twins, split_fractions, seed); the
patient-level split (``demo.split_fractions``) is written as the official split file. An
existing demo tree at ``--out`` is replaced; any other non-empty folder (a MIMIC-CXR-JPG root
included: a demo tree also has ``demo-annotations.csv.gz``) is refused. Runs only with
``data.source: demo``: on another source it stops with an error naming ``nast dvc-yaml`` (a stale
dvc.yaml). Same params -> byte-identical files.
"""

from __future__ import annotations

import argparse
import logging

from nast.errors import StageError

log = logging.getLogger(__name__)

#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("demo", "data.source")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write the synthetic demo dataset in the MIMIC-CXR-JPG 2.0.0 layout: the chexpert/metadata/split "
        ".csv.gz tables, files/pXX/pSUBJECT/sSTUDY/DICOM.jpg phantoms and sSTUDY.txt reports, plus "
        "demo-annotations.csv.gz (finding boxes) and twins/ (counterfactual images, one finding removed). "
        "Size, patient-level split fractions and seed come from the demo: section of --params. "
        "Same params, byte-identical files."
    )
    parser.add_argument("--out", required=True,
                        help="output dataset root, e.g. data/raw/demo (an earlier demo tree there is replaced)")


def run(args: argparse.Namespace, params: dict) -> int:
    from nast.demo.generate import generate_demo

    source = params.data.source
    if source != "demo":
        # a stale dvc.yaml (generated for the demo) run on another source: stop before anything
        # is written instead of producing a demo tree nothing reads
        raise StageError(
            f"dvc.yaml was generated for the demo; {args.params} says data.source: {source} - run "
            "`nast dvc-yaml` to regenerate dvc.yaml (or `snakemake`, whose DAG has no demo_data there); "
            "`nast demo-data` runs only with data.source: demo"
        )
    p = params.demo
    lo, hi = p.studies_per_subject
    if hi < lo:
        raise StageError(f"{args.params}: demo.studies_per_subject: max {hi} < min {lo}")
    fr = p.split_fractions
    summary = generate_demo(
        args.out,
        n_subjects=p.n_subjects,
        studies_per_subject=(lo, hi),
        image_size=p.image_size,
        lateral_fraction=p.lateral_fraction,
        twins=p.twins,
        seed=p.seed,
        split_fractions=(fr["train"], fr["validate"], fr["test"]),
    )
    log.info(
        "demo-data: %d subjects, %d studies, %d images (%d lateral), %d drawn findings -> %s",
        summary["n_subjects"], summary["n_studies"], summary["n_images"], summary["n_lateral"],
        summary["n_annotations"], args.out,
    )
    return 0
