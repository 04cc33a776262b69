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

Also printed: macro-F1 over :data:`FINDINGS_8`; laterality agreement counting a missing side as a
disagreement; uncertainty consistency (a finding read both positive and uncertain in one sentence;
uncertain-only findings and how often MeSH encodes them); and ``nast label`` against MeSH
(:func:`evaluate_labels`: label-1 positives per finding, FP on normal reports, share of reports with
a negative label, No Finding against ``normal``).

The same script runs a BASELINE: a regular expression over the same finding phrases (the lexicon's
plain literals) with a negation word list — a mention is negative when "no", "not", "without",
"negative for" or "free of" occurs earlier in its sentence, else positive.

Split (all dev uids are even): ``uid % 4 == 0`` = tuning half (rules were tuned on it),
``uid % 4 == 2`` = held-out half (reported through round 3). From round 4 the held-out half is cut in
two: ``uid % 8 == 2`` (``heldout-a``, read for tuning from round 4 on) and ``uid % 8 == 6``
(``heldout-b``, still never read). Usage::

    .venv/bin/python benchmarks/eval_claims_openi.py [--csv PATH] [--split heldout|heldout-a|heldout-b|tune|all]
        [--json OUT] [--no-label]
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
#: The 8 findings of the headline macro-F1: the most frequent in the dev sample's MeSH (support
#: >= 40 of 1,927); the other five have 1-23 positives each and are reported per finding only.
FINDINGS_8 = ("Lung Opacity", "Cardiomegaly", "Atelectasis", "Support Devices", "Pleural Effusion",
              "Lung Lesion", "Fracture", "Edema")
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
        elif head in ("Pulmonary Edema", "Pulmonary Congestion", "Heart Failure"):
            # CheXpert's Edema mentions (chexpert-labeler phrases/mention/edema.txt) include "heart
            # failure" and "chf" as well as "pulmonary congestion" (issue 17)
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
        elif head in ("Thickening", "Cicatrix") and "pleura" in quals:
            # CheXpert's Pleural Other is "pleural thickening" and "pleural scar" alike
            # (chexpert-labeler phrases/mention/pleural_other.txt; issue 17)
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
#: split -> (modulus, remainder) of the uid (see the module docstring); "all" is every report.
SPLITS = {"tune": (4, 0), "heldout": (4, 2), "heldout-a": (8, 2), "heldout-b": (8, 6)}


def split_frame(df: pl.DataFrame, split: str) -> pl.DataFrame:
    if split == "all":
        return df
    mod, rem = SPLITS[split]
    return df.filter(pl.col("uid").cast(pl.Int64) % mod == rem)


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
    macro8 = sum(per.get(f, {"f1": 0.0})["f1"] for f in FINDINGS_8) / len(FINDINGS_8)
    fp_normal = sum(1 for u in normal if pred.get(u)) / len(normal) if normal else 0.0
    return {"per_finding": per, "macro_f1": macro, "macro_findings": scored, "macro_f1_8": macro8,
            "fp_rate_normal": fp_normal, "n_reports": len(truth), "n_normal": len(normal)}


def laterality(truth: dict[str, dict[str, set[str]]], sides: dict[tuple[str, str], set[str]],
               pred: dict[str, set[str]]) -> dict:
    """Side agreement where MeSH gives a side and the reader has the finding positive.

    ``strict``: a missing side counts as a disagreement (what a dropped side word costs);
    ``given``: only where the reader gives a side too. Per finding: (agree, n) of the strict count.
    """
    agree = total = given_agree = given_total = 0
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for u, t in truth.items():
        for f, mesh_sides in t.items():
            if not mesh_sides or f not in pred.get(u, ()):
                continue
            got = sides.get((u, f), set())
            ok = bool(got & mesh_sides)
            total += 1
            agree += ok
            per[f][0] += ok
            per[f][1] += 1
            if got:
                given_total += 1
                given_agree += ok
    return {"strict": agree / total if total else None, "strict_n": total,
            "given": given_agree / given_total if given_total else None, "given_n": given_total,
            "per_finding": {f: tuple(v) for f, v in sorted(per.items())}}


