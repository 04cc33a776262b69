"""Throughput of ``nast label`` on MIMIC-sized synthetic reports (reports per second).

What it measures: the whole command (``nast label IN.csv --id-col study_id --text-cols
findings,impression --out LABELS.csv.gz``: CSV read, per-row screen, the medspaCy reader, CheXpert
aggregation, gzipped CSV and quarantine/summary writes) on ``--n`` synthetic reports, once per
``--workers`` value, and the time it implies for MIMIC-CXR's 227,835 reports at that rate.

What it does not: the reports are synthetic (no MIMIC-CXR text is available here), built from a
bank of radiology sentences (findings of 10-16 sentences, impression of 1-3 numbered ones; the mean
length is printed) with random sides, sizes, measurements and list orders, so that almost every
section is distinct: the reader's cache of repeated sections (real MIMIC impressions repeat a lot,
"No acute cardiopulmonary process.") does not help here, which makes the figure conservative. The
machine's load (other jobs on the same cores) is printed beside the result; reports/s scale with
the free cores, not with ``--workers`` alone. So it also prints the CPU time per report (this
process and its workers) and the wall time that implies for 227,835 reports on 2 free cores (the
CPU time halved: two workers, no other load; the pool's start-up and the parent's CSV work are in
the CPU time, so this is not an idealised figure, but it does assume the two cores are free).

Usage::

    .venv/bin/python benchmarks/bench_label.py [--n 10000] [--workers 1 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import polars as pl

MIMIC_REPORTS = 227_835
TARGET_SECONDS = 15 * 60

SIDES = ["left", "right", "bilateral", "right-sided", "left-sided"]
ZONES = ["lower lobe", "upper lobe", "basilar", "apical", "perihilar", "retrocardiac", "mid lung", "lingular"]
SIZES = ["small", "moderate", "large", "trace", "mild", "minimal", "tiny"]
NOUNS = ["pleural effusion", "pneumothorax", "consolidation", "atelectasis", "opacity", "edema", "nodule",
         "airspace disease", "infiltrate", "pneumonia", "mass", "fracture", "pleural thickening"]
DEVICES = ["endotracheal tube", "nasogastric tube", "right internal jugular central line", "left PICC line",
           "dual-lead pacemaker", "chest tube", "Dobhoff tube", "Swan-Ganz catheter"]
PLACES = ["mid SVC", "cavoatrial junction", "right atrium", "stomach", "distal trachea", "left apex"]
NORMALS = ["Heart size is normal.", "The cardiomediastinal silhouette is within normal limits.",
           "Hilar contours are unremarkable.", "The lungs are clear.", "Costophrenic angles are sharp.",
           "Pulmonary vasculature is within normal limits.", "No acute osseous abnormality is seen.",
           "The mediastinal contours are normal.", "Lungs are well expanded."]
OTHERS = ["Degenerative changes of the thoracic spine.", "Surgical clips in the right upper quadrant.",
          "Median sternotomy wires are intact.", "Calcification of the aortic knob.",
          "The visualized upper abdomen is unremarkable.", "Old healed left rib fractures.",
          "Mild cardiomegaly is unchanged.", "Moderate hiatal hernia.",
          "Stable calcified granuloma in the left upper lobe."]


def _sentence(rng: random.Random) -> str:
    k = rng.random()
    side, zone, size, noun = rng.choice(SIDES), rng.choice(ZONES), rng.choice(SIZES), rng.choice(NOUNS)
    if k < 0.22:
        a, b, c = rng.sample(NOUNS, 3)
        return rng.choice([f"No {a}, {b}, or {c}.", f"There is no {a} or {b}.", f"Without evidence of {a}."])
    if k < 0.40:
        return rng.choice(NORMALS)
    if k < 0.55:
        return rng.choice([f"There is a {size} {side} {noun}.", f"{size.capitalize()} {side} {zone} {noun}.",
                           f"{side.capitalize()} {zone} {noun} measuring {rng.randint(5, 60) / 10:.1f} cm.",
                           f"Patchy {side} {zone} opacity, likely {noun}."])
    if k < 0.65:
        return rng.choice([f"{side.capitalize()} {zone} opacity may represent {noun} or atelectasis.",
                           f"Cannot exclude {size} {side} {noun}.", f"Possible {side} {zone} {noun}.",
                           f"Findings could reflect {noun} versus atelectasis in the {side} base."])
    if k < 0.75:
        return (f"{rng.choice(DEVICES).capitalize()} with tip {rng.randint(1, 9)} cm above the "
                f"{rng.choice(PLACES)}.")
    if k < 0.85:
        return rng.choice([f"The {side} {noun} is unchanged compared to the prior study from ___.",
                           f"Interval improvement of the {side} {zone} {noun}.",
                           f"The {noun} has resolved since ___."])
    return rng.choice(OTHERS)


def synthetic_reports(n: int, seed: int = 0) -> pl.DataFrame:
    rng = random.Random(seed)
    findings, impressions = [], []
    for _ in range(n):
        findings.append(" ".join(_sentence(rng) for _ in range(rng.randint(10, 16))))
        impressions.append(" ".join(f"{i + 1}. {_sentence(rng)}" for i in range(rng.randint(1, 3))))
    return pl.DataFrame({"study_id": [str(50_000_000 + i) for i in range(n)], "findings": findings,
                         "impression": impressions})


def _cpu() -> float:
    """User + system CPU seconds of this process and its reaped children (the forked workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="synthetic reports (default 10,000)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from nast.cli import main as nast_main
    from nast.text.polarity import get_nlp

    df = synthetic_reports(args.n, args.seed)
    chars = (df["findings"].str.len_chars() + df["impression"].str.len_chars()).mean()
    distinct = pl.concat([df["findings"], df["impression"]]).n_unique() / (2 * df.height)
    print(f"{args.n} synthetic reports, {chars:.0f} characters per report on average, "
          f"{distinct:.3f} of the sections distinct; cores available: {len(os.sched_getaffinity(0))}")
    get_nlp()  # pipeline construction is not counted
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "reports.csv"
        df.write_csv(src)
        for workers in args.workers:
            load = os.getloadavg()[0]
            c0, t0 = _cpu(), time.perf_counter()
            rc = nast_main(["label", str(src), "--id-col", "study_id", "--text-cols", "findings,impression",
                            "--out", str(Path(tmp) / "labels.csv.gz"), "--workers", str(workers)])
            seconds, cpu = time.perf_counter() - t0, _cpu() - c0
            if rc:
                return rc
            rate = args.n / seconds
            mimic = MIMIC_REPORTS / rate
            idle = MIMIC_REPORTS * cpu / args.n / 2  # CPU seconds spread over 2 free cores
            print(f"workers={workers}: {seconds:.1f} s wall, {rate:.0f} reports/s -> {MIMIC_REPORTS:,} reports in "
                  f"{mimic / 60:.1f} min here (1-min load average {load:.1f} on {len(os.sched_getaffinity(0))} "
                  f"cores); CPU {1000 * cpu / args.n:.2f} ms/report -> {idle / 60:.1f} min on 2 free cores "
                  f"(target {TARGET_SECONDS // 60} min: {'met' if idle <= TARGET_SECONDS else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
