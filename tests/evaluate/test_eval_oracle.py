"""``nast evaluate``'s JSON against an independent oracle.

The oracle below recomputes every reported figure from the model's own encoders
(``vl.tokenize`` / ``vl.encode_text`` / ``vl.preprocess`` / ``vl.encode_image``), PIL and numpy
only - none of nast.evaluate's scoring or metric functions - and the test asserts that the
stage's JSON holds the same numbers: MCQ hits of both sets (and accuracies, gap, bootstrap CIs,
breakdowns), claim accuracy overall / per foil type / per pair, the shuffled-image control (each
claim scored against another patient's image, subjects in a cycle seeded by ``evaluate.seed``),
R@1/5/10 in both directions (ties against the model, identical reports correct) and AUROC per
condition (Mann-Whitney, ties = 1/2).

World: tests/train/tiny_world.py with 14 images, 8 of them in the test split, three patients with
two test images each (so "another image" and "another patient" differ), a random tiny open_clip
model: the zero-shot base and the same base with a trained NAST adapter (1 epoch).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import polars as pl
import pytest
import tiny_world
import torch
from PIL import Image

from nast.cli import main
from nast.conditions import CONDITIONS
from nast.models import load_model
from nast.train.trainer import load_trained

SPLITS = ["train"] * 4 + ["validate"] * 2 + ["test"] * 8
SUBJECTS = [10, 11, 12, 13, 14, 15, 20, 20, 21, 22, 22, 23, 24, 24]
LETTERS = "ABCD"
MARGIN = 1e-4  # every decision of the oracle must be clearer than this (encode_text vs _trimmed: 1e-6)
METHODS = ("zero_shot", "nast")


@pytest.fixture(scope="module")
def oracle_world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oracle")
    world = tiny_world.build(tmp, splits=SPLITS, subjects=SUBJECTS, train={"epochs": 1},
                             evaluate={"bootstrap": 200, "seed": 0})
    f = world["files"]
    inputs = ["--cohort", f["cohort"], "--benchmark", f["benchmark"], "--contextual", f["contextual"]]
    results = {}
    with pytest.MonkeyPatch.context() as mp:  # module scope: set up before the autouse NAST_TRACKING=0
        mp.setenv("NAST_TRACKING", "0")
        for method in METHODS:
            mdir = tmp / "models" / method
            assert main(["train", "--params", f["params"], "--method", method, *inputs,
                         "--layer-weights", f["layer_weights"], "--out", str(mdir)]) == 0
            out = tmp / "eval" / f"{method}.json"
            assert main(["evaluate", "--params", f["params"], "--method", method, "--model-dir", str(mdir),
                         *inputs, "--out", str(out)]) == 0
            results[method] = json.loads(out.read_text())
    return world, results


# ------------------------------------------------------------------------------------ oracle
def _model(world, method):
    vl = load_model(world["params"]["model"], device="cpu")
    if method != "zero_shot":
        load_trained(vl, world["tmp"] / "models" / method)
    vl.model.eval()
    return vl


@torch.no_grad()
def _texts(vl, texts):
    uniq = sorted(set(texts))
    emb = vl.encode_text(vl.tokenize(uniq)).float().numpy()
    return dict(zip(uniq, emb))


@torch.no_grad()
def _images(vl, paths):
    uniq = sorted(set(paths))
    pixels = []
    for p in uniq:
        with Image.open(p) as im:
            pixels.append(vl.preprocess(im))
    return dict(zip(uniq, vl.encode_image(torch.stack(pixels)).float().numpy()))


def _strict_gap(a, b):
    return abs(float(a) - float(b))


def _ci(values, n_boot, seed):
    values = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))
    return list(np.percentile(values[idx].mean(axis=1), [2.5, 97.5]))


def oracle(vl, world) -> dict:
    f, ev = world["files"], world["params"]["evaluate"]
    n_boot, seed = ev["bootstrap"], ev["seed"]
    out, margins = {}, []

    # ---- MCQ: argmax over the 4 option texts, ties -> the first option
    bench = [r for r in pl.read_parquet(f["benchmark"]).iter_rows(named=True) if r["split"] == "test"]
    bench.sort(key=lambda r: r["dicom_id"])
    txt = _texts(vl, [r[f"{s}_{L}"] for r in bench for s in ("negated", "affirmative") for L in LETTERS])
    img = _images(vl, [r["image_path"] for r in bench])
    hits = {}
    for s in ("negated", "affirmative"):
        h = []
        for r in bench:
            scores = [float(img[r["image_path"]] @ txt[r[f"{s}_{L}"]]) for L in LETTERS]
            top = sorted(scores, reverse=True)
            margins.append(top[0] - top[1])
            h.append(int(np.argmax(scores)) == LETTERS.index(r["correct"]))
        hits[s] = np.array(h)
    neg, aff = hits["negated"], hits["affirmative"]
    out["mcq_hits"] = {"questions": hashlib.sha256("\n".join(r["dicom_id"] for r in bench).encode()).hexdigest()[:16],
                       "negated": "".join("1" if x else "0" for x in neg),
                       "affirmative": "".join("1" if x else "0" for x in aff)}
    out["n_mcq"] = len(bench)
    out["mcq_negated_acc"], out["mcq_affirmative_acc"] = neg.mean(), aff.mean()
    out["mcq_gap"] = aff.mean() - neg.mean()
    out["mcq_negated_acc_ci"] = _ci(neg, n_boot, seed)
    out["mcq_affirmative_acc_ci"] = _ci(aff, n_boot, seed)
    out["mcq_gap_ci"] = _ci(aff.astype(float) - neg, n_boot, seed)  # paired: the same resampled questions
    for key, h in (("mcq_by_n_negated", neg), ("mcq_affirmative_by_n_negated", aff)):
        groups: dict[str, list] = {}
        for r, x in zip(bench, h):
            groups.setdefault(str(list(r[f"option_{r['correct']}"]).count(0)), []).append(x)
        out[key] = {k: float(np.mean(v)) for k, v in groups.items()}
    for key, h in (("mcq_by_condition", neg), ("mcq_affirmative_by_condition", aff)):
        groups = {}
        for r, x in zip(bench, h):
            for c in r["conditions"]:
                groups.setdefault(c, []).append(x)
        out[key] = {k: float(np.mean(v)) for k, v in groups.items()}

    # ---- claims: a group (image, true caption) is right when its caption beats every foil
    ctx = [r for r in pl.read_parquet(f["contextual"]).iter_rows(named=True) if r["split"] == "test"]
    txt = _texts(vl, [r["caption"] for r in ctx] + [r["foil"] for r in ctx])
    img = _images(vl, [r["image_path"] for r in ctx])
    subject_of = {r["image_path"]: r["subject_id"] for r in ctx}

    def claims(image_of):
        wins_by_group, wins_by_type_group, pairs = {}, {}, []
        for r in ctx:
            e = img[image_of(r["image_path"])]
            cap, foil = float(e @ txt[r["caption"]]), float(e @ txt[r["foil"]])
            margins.append(_strict_gap(cap, foil))
            win = cap > foil
            pairs.append(win)
            g = (r["dicom_id"], r["caption"])
            wins_by_group.setdefault(g, []).append(win)
            wins_by_type_group.setdefault((r["foil_type"], g), []).append(win)
        by_type: dict[str, list] = {}
        for (t, _g), w in wins_by_type_group.items():
            by_type.setdefault(t, []).append(all(w))
        return {"claim_acc": float(np.mean([all(w) for w in wins_by_group.values()])),
                "claim_pair_acc": float(np.mean(pairs)),
                "claim_acc_by_foil_type": {t: float(np.mean(v)) for t, v in by_type.items()},
                "n_claim_groups": len(wins_by_group), "n_claim_pairs": len(pairs)}

    out.update(claims(lambda p: p))
    # the control: patients in a cycle (order seeded by evaluate.seed); the k-th image of a patient
    # is replaced by the (k mod n)-th image of the next patient
    per_subject: dict[int, list[str]] = {}
    for p, s in sorted(subject_of.items(), key=lambda t: (t[1], t[0])):
        per_subject.setdefault(s, []).append(p)
    subjects = sorted(per_subject)
    cycle = [subjects[i] for i in np.random.default_rng(seed).permutation(len(subjects))]
    other = {}
    for j, s in enumerate(cycle):
        nxt = per_subject[cycle[(j + 1) % len(cycle)]]
        for k, p in enumerate(per_subject[s]):
            other[p] = nxt[k % len(nxt)]
    assert all(subject_of[a] != subject_of[b] for a, b in other.items())
    shuffled = claims(other.__getitem__)
    out["claim_acc_image_shuffled"] = shuffled["claim_acc"]
    out["claim_acc_by_foil_type_image_shuffled"] = shuffled["claim_acc_by_foil_type"]
    out["_image_shuffled"] = other

    # ---- retrieval: one image per test study (smallest dicom_id), its report = impression, then findings
    cohort = [r for r in pl.read_parquet(f["cohort"]).iter_rows(named=True) if r["split"] == "test"]
    by_study: dict[int, dict] = {}
    for r in sorted(cohort, key=lambda r: (r["study_id"], r["dicom_id"])):
        by_study.setdefault(r["study_id"], r)
    studies = [by_study[s] for s in sorted(by_study)]
    reports = [" ".join(x for x in (r["impression"], r["findings"]) if x) for r in studies]
    out["_reports"] = reports
    txt = _texts(vl, reports)
    img = _images(vl, [r["image_path"] for r in studies])
    sim = np.array([[float(img[r["image_path"]] @ txt[t]) for t in reports] for r in studies])
    same = np.array([[a == b for b in reports] for a in reports])
    retrieval = {}
    for name, m in (("i2t", sim), ("t2i", sim.T)):
        ranks = []
        for q in range(len(m)):
            best = max(m[q, j] for j in range(len(m)) if same[q, j])
            ranks.append(sum(1 for j in range(len(m)) if not same[q, j] and m[q, j] >= best))
            margins.extend(abs(m[q, j] - best) for j in range(len(m)) if not same[q, j])
        for k in (1, 5, 10):
            retrieval[f"{name}_r{k}"] = float(np.mean([r < k for r in ranks]))
    out["retrieval"] = retrieval
    out["retrieval_r5"] = (retrieval["i2t_r5"] + retrieval["t2i_r5"]) / 2
    out["n_retrieval"] = len(studies)

    # ---- AUROC: score = cos(img, "finding") - cos(img, "no finding"); labels 1 vs 0 only
    txt = _texts(vl, [t for c in CONDITIONS for t in (c.lower(), f"no {c.lower()}")])
    img = _images(vl, [r["image_path"] for r in cohort])
    auroc = {}
    for c in CONDITIONS:
        rows = [r for r in cohort if r[c] in (0, 1)]
        score = {r["dicom_id"]: float(img[r["image_path"]] @ (txt[c.lower()] - txt[f"no {c.lower()}"])) for r in rows}
        pos = [score[r["dicom_id"]] for r in rows if r[c] == 1]
        negs = [score[r["dicom_id"]] for r in rows if r[c] == 0]
        if pos and negs:
            auroc[c] = float(np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in negs]))
    out["auroc"] = auroc
    out["auroc_mean"] = float(np.mean(list(auroc.values())))
    out["n_auroc_images"] = len(cohort)
    out["_margin"] = min(margins)
    return out


@pytest.fixture(scope="module")
def oracles(oracle_world):
    world, _ = oracle_world
    return {m: oracle(_model(world, m), world) for m in METHODS}


# ------------------------------------------------------------------------------------- tests
def _same(got, want, path=""):
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (path, got, want)
        for k in want:
            _same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want)):
            _same(a, b, f"{path}[{i}]")
    elif isinstance(want, str):
        assert got == want, path
    else:
        assert got == pytest.approx(float(want), abs=1e-9), (path, got, want)


@pytest.mark.parametrize("method", METHODS)
def test_eval_json_equals_the_oracle(oracle_world, oracles, method):
    got, want = oracle_world[1][method], oracles[method]
    assert want["_margin"] > MARGIN, "the tiny world has a near-tie; the comparison would not be exact"
    assert got["method"] == method
    for key, value in want.items():
        if not key.startswith("_"):
            _same(got[key], value, key)


def test_the_world_tells_the_figures_apart(oracles):
    """Preconditions that make the comparison above bite: the negated and affirmative sets answer
    differently, the control's numbers differ from the true-image ones, the adapter changed the
    answers, and not every figure is 0 or 1 (i2t vs t2i and ties: tests/evaluate/test_known_answers.py)."""
    zs, tr = oracles["zero_shot"], oracles["nast"]
    assert zs["mcq_hits"]["negated"] != zs["mcq_hits"]["affirmative"]
    assert (zs["claim_acc_image_shuffled"], zs["claim_acc_by_foil_type_image_shuffled"]) != \
        (zs["claim_acc"], zs["claim_acc_by_foil_type"])
    for o in (zs, tr):
        assert o["n_mcq"] == 8 and o["n_claim_groups"] == 16 and o["n_retrieval"] == 8
    assert 0 < zs["retrieval"]["i2t_r1"] < 1 or 0 < zs["retrieval"]["t2i_r1"] < 1
    assert any(0 < v < 1 for v in zs["auroc"].values())
    # the trained adapter (it learned a text prior: every caption wins on any image) moved the figures
    assert (zs["mcq_hits"], zs["claim_pair_acc"], zs["auroc"]) != (tr["mcq_hits"], tr["claim_pair_acc"], tr["auroc"])


def test_oracle_inputs_match_the_stage_inputs(oracle_world, oracles):
    """The oracle's report texts are the stage's (impression first, then the findings sentences),
    and its control pairs every claim with another patient's image - the same pairing as the stage."""
    from nast.evaluate.evaluation import retrieval_pairs
    from nast.evaluate.scoring import other_subject_images
    from nast.models.data import ReportCaptions

    world = oracle_world[0]
    f = world["files"]
    vl = _model(world, "zero_shot")
    pairs = retrieval_pairs(pl.read_parquet(f["cohort"]))
    assert ReportCaptions(vl, pairs["findings"].to_list(), pairs["impression"].to_list(),
                          "report").captions(None) == oracles["zero_shot"]["_reports"]
    ctx = pl.read_parquet(f["contextual"]).filter(pl.col("split") == "test")
    assert other_subject_images(ctx, world["params"]["evaluate"]["seed"]) == oracles["zero_shot"]["_image_shuffled"]
