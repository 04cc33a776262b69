"""``nast demo-data``: write the synthetic demo dataset (MIMIC-CXR-JPG 2.0.0 layout).

Size, shape and seed come from the ``demo:`` section of params.yaml (n_subjects,
studies_per_subject, image_size, lateral_fraction, twins, seed); the patient-level split uses
``data.split_fractions``. An existing demo tree at ``--out`` is replaced; any other non-empty
folder is refused. Same params -> byte-identical files.
"""

from __future__ import annotations

import argparse
import logging

from nast.errors import StageError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write the synthetic demo dataset in the MIMIC-CXR-JPG 2.0.0 layout: the chexpert/metadata/split "
        ".csv.gz tables, files/pXX/pSUBJECT/sSTUDY/DICOM.jpg phantoms and sSTUDY.txt reports, plus "
        "demo-annotations.csv.gz (finding boxes) and twins/ (counterfactual images, one finding removed). "
        "Size and seed come from the demo: section of --params; the patient-level split fractions from "
        "data.split_fractions. Same params, byte-identical files."
    )
    parser.add_argument("--out", required=True, help="output dataset root, e.g. data/raw/demo (an earlier demo tree there is replaced)")


def run(args: argparse.Namespace, params: dict) -> int:
    from nast.demo.generate import generate_demo

    p = params["demo"]
    lo, hi = p["studies_per_subject"]
    if hi < lo:
        raise StageError(f"{args.params}: demo.studies_per_subject: max {hi} < min {lo}")
    fr = params.get("data", {}).get("split_fractions", {"train": 0.7, "validate": 0.1, "test": 0.2})
    summary = generate_demo(
        args.out,
        n_subjects=p["n_subjects"],
        studies_per_subject=(lo, hi),
        image_size=p["image_size"],
        lateral_fraction=p["lateral_fraction"],
        twins=p["twins"],
        seed=p["seed"],
        split_fractions=(fr["train"], fr["validate"], fr["test"]),
    )
    log.info(
        "demo-data: %d subjects, %d studies, %d images (%d lateral), %d drawn findings -> %s",
        summary["n_subjects"], summary["n_studies"], summary["n_images"], summary["n_lateral"],
        summary["n_annotations"], args.out,
    )
    return 0