def uncertainty(claims: pl.DataFrame, truth: dict[str, dict[str, set[str]]]) -> dict:
    """``mixed``: (report, sentence, finding) read both positive and uncertain (should be 0);
    ``uncertain_only``: (report, finding) pairs with an uncertain claim and no positive one, and the
    share of them MeSH encodes as present (MeSH coders encode what the radiologist leans to)."""
    mixed = (claims.filter(pl.col("polarity").is_in(["positive", "uncertain"]))
             .group_by("id", "evidence", "finding").agg(pl.col("polarity").n_unique().alias("k"))
             .filter(pl.col("k") > 1).height)
    per = claims.group_by("id", "finding").agg(pl.col("polarity").alias("p"))
    only = [(u, f) for u, f, p in per.iter_rows() if "uncertain" in p and "positive" not in p]
    in_mesh = sum(1 for u, f in only if f in truth.get(u, {}))
    return {"mixed": mixed, "uncertain_only": len(only),
            "uncertain_only_in_mesh": in_mesh / len(only) if only else None}


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
    lat = laterality(truth, sides, pred)
    extractor["laterality_agreement"] = lat["given"]
    extractor["laterality_n"] = lat["given_n"]
    extractor["laterality"] = lat
    extractor["uncertainty"] = uncertainty(claims, truth)
    extractor["seconds"] = seconds
    extractor["claims"] = claims.height

    patterns = baseline_patterns()
    bpred = {
        u: baseline_positive([fi, im], patterns)
        for u, fi, im in zip(uids, df["findings"].to_list(), df["impression"].to_list())
    }
    baseline = score(truth, bpred, normal)
    return {"extractor": extractor, "baseline": baseline}


def evaluate_labels(df: pl.DataFrame, labels: pl.DataFrame | None = None, precedence: str | None = None) -> dict:
    """``nast label`` against MeSH: positives (label 1) per finding, FP on normal reports, No Finding.

    ``positives``: a report is predicted positive for F when its label is 1 (``-1`` is not);
    ``positive_or_uncertain``: when it is 1 or -1. FP on normal reports: share of MeSH-``normal``
    reports with any of the 13 conditions at 1. ``with_negative``: share of the labelled reports
    with at least one 0. ``no_finding``: label No Finding = 1 against MeSH ``normal``.
    """
    from nast.conditions import CONDITIONS
    from nast.text.label import DEFAULT_PRECEDENCE, label_reports

    precedence = precedence or DEFAULT_PRECEDENCE
    frame = df.with_columns(pl.col("uid").cast(pl.Utf8))
    t0 = time.perf_counter()
    if labels is None:
        labels, quarantine, _ = label_reports(frame, ["uid"], TEXT_COLS, precedence=precedence, source="openi")
    else:
        quarantine = None
    seconds = time.perf_counter() - t0
    uids = [str(u) for u in df["uid"].to_list()]
    truth = {u: mesh_findings(m) for u, m in zip(uids, df["MeSH"].to_list())}
    normal_all = {u for u, m in zip(uids, df["MeSH"].to_list()) if (m or "").strip().lower() == "normal"}
    labelled = set(labels["uid"].to_list())
    truth = {u: t for u, t in truth.items() if u in labelled}
    normal = normal_all & labelled
    out: dict = {"precedence": precedence, "n_labelled": labels.height,
                 "n_quarantined": None if quarantine is None else quarantine.height,
                 "seconds": seconds}
    for name, states in (("positives", (1,)), ("positive_or_uncertain", (1, -1))):
        pred: dict[str, set[str]] = defaultdict(set)
        for row in labels.iter_rows(named=True):
            for c in CONDITIONS:
                if row[c] in states:
                    pred[row["uid"]].add(c)
        out[name] = score(truth, pred, normal)
    conds = list(CONDITIONS)
    with_neg = labels.select(pl.any_horizontal([pl.col(c) == 0 for c in conds]).fill_null(False).sum()).item()
    out["with_negative"] = with_neg / labels.height if labels.height else None
    nf = {u for u, v in zip(labels["uid"].to_list(), labels["No Finding"].to_list()) if v == 1}
    tp = len(nf & normal)
    out["no_finding"] = {"precision": tp / len(nf) if nf else 0.0, "recall": tp / len(normal) if normal else 0.0,
                         "n_predicted": len(nf), "n_normal": len(normal)}
    return out


