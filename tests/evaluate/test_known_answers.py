"""``nast evaluate``'s core on a model whose embeddings are written by hand (tests/evaluate/stub_model.py):
every reported number below is known by construction, not recomputed.

Four test images, image k = basis vector e_k (dimension 8); subjects 1, 1, 2, 3 (images 0 and 1 are
the same patient).

* MCQ: the affirmative set always puts the correct option on the image's own vector; the negated
  set does so for images 0 and 2 and points a wrong letter at the image for 1 and 3 -> negated
  hits 1010, affirmative 1111, gap +0.5.
* Claims: a caption points at the images of its own patient, its polarity / laterality foils at the
  images of every other patient; image 3 also has a severity foil equal to its caption (a tie is
  a loss). True images: claim_acc 3/4, by type polarity 1, laterality 1, severity 0, pairs 8/9.
  Any other patient's image: every claim loses (0); the same patient's other image would win.
* Retrieval: reports r_k = e_k except r_3 = (e_2 + e_3)/sqrt 2: i2t R@1 = 1; report 3 ties between
  images 2 and 3, and ties count against the model: t2i R@1 = 3/4.
* AUROC: "edema" points at images 0 and 1 (labels 1 1 0 0) -> 1; "no pneumothorax" at them
  (labels 1 1 0 0) -> 0; atelectasis scores all 0 -> 0.5; Cardiomegaly labels 1, -1, null, 0 with
  the prompt at the uncertain image -> only images 0 and 3 count, tied -> 0.5; Lung Opacity has
  one class only -> no value.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import pytest
from stub_model import StubVL, basis, grey_images, unit

from nast.conditions import CHEXPERT_COLUMNS, CONDITIONS
from nast.evaluate import scoring as S
from nast.evaluate.evaluation import evaluate

DIM = 8
E = [basis(k, DIM) for k in range(DIM)]
ZERO = np.zeros(DIM)
LEVELS = [10, 60, 110, 160]
SUBJECTS = [1, 1, 2, 3]
LETTERS = "ABCD"
CONDS = [["Edema", "Pneumothorax", "Atelectasis"], ["Edema", "Fracture", "Cardiomegaly"],
         ["Pneumothorax", "Fracture", "Atelectasis"], ["Cardiomegaly", "Edema", "Fracture"]]
TRUE = [[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 1]]  # negated conditions in the answer: 2, 1, 3, 1
LABELS = {"Edema": [1, 1, 0, 0], "Pneumothorax": [1, 1, 0, 0], "Atelectasis": [1, 0, 1, 0],
          "Cardiomegaly": [1, -1, None, 0], "Lung Opacity": [1, 1, 1, 1]}


def _tables(paths):
    cohort, bench, ctx = [], [], []
    texts: dict[str, np.ndarray] = {}
    for k, p in enumerate(paths):
        labels = {c: None for c in CHEXPERT_COLUMNS}
        labels.update({c: v[k] for c, v in LABELS.items()})
        cohort.append({"dataset": "demo", "dicom_id": f"d{k}", "subject_id": SUBJECTS[k], "study_id": 100 + k,
                       "view": "PA", "split": "test", "image_path": p, "report_path": None, "findings": None,
                       "impression": f"report {k}.", **labels})
        texts[f"report {k}."] = E[k] if k < 3 else unit(E[2], E[3])
        correct = LETTERS[k]
        others = iter([[0, 1, 1], [1, 1, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1]])
        vectors = {}
        for L in LETTERS:
            v = TRUE[k] if L == correct else next(o for o in others if o != TRUE[k])
            vectors[L] = v
        wrong = LETTERS[(k + 1) % 4]
        for L in LETTERS:
            texts[f"aff {k} {L}"] = E[k] if L == correct else E[7]
            points_at_image = (L == correct) if k in (0, 2) else (L == wrong)
            texts[f"neg {k} {L}"] = E[k] if points_at_image else E[7]
        bench.append({"subject_id": SUBJECTS[k], "study_id": 100 + k, "dicom_id": f"d{k}", "image_path": p,
                      "split": "test", "conditions": CONDS[k], "true_labels": TRUE[k], "correct": correct,
                      **{f"option_{L}": vectors[L] for L in LETTERS}, "question": "q?",
                      **{f"negated_{L}": f"neg {k} {L}" for L in LETTERS},
                      **{f"affirmative_{L}": f"aff {k} {L}" for L in LETTERS},
                      "mcq_backend": "template", "verified": True, "affirm_verified": True})
        same = [E[j] for j in range(4) if SUBJECTS[j] == SUBJECTS[k]]
        other = [E[j] for j in range(4) if SUBJECTS[j] != SUBJECTS[k]]
        texts[f"cap {k}"] = unit(*same)
        foils = [(f"pol {k}", "polarity", unit(*other)), (f"lat {k}", "laterality", unit(*other))]
        if k == 3:
            foils.append((f"sev {k}", "severity", unit(*same)))  # = the caption: a tie, never a win
        for text, kind, vec in foils:
            texts[text] = vec
            ctx.append({"study_id": 100 + k, "subject_id": SUBJECTS[k], "dicom_id": f"d{k}", "image_path": p,
                        "split": "test", "claim_id": f"c{k}", "finding": "edema", "caption": f"cap {k}",
                        "foil": text, "foil_type": kind})
    for c in CONDITIONS:
        texts.setdefault(c.lower(), ZERO)
        texts.setdefault(f"no {c.lower()}", ZERO)
    texts["edema"] = unit(E[0], E[1])
    texts["no pneumothorax"] = unit(E[0], E[1])
    texts["cardiomegaly"] = E[1]
    cohort = pl.DataFrame(cohort).with_columns([pl.col(c).cast(pl.Int8) for c in CHEXPERT_COLUMNS])
    bench = pl.DataFrame(bench).with_columns(
        [pl.col(c).cast(pl.List(pl.Int8)) for c in ("true_labels", *[f"option_{L}" for L in LETTERS])])
    return cohort, bench, pl.DataFrame(ctx), texts


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    paths = grey_images(tmp_path_factory.mktemp("grey"), LEVELS)
    cohort, bench, ctx, texts = _tables(paths)
    vl = StubVL(texts, {g: E[k] for k, g in enumerate(LEVELS)})
    # shuffled rows: the stage sorts what it needs itself
    out = evaluate(vl, cohort.reverse(), bench.reverse(), ctx.reverse(), {"bootstrap": 200, "seed": 0})
    return out, vl, cohort, bench, ctx


def test_mcq_known_answers(known):
    out = known[0]
    assert out["n_mcq"] == 4
    assert out["mcq_hits"] == {"questions": hashlib.sha256(b"d0\nd1\nd2\nd3").hexdigest()[:16],
                               "negated": "1010", "affirmative": "1111"}
    assert out["mcq_negated_acc"] == 0.5 and out["mcq_affirmative_acc"] == 1.0 and out["mcq_gap"] == 0.5
    assert out["mcq_by_n_negated"] == {"1": 0.0, "2": 1.0, "3": 1.0}
    assert out["mcq_affirmative_by_n_negated"] == {"1": 1.0, "2": 1.0, "3": 1.0}
    assert out["mcq_by_condition"] == pytest.approx(
        {"Atelectasis": 1.0, "Cardiomegaly": 0.0, "Edema": 1 / 3, "Fracture": 1 / 3, "Pneumothorax": 1.0})
    assert out["mcq_affirmative_by_condition"] == {c: 1.0 for c in out["mcq_by_condition"]}
    assert out["mcq_affirmative_acc_ci"] == [1.0, 1.0]
    lo, hi = out["mcq_negated_acc_ci"]
    assert 0.0 <= lo < 0.5 < hi <= 1.0
    glo, ghi = out["mcq_gap_ci"]  # paired: per-question gaps are 0 or 1
    assert 0.0 <= glo < 0.5 < ghi <= 1.0


def test_claims_and_the_shuffled_control_known_answers(known):
    out = known[0]
    assert out["n_claim_groups"] == 4 and out["n_claim_pairs"] == 9
    assert out["claim_acc"] == 0.75
    assert out["claim_pair_acc"] == pytest.approx(8 / 9)
    assert out["claim_acc_by_foil_type"] == {"laterality": 1.0, "polarity": 1.0, "severity": 0.0}
    # every claim against another patient's image loses; against its own patient's it would win
    assert out["claim_acc_image_shuffled"] == 0.0
    assert out["claim_acc_by_foil_type_image_shuffled"] == {"laterality": 0.0, "polarity": 0.0, "severity": 0.0}


def test_retrieval_and_auroc_known_answers(known):
    out, vl = known[0], known[1]
    assert {f"report {k}." for k in range(4)} <= vl.encoded  # the report texts are what retrieval scored
    assert out["n_retrieval"] == 4
    assert out["retrieval"] == {"i2t_r1": 1.0, "i2t_r5": 1.0, "i2t_r10": 1.0,
                                "t2i_r1": 0.75, "t2i_r5": 1.0, "t2i_r10": 1.0}
    assert out["retrieval_r5"] == 1.0
    assert out["auroc"] == {"Edema": 1.0, "Pneumothorax": 0.0, "Atelectasis": 0.5, "Cardiomegaly": 0.5}
    assert out["auroc_mean"] == 0.5 and out["n_auroc_images"] == 4


def test_shuffled_mapping_and_validation_metrics_known_answers(known):
    _, vl, _, bench, ctx = known
    mapping = S.other_subject_images(ctx, seed=0)
    subject = dict(zip(ctx["image_path"], ctx["subject_id"]))
    assert set(mapping) == set(subject) and all(subject[a] != subject[b] for a, b in mapping.items())
    # the trainer's per-epoch validation scores the same way (validate split)
    val = S.validation_metrics(vl, bench.with_columns(split=pl.lit("validate")),
                               ctx.with_columns(split=pl.lit("validate")))
    assert val == {"val_mcq_negated_acc": 0.5, "val_mcq_affirmative_acc": 1.0, "val_claim_acc": 0.75}
    none = S.validation_metrics(vl, bench, ctx)  # nothing in the validate split
    assert all(v != v for v in none.values())
