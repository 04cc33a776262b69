"""Score the claim extractor against Open-i's manual MeSH encoding (positive mentions per finding).

Data: the Open-i development sample ``../shared/data/openi/openi-dev-reports.csv`` (1,927 radiologist
reports, even uids; never copied into this repository). Its ``MeSH`` column is the manual structured
encoding (``Pleural Effusion/left/small;Opacity/lung/base/right`` or ``normal``); negated findings are
not encoded, so the comparison is on *positive* mentions:

    a report is predicted positive for finding F  ⇔  it has a claim (F, positive)
    a report is truly positive for F               ⇔  a MeSH term maps to F (see MESH_MAP)

Per finding: precision, recall, F1 and support; macro-F1 over the findings with at least
``MIN_SUPPORT`` true positives in the split; the false-positive rate on ``normal`` reports (share of
them with any positive claim); laterality agreement where MeSH gives left/right/bilateral and the
extractor gives a laterality (any predicted side ∈ MeSH sides).

The same script runs a BASELINE: a regular expression over the same finding phrases (the lexicon's
plain literals) with a negation word list — a mention is negative when "no", "not", "without",
"negative for" or "free of" occurs earlier in its sentence, else positive.

Split (all dev uids are even): ``uid % 4 == 0`` = tuning half (rules were tuned on it),
``uid % 4 == 2`` = held-out half (reported). Usage::

    .venv/bin/python benchmarks/eval_claims_openi.py [--csv PATH] [--split heldout|tune|all] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import polars as pl

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "openi" / "openi-dev-reports.csv"
TEXT_COLS = ["findings", "impression"]
MIN_SUPPORT = 3
SIDES = {"left", "right", "bilateral"}
_BONE = {"humerus", "shoulder", "cervical vertebrae", "thoracic vertebrae", "lumbar vertebrae"}


def mesh_findings(mesh: str | None) -> dict[str, set[str]]:
    """CheXpert findings encoded by one MeSH string -> the set of sides given for each (may be empty)."""
    out: dict[str, set[str]] = defaultdict(set)
    for term in (mesh or "").split(";"):
        parts = [p.strip() for p in term.split("/")]
        head, quals = parts[0], {p.lower() for p in parts[1:]}
        finding = None
        if head in ("Opacity", "Airspace Disease", "Infiltrate"):
            finding = "Lung Opacity"
        elif head == "Density" and quals & {"lung", "retrocardiac"}:
            finding = "Lung Opacity"
        elif head == "Pulmonary Atelectasis":
            finding = "Atelectasis"
        elif head == "Cardiomegaly" or (head == "Cardiac Shadow" and "enlarged" in quals):
            finding = "Cardiomegaly"
        elif head == "Pleural Effusion" or (head == "Costophrenic Angle" and "blunted" in quals):
            finding = "Pleural Effusion"
        elif head in ("Pneumothorax", "Hydropneumothorax"):
            finding = "Pneumothorax"
        elif head == "Consolidation":
            finding = "Consolidation"
        elif head in ("Pulmonary Edema", "Pulmonary Congestion"):
            finding = "Edema"
        elif head in ("Nodule", "Mass") and "breast" not in quals:
            finding = "Lung Lesion"
        elif head == "Fractures, Bone":
            finding = "Fracture"
        elif head in ("Catheters, Indwelling", "Medical Device", "Tube, Inserted") or (
            head == "Implanted Medical Device" and not quals & _BONE
        ):
            finding = "Support Devices"
        elif head == "Pneumonia":
            finding = "Pneumonia"
        elif head == "Thickening" and "pleura" in quals:
            finding = "Pleural Other"
        elif head == "Mediastinum" and quals & {"enlarged", "widened"}:
            finding = "Enlarged Cardiomediastinum"
        if finding:
            out[finding] |= quals & SIDES
    return dict(out)


# --------------------------------------------------------------------------- baseline
BASELINE_NEGATION = re.compile(r"\b(?:no|not|without|negative for|free of)\b", re.I)
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


def baseline_patterns() -> dict[str, re.Pattern]:
    from nast.text.polarity import LOOKALIKE, target_rows

    phrases: dict[str, list[str]] = defaultdict(list)
    for row in target_rows():
        if row["finding"] == LOOKALIKE or row["polarity"] or row["pattern"]:
            continue
        for f in row["finding"].split("|"):
            phrases[f].append(re.escape(row["literal"]))
    return {
        f: re.compile(r"\b(?:" + "|".join(sorted(p, key=len, reverse=True)) + r")\b", re.I)
        for f, p in phrases.items()
    }


def baseline_positive(texts: list[str | None], patterns: dict[str, re.Pattern]) -> set[str]:
    found: set[str] = set()
    for text in texts:
        for sentence in _SENT.split(text or ""):
            for finding, pat in patterns.items():
                for m in pat.finditer(sentence):
                    if not BASELINE_NEGATION.search(sentence[: m.start()]):
                        found.add(finding)
    return found


# --------------------------------------------------------------------------- scoring
def split_frame(df: pl.DataFrame, split: str) -> pl.DataFrame:
    uid = pl.col("uid").cast(pl.Int64)
    if split == "tune":
        return df.filter(uid % 4 == 0)
    if split == "heldout":
        return df.filter(uid % 4 == 2)
    return df


def score(truth: dict[str, dict[str, set[str]]], pred: dict[str, set[str]], normal: set[str]) -> dict:
    """truth: uid -> finding -> MeSH sides; pred: uid -> predicted positive findings."""
    findings = sorted({f for t in truth.values() for f in t} | {f for p in pred.values() for f in p})
    per: dict[str, dict] = {}
    for f in findings:
        tp = sum(1 for u in truth if f in truth[u] and f in pred.get(u, ()))
        fp = sum(1 for u in truth if f not in truth[u] and f in pred.get(u, ()))
        fn = sum(1 for u in truth if f in truth[u] and f not in pred.get(u, ()))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        per[f] = {
            "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "support": tp + fn, "tp": tp, "fp": fp, "fn": fn,
        }
    scored = [f for f in per if per[f]["support"] >= MIN_SUPPORT]
    macro = sum(per[f]["f1"] for f in scored) / len(scored) if scored else 0.0
    fp_normal = sum(1 for u in normal if pred.get(u)) / len(normal) if normal else 0.0
    return {"per_finding": per, "macro_f1": macro, "macro_findings": scored, "fp_rate_normal": fp_normal,
            "n_reports": len(truth), "n_normal": len(normal)}


def evaluate(df: pl.DataFrame, claims: pl.DataFrame | None = None) -> dict:
    """Extractor and baseline scores on the reports of ``df`` (columns uid, MeSH, findings, impression).

    ``claims`` (id = uid) may be passed when already extracted; otherwise they are extracted here.
    """
    from nast.text.claims import extract_claims

    uids = [str(u) for u in df["uid"].to_list()]
    truth = {u: mesh_findings(m) for u, m in zip(uids, df["MeSH"].to_list())}
    normal = {u for u, m in zip(uids, df["MeSH"].to_list()) if (m or "").strip().lower() == "normal"}

    t0 = time.perf_counter()
    if claims is None:
        claims, _, _ = extract_claims(df.with_columns(pl.col("uid").cast(pl.Utf8)), "uid", TEXT_COLS)
    seconds = time.perf_counter() - t0
    pos = claims.filter(pl.col("polarity") == "positive")
    pred: dict[str, set[str]] = defaultdict(set)
    sides: dict[tuple[str, str], set[str]] = defaultdict(set)
    for u, f, loc in pos.select("id", "finding", "location").iter_rows():
        pred[u].add(f)
        if loc:
            side = loc.split(" ")[0]
            if side in SIDES:
                sides[(u, f)].add(side)
    extractor = score(truth, pred, normal)
    agree = total = 0
    for u, t in truth.items():
        for f, mesh_sides in t.items():
            if mesh_sides and sides.get((u, f)):
                total += 1
                agree += bool(sides[(u, f)] & mesh_sides)
    extractor["laterality_agreement"] = agree / total if total else None
    extractor["laterality_n"] = total
    extractor["seconds"] = seconds
    extractor["claims"] = claims.height

    patterns = baseline_patterns()
    bpred = {
        u: baseline_positive([fi, im], patterns)
        for u, fi, im in zip(uids, df["findings"].to_list(), df["impression"].to_list())
    }
    baseline = score(truth, bpred, normal)
    return {"extractor": extractor, "baseline": baseline}


def format_table(result: dict) -> str:
    ex, bl = result["extractor"], result["baseline"]
    lines = [f"{'finding':28s} {'supp':>5s} | {'P':>5s} {'R':>5s} {'F1':>5s} | {'bP':>5s} {'bR':>5s} {'bF1':>5s}"]
    for f in sorted(ex["per_finding"], key=lambda f: -ex["per_finding"][f]["support"]):
        e = ex["per_finding"][f]
        b = bl["per_finding"].get(f, {"precision": 0, "recall": 0, "f1": 0})
        lines.append(
            f"{f:28s} {e['support']:5d} | {e['precision']:5.3f} {e['recall']:5.3f} {e['f1']:5.3f} | "
            f"{b['precision']:5.3f} {b['recall']:5.3f} {b['f1']:5.3f}"
        )
    lines.append(f"macro-F1 (support >= {MIN_SUPPORT}): extractor {ex['macro_f1']:.3f}   baseline {bl['macro_f1']:.3f}")
    lines.append(
        f"FP rate on 'normal' reports (n={ex['n_normal']}): extractor {ex['fp_rate_normal']:.3f}   "
        f"baseline {bl['fp_rate_normal']:.3f}"
    )
    lat = ex["laterality_agreement"]
    lines.append(f"laterality agreement (n={ex['laterality_n']}): {lat:.3f}" if lat is not None else "laterality: n/a")
    lines.append(f"extractor time: {ex['seconds']:.1f} s for {ex['n_reports']} reports ({ex['claims']} claims)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="Open-i report CSV (indiana_reports layout)")
    ap.add_argument("--split", choices=["heldout", "tune", "all"], default="heldout")
    ap.add_argument("--json", type=Path, default=None, help="also write the full result as JSON")
    args = ap.parse_args(argv)
    if not args.csv.is_file():
        print(f"not found: {args.csv}", file=sys.stderr)
        return 2
    df = split_frame(pl.read_csv(args.csv, infer_schema_length=0), args.split)
    result = evaluate(df)
    print(f"Open-i {args.split} split: {df.height} reports")
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=sorted))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
