"""Mutation run over the code that produces reported figures (``make test-mutants``; not part of CI).

Each mutant below is a named, one-line bug in scoring, the shuffled-image control, metrics, the
losses, NAST's per-block learning rates, tracking, the generated benchmark text or the report tables. The run copies the
working tree (tracked and untracked-but-not-ignored files) to a temporary folder, applies one
mutant at a time there, runs the tests named for it (``pytest -x``, the copy's ``src`` first on
``PYTHONPATH``) and restores the file. A mutant is *killed* when those tests fail, *survived*
when they pass, and *stale* when its original line is no longer in the code (the list needs
updating: that is an error too). The unmutated tests run first and must pass.

    python scripts/mutants.py [--list] [--only NAME ...] [--tests NODE ...] [--full] [--timeout S]

``--full`` runs the whole suite for every mutant (slow) instead of the named tests; ``--tests``
runs the given test files / node ids instead (e.g. to see that one test alone kills a mutant). Exit code 0
when every mutant was killed, 1 when one survived, 2 for a stale site or a failing baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

KNOWN = "tests/evaluate/test_known_answers.py"
ORACLE = "tests/evaluate/test_eval_oracle.py"
METRICS = "tests/evaluate/test_metrics.py"
REPORT = "tests/evaluate/test_report_tables.py"
OBJECTIVE = "tests/train/test_objective.py"
TRAINER = "tests/train/test_trainer.py"
LOSSES = "tests/train/test_losses.py"
TRACKING = "tests/tracking/test_tracking_stages.py"
TEXT = "tests/text_gen/test_template_oracle.py"

GROUND_EVAL = "tests/grounding/test_evaluate_grounding.py"
GROUND_DATA = "tests/grounding/test_grounding_data.py"
GROUND_PROTOCOL = "tests/grounding/test_protocol.py"

EVAL = (KNOWN, ORACLE)


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    why: str = ""


MUTANTS: tuple[Mutant, ...] = (
    # ---- scoring and the shuffled control (src/nast/evaluate/scoring.py)
    Mutant("negated_set_scored_with_affirmative_texts", "src/nast/evaluate/scoring.py",
           'neg = M.mcq_correct(mcq_scores(bench, img, txt, "negated"), correct)',
           'neg = M.mcq_correct(mcq_scores(bench, img, txt, "affirmative"), correct)', EVAL,
           "issue 19: the negated MCQ set scored with the affirmative option texts"),
    Mutant("shuffled_control_scores_true_images", "src/nast/evaluate/scoring.py",
           "shuffled = score(mapping.__getitem__)", "shuffled = score(lambda p: p)", EVAL,
           "issue 19: claim_acc_image_shuffled scoring the true images"),
    Mutant("shuffled_control_same_patient", "src/nast/evaluate/scoring.py",
           "nxt = per_subject[order[(j + 1) % len(order)]]", "nxt = per_subject[order[j]]", (METRICS, *EVAL)),
    Mutant("shuffled_control_unseeded_cycle", "src/nast/evaluate/scoring.py",
           "order = [subjects[i] for i in np.random.default_rng(seed).permutation(len(subjects))]",
           "order = list(subjects)", (ORACLE,)),
    Mutant("claim_scores_wrong_caption_column", "src/nast/evaluate/scoring.py",
           'cap = [float(img[p] @ txt[c]) for p, c in zip(paths, df["caption"])]',
           'cap = [float(img[p] @ txt[c]) for p, c in zip(paths, df["foil"])]', EVAL),
    # ---- counterfactual grounding (src/nast/grounding/)
    Mutant("cf_neg_compares_the_wrong_way", "src/nast/grounding/metrics.py",
           '"cf_neg": compare(s["cf_neg"], s["img_neg"]),', '"cf_neg": compare(s["img_neg"], s["cf_neg"]),',
           (GROUND_EVAL,)),
    Mutant("grounding_ties_count_as_wins", "src/nast/grounding/metrics.py",
           "out = np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))", "out = np.where(a >= b, 1.0, 0.0)",
           (GROUND_EVAL,)),
    Mutant("control_scored_on_the_counterfactual", "src/nast/grounding/evaluate_grounding.py",
           'for name, col in (("img", "image_path"), ("cf", "cf_path"), ("ctrl", "ctrl_path")):',
           'for name, col in (("img", "image_path"), ("cf", "cf_path"), ("ctrl", "cf_path")):', (GROUND_EVAL,)),
    Mutant("verified_ignores_the_control", "src/nast/grounding/metrics.py",
           "return prefers & flips & stays", "return prefers & flips", (GROUND_EVAL,)),
    Mutant("protocol_threshold_median", "src/nast/grounding/protocol.py",
           "mask = (s >= np.quantile(s, quantile)) & (s > 0)", "mask = (s >= np.quantile(s, 0.5)) & (s > 0)",
           (GROUND_PROTOCOL, GROUND_EVAL)),
    Mutant("protocol_4_connected", "src/nast/grounding/protocol.py",
           "label(mask, connectivity=2)", "label(mask, connectivity=1)", (GROUND_PROTOCOL,)),
    Mutant("twin_pasted_whole", "src/nast/grounding/edits.py",
           "out[y0:y1, x0:x1] = other[y0:y1, x0:x1]", "out[:, :] = other", (GROUND_DATA,)),
    Mutant("ms_cxr_box_not_rescaled", "src/nast/grounding/boxes.py",
           "    if rw is None or rh is None or (rw == w and rh == h):", "    if True:", (GROUND_DATA,)),
    Mutant("control_may_touch_a_finding", "src/nast/grounding/edits.py",
           "        ok &= ~((gx < ax1) & (ax0 < gx + bw) & (gy < ay1) & (ay0 < gy + bh))", "        pass",
           (GROUND_DATA,)),
    Mutant("grounding_term_dropped", "src/nast/train/trainer.py",
           'out["loss"] = out["loss"] + spec.lambda_ground * out["ground_loss"]',
           'out["loss"] = out["loss"] + 0 * out["ground_loss"]', ("tests/train/test_grounded.py",)),
    Mutant("grounding_loss_control_ignored", "src/nast/train/losses.py",
           "        loss = loss + (c_pos.pow(2) + c_neg.pow(2)).mean()", "        loss = loss + 0",
           ("tests/train/test_grounded.py",)),
    # ---- metric definitions (src/nast/evaluate/metrics.py)
    Mutant("claim_group_any_instead_of_all", "src/nast/evaluate/metrics.py",
           "group_hits = [all(ws) for ws in by_group.values()]", "group_hits = [any(ws) for ws in by_group.values()]",
           EVAL),
    Mutant("claim_win_not_strict", "src/nast/evaluate/metrics.py", "win = cap > foil", "win = cap >= foil", EVAL),
    Mutant("retrieval_ties_for_the_model", "src/nast/evaluate/metrics.py",
           "rank = ((sim >= best) & ~pos).sum(axis=1)", "rank = ((sim > best) & ~pos).sum(axis=1)", EVAL),
    Mutant("t2i_is_i2t", "src/nast/evaluate/metrics.py",
           "t2i = recall_at_k(sim.T, positives=None if positives is None else np.asarray(positives).T)",
           "t2i = recall_at_k(sim, positives=positives)", EVAL),
    Mutant("bootstrap_gap_unpaired", "src/nast/evaluate/metrics.py",
           "stat = stat - other[idx].mean(axis=1)",
           "stat = stat - other[np.random.default_rng(seed + 1).integers(0, hits.size, size=idx.shape)].mean(axis=1)",
           (METRICS, ORACLE)),
    # ---- the evaluate core and stage (src/nast/evaluate/evaluation.py, src/nast/stages/evaluate.py)
    Mutant("gap_sign_flipped", "src/nast/evaluate/evaluation.py",
           'f"{prefix}_gap": M.accuracy(aff) - M.accuracy(neg),', 'f"{prefix}_gap": M.accuracy(neg) - M.accuracy(aff),',
           EVAL),
    Mutant("auroc_keeps_uncertain_labels", "src/nast/evaluate/evaluation.py",
           "keep = np.isin(labels, [0, 1]) & ~test[c].is_null().to_numpy()",
           "keep = np.isin(labels, [-1, 0, 1]) & ~test[c].is_null().to_numpy()", EVAL),
    Mutant("retrieval_texts_impression_only", "src/nast/evaluate/evaluation.py",
           'pairs["impression"].to_list(), "report").captions(None)',
           'pairs["impression"].to_list(), "impression").captions(None)', (ORACLE,)),
    Mutant("evaluate_ignores_the_trained_adapter", "src/nast/stages/evaluate.py",
           "cfg = load_trained(vl, args.model_dir)", 'cfg = {"trained": False}', (ORACLE,)),
    # ---- losses and the objective (src/nast/train/losses.py, trainer.py)
    Mutant("claim_loss_dropped", "src/nast/train/trainer.py",
           "loss = clip + spec.lambda_claim * claim", "loss = clip + 0 * claim", (OBJECTIVE,),
           "issue 19: the claim loss dropped from the training objective"),
    Mutant("claim_loss_target_is_a_foil", "src/nast/train/losses.py",
           "target = torch.zeros(int(has.sum()), dtype=torch.long, device=img.device)",
           "target = torch.ones(int(has.sum()), dtype=torch.long, device=img.device)", (LOSSES, OBJECTIVE)),
    Mutant("clip_loss_one_direction", "src/nast/train/losses.py",
           "return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))",
           "return F.cross_entropy(logits, target)", (OBJECTIVE,)),
    Mutant("clip_loss_duplicates_are_negatives", "src/nast/train/losses.py",
           "mask = not_negative & ~torch.eye(len(img), dtype=torch.bool, device=img.device)",
           "mask = torch.zeros_like(not_negative)", (LOSSES, OBJECTIVE)),
    Mutant("image_direction_unweighted", "src/nast/train/trainer.py",
           "loss = loss + spec.lambda_image * image_term", "loss = loss + image_term", (OBJECTIVE,)),
    Mutant("hard_negatives_dropped", "src/nast/train/trainer.py",
           "clip = losses.hard_negative_clip_loss(img, pos, neg, scale, nn_mask, neg_mask)",
           "clip = losses.clip_loss(img, pos, scale, nn_mask)", (OBJECTIVE,)),
    # ---- NAST's per-block scaling (trainer.py, stages/train.py)
    Mutant("nast_lr_replaced_by_freezing_alpha0", "src/nast/train/trainer.py",
           'pg = [{"params": ps, "lr": spec.lr * scales[i]} for i, ps in blocks.items() if ps]',
           'pg = [{"params": ps, "lr": spec.lr * (1.0 if scales[i] > 0 else 0.0)} for i, ps in blocks.items() if ps]',
           (OBJECTIVE,), "issue 19: NAST's lr * alpha^beta replaced by a plain freeze of the alpha = 0 block"),
    Mutant("nast_not_mean_normalised", "src/nast/stages/train.py",
           "scales = trainer.normalize_scales(scales, str(params.nast.normalize))",
           "scales = list(scales)", (OBJECTIVE,)),
    Mutant("nast_alpha_without_beta", "src/nast/train/trainer.py",
           "out.append(1.0 if beta == 0 else float(a) ** float(beta))", "out.append(1.0 if beta == 0 else float(a))",
           (OBJECTIVE,)),
    Mutant("nast_scale_mode_forced_to_grad", "src/nast/stages/train.py",
           'scale_mode = str(params.nast.scale) if spec.beta != 0 else "lr"', 'scale_mode = "grad"', (OBJECTIVE,)),
    Mutant("nast_lr_group_for_the_wrong_block", "src/nast/train/trainer.py",
           'pg = [{"params": ps, "lr": spec.lr * scales[i]} for i, ps in blocks.items() if ps]',
           'pg = [{"params": ps, "lr": spec.lr * scales[::-1][i]} for i, ps in blocks.items() if ps]', (OBJECTIVE,)),
    # ---- tracking (src/nast/tracking.py, stage metric names)
    Mutant("tracking_final_metrics_dropped", "src/nast/tracking.py",
           "metrics += [Metric(k, v, now, 0) for k, v in _numeric(final_metrics).items()]", "metrics += []",
           (TRACKING,)),
    Mutant("tracking_epochs_logged_at_step_0", "src/nast/tracking.py",
           "metrics += [Metric(k, v, now, int(step)) for k, v in _numeric(values).items()]",
           "metrics += [Metric(k, v, now, 0) for k, v in _numeric(values).items()]", (TRACKING,)),
    Mutant("tracking_params_not_logged", "src/nast/tracking.py",
           "    _log_params(client, run.info.run_id, run_params)\n    return run.info.run_id",
           "    return run.info.run_id", (TRACKING,)),
    Mutant("tracking_failure_silent", "src/nast/tracking.py",
           'log.warning("MLflow tracking failed for %s (%s stage): %s: %s; continuing without it", method, stage,',
           'log.debug("MLflow tracking failed for %s (%s stage): %s: %s; continuing without it", method, stage,',
           (TRACKING,)),
    Mutant("tracking_retrieval_metrics_not_logged", "src/nast/stages/evaluate.py",
           'flat.update({f"retrieval_{k}": v for k, v in result["retrieval"].items()})', "flat.update({})",
           (TRACKING,)),
    # ---- generated benchmark text (src/nast/text/templates.py)
    Mutant("text_absent_conditions_joined_with_and", "src/nast/text/templates.py",
           'N=join_list([s for _, s in parts.absent], "or")))', 'N=join_list([s for _, s in parts.absent], "and")))',
           (TEXT,)),
    Mutant("text_affirmative_phrases_reordered", "src/nast/text/templates.py",
           'A=join_list([normal[c] for c, _ in parts.absent], "and")))',
           'A=join_list([normal[c] for c, _ in parts.absent][::-1], "and")))', (TEXT,)),
    # ---- report tables (src/nast/report.py)
    Mutant("report_gap_closed_inverted", "src/nast/report.py",
           'row["gap_closed"] = (1 - row["mcq_gap"] / zs_gap) if zs_gap > 0 else float("nan")',
           'row["gap_closed"] = (row["mcq_gap"] / zs_gap) if zs_gap > 0 else float("nan")', (REPORT,)),
    Mutant("report_paired_reference_swapped", "src/nast/report.py",
           'row = M.compare_hits(e.get("mcq_hits"), r["mcq_hits"], n_boot, seed)',
           'row = M.compare_hits(r["mcq_hits"], e.get("mcq_hits"), n_boot, seed)', (REPORT,)),
    Mutant("report_affirmative_by_condition_from_negated", "src/nast/report.py",
           '"mcq_affirmative_by_condition", "affirmative_acc")', '"mcq_by_condition", "affirmative_acc")', (REPORT,)),
    Mutant("report_shuffled_polarity_from_true_images", "src/nast/report.py",
           'row["claim_polarity_image_shuffled"] = _f(shuffled.get("polarity"))',
           'row["claim_polarity_image_shuffled"] = _f((e.get("claim_acc_by_foil_type") or {}).get("polarity"))',
           (REPORT,)),
    Mutant("report_beta_runs_sorted_by_name", "src/nast/report.py",
           'return (len(ORDER), float(m.group("beta")), name)', "return (len(ORDER), 0.0, name)", (REPORT,)),
    Mutant("report_beta_sweep_unsorted", "src/nast/report.py",
           'return pl.DataFrame(rows, schema=schema).sort("beta")', "return pl.DataFrame(rows, schema=schema)",
           (REPORT,)),
)


def copy_tree(dst: Path) -> None:
    """The working tree as git sees it (tracked + untracked not ignored), uncommitted edits included."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def run_tests(root: Path, tests: list[str], timeout: float) -> tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        rc, out = -1, f"timed out after {timeout:.0f} s"
    return rc, time.monotonic() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    ap.add_argument("--full", action="store_true", help="run the whole suite per mutant, not the named tests")
    ap.add_argument("--tests", nargs="+", metavar="NODE", help="run these tests (files or node ids) instead")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant (default 900)")
    args = ap.parse_args(argv)
    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names), "duplicate mutant names"
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:48s} {m.path}  ->  {', '.join(m.tests)}")
        return 0
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        print(f"unknown mutant(s): {', '.join(unknown)}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="nast-mutants-") as tmp:
        root = Path(tmp) / "repo"
        copy_tree(root)
        tests_of = ((lambda m: []) if args.full else (lambda m: list(args.tests)) if args.tests
                    else (lambda m: list(m.tests)))
        baseline = sorted({t for m in chosen for t in tests_of(m)})
        rc, secs, out = run_tests(root, baseline, args.timeout * 2)
        if rc != 0:
            print(out[-4000:])
            print(f"baseline: the unmutated tests fail (rc {rc}); no mutation run", file=sys.stderr)
            return 2
        print(f"baseline: {len(baseline) or 'all'} test files pass unmutated ({secs:.0f} s)", flush=True)
        results = []
        for m in chosen:
            path = root / m.path
            text = path.read_text()
            n = text.count(m.original)
            if n != 1:
                results.append((m, "STALE", 0.0, f"original found {n} times in {m.path}"))
                print(f"STALE     {m.name}: original found {n} times in {m.path}", flush=True)
                continue
            path.write_text(text.replace(m.original, m.mutated))
            try:
                rc, secs, out = run_tests(root, tests_of(m), args.timeout)
            finally:
                path.write_text(text)
            status = "killed" if rc == 1 else "SURVIVED" if rc == 0 else f"killed(rc={rc})"
            failed = [ln for ln in out.splitlines() if ln.startswith(("FAILED", "ERROR"))]
            results.append((m, status, secs, failed[0] if failed else out.strip().splitlines()[-1:]))
            print(f"{status:9s} {m.name} ({secs:.0f} s){': ' + failed[0] if failed else ''}", flush=True)

    survived = [m.name for m, s, _, _ in results if s == "SURVIVED"]
    stale = [m.name for m, s, _, _ in results if s == "STALE"]
    killed = len(results) - len(survived) - len(stale)
    print(f"\n{killed} killed, {len(survived)} survived, {len(stale)} stale of {len(results)} mutants")
    for name in survived:
        print(f"  survived: {name}")
    for name in stale:
        print(f"  stale:    {name}")
    return 2 if stale else 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