def format_labels(res: dict) -> str:
    pos, pu = res["positives"], res["positive_or_uncertain"]
    lines = [f"nast label --precedence {res['precedence']} vs MeSH ({res['n_labelled']} labelled, "
             f"{res['n_quarantined']} quarantined, "
             f"{res['seconds']:.1f} s)",
             f"{'finding':28s} {'supp':>5s} | {'P':>5s} {'R':>5s} {'F1':>5s} | F1 with -1 as positive"]
    for f in sorted(pos["per_finding"], key=lambda f: -pos["per_finding"][f]["support"]):
        e, u = pos["per_finding"][f], pu["per_finding"].get(f, {"f1": 0.0})
        lines.append(f"{f:28s} {e['support']:5d} | {e['precision']:5.3f} {e['recall']:5.3f} {e['f1']:5.3f} | "
                     f"{u['f1']:5.3f}")
    lines.append(f"label positives macro-F1 over the 8 findings: {pos['macro_f1_8']:.3f} "
                 f"(-1 as positive: {pu['macro_f1_8']:.3f}); support >= {MIN_SUPPORT}: {pos['macro_f1']:.3f}")
    lines.append(f"label FP rate on 'normal' reports (n={pos['n_normal']}): {pos['fp_rate_normal']:.3f}")
    lines.append(f"reports with at least one negative (0) label: {res['with_negative']:.3f}")
    nf = res["no_finding"]
    lines.append(f"No Finding = 1 vs MeSH normal: precision {nf['precision']:.3f} recall {nf['recall']:.3f} "
                 f"({nf['n_predicted']} predicted, {nf['n_normal']} normal)")
    return "\n".join(lines)


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
    lines.append(f"macro-F1 over the 8 findings ({', '.join(FINDINGS_8)}): extractor {ex['macro_f1_8']:.3f}   "
                 f"baseline {bl['macro_f1_8']:.3f}")
    lat = ex["laterality"]
    if lat["strict"] is not None:
        lines.append(f"laterality agreement, a missing side counted as wrong (n={lat['strict_n']}): "
                     f"{lat['strict']:.3f}; "
                     f"where the reader gives a side (n={lat['given_n']}): {lat['given']:.3f}")
        lines.append("  per finding (agree/n): "
                     + ", ".join(f"{f} {a}/{n}" for f, (a, n) in lat["per_finding"].items()))
    unc = ex["uncertainty"]
    share = unc["uncertain_only_in_mesh"]
    lines.append(f"uncertainty: {unc['mixed']} (report, sentence, finding) read both positive and uncertain; "
                 f"{unc['uncertain_only']} (report, finding) only uncertain, "
                 f"{'n/a' if share is None else f'{share:.3f}'} of them MeSH-encoded")
    lines.append(f"extractor time: {ex['seconds']:.1f} s for {ex['n_reports']} reports ({ex['claims']} claims)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="Open-i report CSV (indiana_reports layout)")
    ap.add_argument("--split", choices=[*SPLITS, "all"], default="heldout")
    ap.add_argument("--json", type=Path, default=None, help="also write the full result as JSON")
    ap.add_argument("--no-label", action="store_true", help="skip the nast label agreement")
    ap.add_argument("--precedence", default=None, help="nast label --precedence (default: the label default)")
    args = ap.parse_args(argv)
    if not args.csv.is_file():
        print(f"not found: {args.csv}", file=sys.stderr)
        return 2
    df = split_frame(pl.read_csv(args.csv, infer_schema_length=0), args.split)
    result = evaluate(df)
    print(f"Open-i {args.split} split: {df.height} reports")
    print(format_table(result))
    if not args.no_label:
        result["label"] = evaluate_labels(df, precedence=args.precedence)
        print(format_labels(result["label"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=sorted))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
