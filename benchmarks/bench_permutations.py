"""Benchmark of the permutations stage core on a synthetic cohort of MIMIC-CXR size.

    python benchmarks/bench_permutations.py [--studies 227835] [--seed 0] [--workload both|eligible|mimic] [--gate]

Builds a cohort of ``--studies`` studies (~1.65 images each, views PA/AP/LATERAL) and times
``nast.permutations.build_permutations`` (image choice, rule, sampling, table build) in this one
process, on two workloads:

* ``eligible`` (the headline): five conditions are forced to 1, 1, 0, 0, 0 in every study, so every
  study with a frontal image meets the NAST rule (~88 % of all studies are kept; the rest have no
  frontal image) and the time is spent on sampling and building the table;
* ``mimic``: labels drawn per condition from approximate study-level MIMIC-CXR-JPG 2.0.0 marginals
  (positive / negative / uncertain shares below; the rest blank; negatives correlated within a
  study through a report-style factor, as radiologists who negate one finding tend to negate
  several). Only ~3 % of the studies meet the rule, so this figure mostly times the filter.

``--workload both`` (default) prints one line per workload (``workload=... kept=... share_kept=...
seconds=...``) and ends with the eligible one's ``studies=<int> kept=<int> seconds=<float>``
(target <= 10 s on 2 cores). ``--all-eligible`` is the old spelling of ``--workload eligible``.
``--gate`` also times the Great Expectations gate (on the last workload's table).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from nast.conditions import CHEXPERT_COLUMNS
from nast.permutations import build_permutations

#: approximate (positive, negative, uncertain) shares per study in MIMIC-CXR-JPG 2.0.0
MARGINALS: dict[str, tuple[float, float, float]] = {
    "Atelectasis": (0.200, 0.007, 0.045),
    "Cardiomegaly": (0.197, 0.070, 0.026),
    "Consolidation": (0.047, 0.122, 0.019),
    "Edema": (0.119, 0.112, 0.058),
    "Enlarged Cardiomediastinum": (0.032, 0.023, 0.041),
    "Fracture": (0.019, 0.004, 0.003),
    "Lung Lesion": (0.028, 0.004, 0.005),
    "Lung Opacity": (0.226, 0.014, 0.017),
    "No Finding": (0.330, 0.000, 0.000),
    "Pleural Effusion": (0.238, 0.120, 0.025),
    "Pleural Other": (0.009, 0.001, 0.003),
    "Pneumonia": (0.073, 0.107, 0.080),
    "Pneumothorax": (0.046, 0.186, 0.005),
    "Support Devices": (0.292, 0.001, 0.001),
}


def synthetic_cohort(n_studies: int, seed: int = 0, all_eligible: bool = False) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n_img = rng.choice([1, 2, 3], size=n_studies, p=[0.5, 0.35, 0.15])
    study = np.repeat(np.arange(n_studies, dtype=np.int64) + 50_000_000, n_img)
    subject = np.repeat(rng.integers(10_000_000, 10_065_000, size=n_studies), n_img)
    n = len(study)
    views = rng.choice(np.array(["PA", "AP", "LATERAL"]), size=n, p=[0.45, 0.35, 0.20])
    dicom = pl.Series("dicom_id", np.arange(n)).cast(pl.Utf8)
    # reports that list negatives come in styles: 40 % of studies negate explicitly (negative share
    # x2.125), the others rarely (x0.25); the marginal negative share stays as in MARGINALS
    neg_scale = np.where(rng.random(n_studies) < 0.4, 2.125, 0.25)
    labels = {}
    for c in CHEXPERT_COLUMNS:
        p1, p0, pu = MARGINALS[c]
        p0s = np.minimum(p0 * neg_scale, 1.0 - p1 - pu)
        u = rng.random(n_studies)
        v = np.where(u < p1, 1, np.where(u < p1 + p0s, 0, np.where(u < p1 + p0s + pu, -1, 9)))
        if all_eligible and c in ("Support Devices", "Lung Opacity", "Pneumothorax", "Consolidation", "Edema"):
            v = np.full(n_studies, 1 if c in ("Support Devices", "Lung Opacity") else 0)
        v = np.repeat(v, n_img)
        labels[c] = pl.Series(c, v, dtype=pl.Int8).replace(9, None)
    return pl.DataFrame({
        "dataset": pl.Series(["mimic"] * n),
        "dicom_id": "d" + dicom,
        "subject_id": subject,
        "study_id": study,
        "view": views,
        "split": rng.choice(np.array(["train", "validate", "test"]), size=n, p=[0.9, 0.05, 0.05]),
        "image_path": "files/" + dicom + ".jpg",
        **labels,
    })


def run_workload(name: str, n_studies: int, seed: int) -> tuple[pl.DataFrame, dict, float]:
    cohort = synthetic_cohort(n_studies, seed, all_eligible=(name == "eligible"))
    t0 = time.perf_counter()
    out, _quarantine, summary = build_permutations(cohort, k=3, min_zeros=3, min_ones=2, seed=0)
    seconds = time.perf_counter() - t0
    share = summary["kept"] / max(summary["studies_in"], 1)
    print(f"workload={name} images={cohort.height} studies={summary['studies_in']} kept={summary['kept']} "
          f"share_kept={share:.3f} skipped_rule={summary['skipped_rule']} "
          f"skipped_no_frontal={summary['skipped_no_frontal']} quarantined={summary['quarantined']} "
          f"seconds={seconds:.3f}")
    return out, summary, seconds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=227_835)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workload", choices=("both", "eligible", "mimic"), default="both",
                    help="eligible: every study with a frontal image meets the rule (headline); mimic: MIMIC "
                         "label marginals (~3 %% kept: mostly the filter); both (default): each, eligible last")
    ap.add_argument("--gate", action="store_true", help="also time the Great Expectations gate")
    ap.add_argument("--all-eligible", action="store_true", help="same as --workload eligible")
    args = ap.parse_args(argv)
    workloads = (["eligible"] if args.all_eligible
                 else {"both": ["mimic", "eligible"]}.get(args.workload, [args.workload]))
    for name in workloads:
        out, summary, seconds = run_workload(name, args.studies, args.seed)
    if args.gate:
        import tempfile

        from nast.permutations import gate_permutations

        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            gate_permutations(out, 3, report_dir=tmp)
        print(f"gate_seconds={time.perf_counter() - t1:.3f} (incl. GX import)")
    print(f"studies={summary['studies_in']} kept={summary['kept']} seconds={seconds:.3f}")


if __name__ == "__main__":
    main()
