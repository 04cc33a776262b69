"""Scale benchmark: the text half of the pipeline on a synthetic cohort at MIMIC-CXR-JPG size.

What it builds: ``--studies`` studies (default 227,835, MIMIC-CXR-JPG 2.0.0's count) planned by the
demo generator (:func:`nast.demo.generate.plan_demo`: labels, reports, ids, views), written in the
real layout with the generator's own tables and paths (chexpert / metadata / split ``.csv.gz``,
``files/pXX/pSUBJECT/sSTUDY.txt`` reports, ``files/.../sSTUDY/DICOM.jpg`` images). 3.5 studies per
patient and a lateral view in 65.5 % of the studies give MIMIC's shape (65k patients, ~1.655 images
per study, i.e. ~377k metadata rows at the default size). The images are NOT phantoms: every JPEG is
a hard link to one 16x16 grey JPEG (ingest's fast image check still opens every file).

What it runs: the real stage commands of workflow/rules/*.smk, each as its own subprocess
(``python -m nast.cli STAGE ...``, data.source mimic, template backends)::

    ingest -> permutations -> mcq -> affirm -> claims -> contextual

and prints per stage the wall seconds, the peak RSS and the rows in / out / quarantined, then
exactly one last line ``studies=N seconds=S peak_rss_mb=M`` (S = the sum over the stages, M = the
largest stage peak). Peak RSS of a stage = the larger of (a) the peak of the summed RSS of the
stage's process tree, polled with psutil every 0.1 s (counts the mcq/affirm/claims worker
processes together) and (b) ``ru_maxrss`` of ``os.wait4`` on the stage process (the largest
single process, exact, but blind to workers running side by side).

Usage::

    .venv/bin/python benchmarks/bench_scale.py --studies 10000          # ~1/23 of MIMIC
    .venv/bin/python benchmarks/bench_scale.py                          # MIMIC size (227,835)
    .venv/bin/python benchmarks/bench_scale.py --studies 50 --work /tmp/s50 --keep

The tree is rebuilt in ``--work`` unless it already holds one of the same size and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
MIMIC_STUDIES = 227_835
STUDIES_PER_SUBJECT = (1, 6)  # mean 3.5, MIMIC: 227,835 studies of 65,379 patients
LATERAL_FRACTION = 0.655  # MIMIC: 377,110 images / 227,835 studies
IMAGE_SIZE = 16
LINKS_PER_BLOB = 50_000
STAGES = ("ingest", "permutations", "mcq", "affirm", "claims", "contextual")


# ----------------------------------------------------------------------------- the synthetic tree
def build_tree(root: Path, n_studies: int, seed: int) -> dict:
    """Write the MIMIC-layout tree of ``n_studies`` studies; returns counts and the build time."""
    from PIL import Image

    from nast.demo.generate import (
        CHEXPERT_FILE,
        METADATA_FILE,
        SPLIT_FILE,
        DemoPlan,
        _gz_csv,
        chexpert_frame,
        metadata_frame,
        plan_demo,
        split_frame,
    )

    t0 = time.perf_counter()
    n_subjects = int(np.ceil(n_studies / 3.5 * 1.02)) + 2
    plan = plan_demo(n_subjects=n_subjects, studies_per_subject=STUDIES_PER_SUBJECT, image_size=IMAGE_SIZE,
                     lateral_fraction=LATERAL_FRACTION, seed=seed, split_fractions=(0.7, 0.1, 0.2))
    while len(plan.studies) < n_studies:  # pragma: no cover - the 2 % margin covers it
        n_subjects = int(n_subjects * 1.1) + 1
        plan = plan_demo(n_subjects=n_subjects, studies_per_subject=STUDIES_PER_SUBJECT, image_size=IMAGE_SIZE,
                         lateral_fraction=LATERAL_FRACTION, seed=seed, split_fractions=(0.7, 0.1, 0.2))
    studies = plan.studies[:n_studies]
    kept = {s.subject_id for s in studies}
    plan = DemoPlan(studies=studies, split={k: v for k, v in plan.split.items() if k in kept},
                    image_size=IMAGE_SIZE)
    t_plan = time.perf_counter() - t0

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    blob = root / "tiny.jpg"
    Image.fromarray(np.full((IMAGE_SIZE, IMAGE_SIZE), 128, dtype=np.uint8), mode="L").save(blob, format="JPEG")
    n_img = 0
    for s in plan.studies:
        report = root / s.report_rel_path
        report.with_suffix("").mkdir(parents=True, exist_ok=True)  # files/pXX/pSUBJECT/sSTUDY/
        report.write_text(s.report)
        for im in s.images:
            if n_img % LINKS_PER_BLOB == 0:  # ext4 allows 65,000 links per file
                blob = root / f"tiny-{n_img // LINKS_PER_BLOB}.jpg"
                shutil.copyfile(root / "tiny.jpg", blob)
            os.link(blob, root / im.rel_path)
            n_img += 1
    for name, df in ((CHEXPERT_FILE, chexpert_frame(plan)), (METADATA_FILE, metadata_frame(plan)),
                     (SPLIT_FILE, split_frame(plan))):
        (root / name).write_bytes(_gz_csv(df))
    info = {"studies": len(plan.studies), "subjects": len(plan.split), "images": n_img, "seed": seed,
            "plan_s": round(t_plan, 1), "build_s": round(time.perf_counter() - t0, 1)}
    (root / "bench-tree.json").write_text(json.dumps(info))
    return info


# ----------------------------------------------------------------------------- one stage
def run_stage(cmd: list[str], log: Path, cwd: Path, poll_s: float = 0.1) -> tuple[float, float, int]:
    """Run one stage; returns (seconds, peak RSS MiB, exit code). See the module docstring."""
    import psutil

    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd)
        ps = psutil.Process(proc.pid)
        peak_tree = 0
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                tree = [ps] + ps.children(recursive=True)
                rss = 0
                for p in tree:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak_tree = max(peak_tree, rss)
            except psutil.Error:
                pass
            time.sleep(poll_s)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = max(peak_tree / 2**20, ru.ru_maxrss / 1024)  # ru_maxrss is KiB on Linux
    return seconds, peak, proc.returncode


def _rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item() if path.is_file() else 0


def _studies(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.col("study_id").n_unique()).collect().item() if path.is_file() else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=MIMIC_STUDIES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"), help="base params (data/mcq/... sections)")
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    args = ap.parse_args(argv)

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix=f"bench_scale_{args.studies}_"))
    work.mkdir(parents=True, exist_ok=True)
    tree = work / "mimic"
    info_path = tree / "bench-tree.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if info.get("studies") != args.studies or info.get("seed") != args.seed:
        info = build_tree(tree, args.studies, args.seed)
        print(f"tree: {info['studies']} studies, {info['subjects']} patients, {info['images']} images -> {tree} "
              f"(plan {info['plan_s']} s, written in {info['build_s']} s)", flush=True)
    else:
        print(f"tree: reusing {tree} ({info['studies']} studies, {info['images']} images)", flush=True)

    params = yaml.safe_load(Path(args.params).read_text())
    params["data"].update(source="mimic", root=str(tree), reports_zip=None)
    params["mcq"]["backend"] = params["affirm"]["backend"] = "template"
    params["llm"]["cache_dir"] = str(work / "llm-cache")
    pfile = work / "params.yaml"
    pfile.write_text(yaml.safe_dump(params, sort_keys=False))

    out, q, val = work / "out", work / "out" / "quarantine", work / "out" / "validation"
    q.mkdir(parents=True, exist_ok=True)
    f = {name: out / f"{name}.parquet" for name in ("cohort", "permutations", "mcq", "benchmark", "claims",
                                                    "contextual")}
    nast = [sys.executable, "-m", "nast.cli"]
    commands = {
        "ingest": ["ingest", "--source", "mimic", "--root", str(tree), "--out", f["cohort"],
                   "--quarantine", q / "ingest.parquet", "--validation-dir", val],
        "permutations": ["permutations", "--cohort", f["cohort"], "--out", f["permutations"],
                         "--quarantine", q / "permutations.parquet", "--validation-dir", val],
        "mcq": ["mcq", "--permutations", f["permutations"], "--out", f["mcq"], "--quarantine", q / "mcq.parquet"],
        "affirm": ["affirm", "--mcq", f["mcq"], "--out", f["benchmark"], "--quarantine", q / "affirm.parquet"],
        "claims": ["claims", "--cohort", f["cohort"], "--out", f["claims"], "--quarantine", q / "claims.parquet",
                   "--report-dir", val],
        "contextual": ["contextual", "--claims", f["claims"], "--cohort", f["cohort"], "--out", f["contextual"],
                       "--quarantine", q / "contextual.parquet", "--report-dir", val],
    }
    env_pp = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.environ["PYTHONPATH"] = env_pp
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    total_s, peak_all = 0.0, 0.0
    for stage in args.stages:
        cmd = nast + [commands[stage][0], "--params", str(pfile)] + [str(a) for a in commands[stage][1:]]
        seconds, peak, rc = run_stage(cmd, work / f"{stage}.log", cwd=work)
        total_s += seconds
        peak_all = max(peak_all, peak)
        if rc != 0:
            print((work / f"{stage}.log").read_text()[-3000:], file=sys.stderr)
            print(f"stage {stage} failed (exit {rc}); log {work / f'{stage}.log'}", file=sys.stderr)
            return 1
        counts = stage_counts(stage, f, q)
        print(f"stage={stage} seconds={seconds:.1f} peak_rss_mb={peak:.0f} {counts}", flush=True)
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"studies={args.studies} seconds={total_s:.1f} peak_rss_mb={peak_all:.0f}")
    return 0


def stage_counts(stage: str, f: dict[str, Path], q: Path) -> str:
    """Rows in / out / quarantined of a stage (the test reconciles them)."""
    if stage == "ingest":
        s = json.loads((q / "ingest.summary.json").read_text())
        return (f"rows_in={s['rows_in']} rows_out={_rows(f['cohort'])} quarantined={_rows(q / 'ingest.parquet')} "
                f"filtered_view={s.get('filtered_view', 0)} studies_out={_studies(f['cohort'])}")
    src = {"permutations": "cohort", "mcq": "permutations", "affirm": "mcq", "claims": "cohort",
           "contextual": "claims"}[stage]
    dst = {"affirm": "benchmark"}.get(stage, stage)
    rows_in = _studies(f[src]) if stage in ("permutations", "claims") else _rows(f[src])
    return f"rows_in={rows_in} rows_out={_rows(f[dst])} quarantined={_rows(q / f'{stage}.parquet')}"


if __name__ == "__main__":
    raise SystemExit(main())
