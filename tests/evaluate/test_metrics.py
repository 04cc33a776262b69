"""Metric functions on hand-computable inputs."""

import math

import numpy as np
import polars as pl
import pytest

from nast.evaluate import metrics as M


def test_mcq_correct_and_ties():
    scores = np.array([[0.1, 0.9, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.3]])
    hits = M.mcq_correct(scores, [1, 1, 3])
    assert hits.tolist() == [True, False, True]  # a tie is not resolved in favour of the answer
    assert M.accuracy(hits) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        M.mcq_correct(scores, [1, 1])


def test_bootstrap_ci():
    assert M.bootstrap_ci(np.ones(10, bool), 200, 0) == (1.0, 1.0)
    assert M.bootstrap_ci(np.array([1, 0, 1, 0]), 200, 0, paired_with=np.array([1, 0, 1, 0])) == (0.0, 0.0)
    lo, hi = M.bootstrap_ci(np.array([1, 0] * 50), 500, 0)
    assert 0.35 < lo < 0.5 < hi < 0.65
    assert M.bootstrap_ci(np.array([1, 0] * 50), 500, 0) == (lo, hi)  # seeded
    assert all(math.isnan(v) for v in M.bootstrap_ci(np.ones(3), 0, 0))


def test_grouped_accuracy_with_list_keys():
    got = M.grouped_accuracy([True, False, True], [["Edema", "Fracture"], ["Edema"], ["Fracture"]])
    assert got == {"Edema": 0.5, "Fracture": 1.0}
    assert M.grouped_accuracy([True, False, False], [0, 0, 2]) == {"0": 0.5, "2": 0.0}
    assert M.n_negated_in_option([1, 0, 0]) == 2


def test_claim_accuracy_definitions():
    cap = [0.9, 0.9, 0.5]
    foil = [0.1, 0.95, 0.2]
    group = ["g1", "g1", "g2"]
    types = ["polarity", "laterality", "polarity"]
    got = M.claim_accuracy(cap, foil, group, types)
    assert got["claim_acc"] == 0.5  # g1 loses to its laterality foil
    assert got["claim_pair_acc"] == pytest.approx(2 / 3)
    assert got["claim_acc_by_foil_type"] == {"laterality": 0.0, "polarity": 1.0}
    assert got["n_claim_groups"] == 2 and got["n_claim_pairs"] == 3


def test_recall_at_k_hand_made():
    sim = np.array([[0.9, 0.1, 0.2],
                    [0.8, 0.5, 0.1],   # true item ranked 2nd
                    [0.3, 0.3, 0.3]])  # all tied -> pessimistic: rank 2
    r = M.recall_at_k(sim, ks=(1, 2, 3))
    assert r == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}
    pos = np.zeros((3, 3), bool)
    pos[1, 0] = True  # item 0 has the identical text -> counts as correct for query 1
    assert M.recall_at_k(sim, ks=(1,), positives=pos)[1] == pytest.approx(2 / 3)
    ret = M.retrieval_metrics(sim)
    assert set(ret) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}
    assert ret["t2i_r1"] == 1.0  # columns: each text scores its own image highest (0.9, 0.5, 0.3)
    assert ret["i2t_r1"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        M.recall_at_k(np.zeros((2, 3)))


def test_auroc():
    assert M.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert M.auroc([0.1, 0.2], [1, 1]) is None


def test_hits_round_trip_and_question_digest():
    hits = np.array([True, False, False, True, True])
    assert M.encode_hits(hits) == "10011"
    assert np.array_equal(M.decode_hits("10011"), hits)
    with pytest.raises(ValueError):
        M.decode_hits("10a")
    assert M.question_digest(["a", "b"]) == M.question_digest(["a", "b"])
    assert M.question_digest(["a", "b"]) != M.question_digest(["b", "a"])


def test_paired_difference_hand_computed():
    a = np.array([1, 1, 1, 0, 1, 1, 0, 1], dtype=bool)
    b = np.array([0, 1, 0, 0, 1, 0, 0, 1], dtype=bool)
    diff, lo, hi = M.paired_difference(a, b, n_boot=2000, seed=0)
    assert diff == pytest.approx(6 / 8 - 3 / 8)
    # per-question differences are 1 on 3 of 8 questions, 0 elsewhere: the CI stays in [0, 1]
    assert 0 <= lo < diff < hi <= 1
    same = M.paired_difference(a, a, n_boot=200, seed=0)
    assert same == (0.0, 0.0, 0.0)  # paired: identical answers have no spread at all
    with pytest.raises(ValueError, match="same questions"):
        M.paired_difference(a, b[:-1], n_boot=10, seed=0)


def test_report_pairs_only_the_same_questions(caplog):
    from nast.report import paired_table

    def ev(name, neg, aff, questions="q1"):
        return {"method": name, "mcq_hits": {"questions": questions, "negated": neg, "affirmative": aff}}

    evals = [ev("zero_shot", "0011", "1111"), ev("lora_uniform", "0111", "1110"), ev("nast", "1111", "1111"),
             ev("other_set", "1111", "1111", questions="q2"), {"method": "old_json"}]
    table = paired_table(evals, n_boot=100, seed=0)
    assert set(table.select("method", "reference").rows()) == {
        ("lora_uniform", "zero_shot"), ("nast", "zero_shot"), ("nast", "lora_uniform")}
    row = table.filter((table["method"] == "nast") & (table["reference"] == "zero_shot")).row(0, named=True)
    assert row["negated_diff"] == pytest.approx(1.0 - 0.5) and row["gap_diff"] == pytest.approx(0.0 - 0.5)
    row = table.filter((table["method"] == "nast") & (table["reference"] == "lora_uniform")).row(0, named=True)
    assert row["negated_diff"] == pytest.approx(0.25) and row["gap_diff"] == pytest.approx(0.0 - 0.0)
    assert "other_set has no per-question hits" in caplog.text


def test_other_subject_images_never_maps_to_the_same_patient():
    from nast.evaluate.scoring import other_subject_images

    df = pl.DataFrame({"subject_id": [1, 1, 2, 3, 3, 3, 4], "image_path": ["a1", "a2", "b1", "c1", "c2", "c3", "d1"]})
    df = pl.concat([df, df])  # several claims per image
    subject = dict(zip(df["image_path"], df["subject_id"]))
    m = other_subject_images(df, seed=0)
    assert set(m) == set(subject)  # every image is replaced
    assert all(subject[src] != subject[dst] for src, dst in m.items())
    assert m == other_subject_images(df, seed=0)  # seeded
    assert any(other_subject_images(df, seed=s) != m for s in range(1, 6))
    assert other_subject_images(df.filter(pl.col("subject_id") == 3), seed=0) == {}
