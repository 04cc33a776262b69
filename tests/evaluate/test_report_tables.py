"""``nast report``'s tables from hand-written evaluation JSONs: every cell below is written out by
hand (hits strings chosen so the paired differences are plain fractions)."""

from __future__ import annotations

import json
import logging
import math

import polars as pl
import pytest

from nast.report import beta_sweep_table, build, load_evals

RET = {"i2t_r1": 0.1, "i2t_r5": 0.3, "i2t_r10": 0.5, "t2i_r1": 0.2, "t2i_r5": 0.4, "t2i_r10": 0.6}


def _eval(method, neg, aff, *, claim, foil, shuffled=None, hits=True, ret=0.35, cond=None):
    acc = lambda h: h.count("1") / len(h)  # noqa: E731
    e = {"method": method, "mcq_negated_acc": acc(neg), "mcq_affirmative_acc": acc(aff),
         "mcq_gap": acc(aff) - acc(neg), "mcq_negated_acc_ci": [acc(neg) - 0.1, acc(neg) + 0.1],
         "mcq_affirmative_acc_ci": [acc(aff) - 0.2, acc(aff)], "mcq_gap_ci": [acc(aff) - acc(neg) - 0.3, 0.9],
         "claim_acc": claim, "claim_pair_acc": claim + 0.05, "claim_acc_by_foil_type": foil,
         "retrieval": RET, "retrieval_r5": ret, "auroc_mean": 0.55, "n_mcq": len(neg),
         "mcq_by_condition": cond or {"Edema": acc(neg)}, "mcq_affirmative_by_condition": {"Edema": acc(aff)},
         "mcq_by_n_negated": {"1": acc(neg)}, "mcq_affirmative_by_n_negated": {"1": acc(aff)}}
    if shuffled is not None:
        e["claim_acc_image_shuffled"] = shuffled[0]
        e["claim_acc_by_foil_type_image_shuffled"] = shuffled[1]
    if hits:
        e["mcq_hits"] = {"questions": "q4", "negated": neg, "affirmative": aff}
    return e


EVALS = [
    _eval("nast-beta2.0", "1100", "1100", claim=0.6, foil={"polarity": 0.6}, hits=False, ret=0.2),
    _eval("nast", "1110", "1110", claim=0.7, foil={"polarity": 0.8, "laterality": 0.6},
          shuffled=(0.3, {"polarity": 0.2}), cond={"Edema": 0.75, "Fracture": 0.5}),
    _eval("zero_shot", "1000", "1110", claim=0.5, foil={"polarity": 0.5, "laterality": 0.75},
          shuffled=(0.45, {"polarity": 0.4})),
    _eval("nast-beta0.5", "1000", "1000", claim=0.55, foil={"polarity": 0.5}, hits=False, ret=0.3),
    _eval("lora_uniform", "1100", "1110", claim=0.6, foil={"polarity": 0.7, "laterality": 0.7}),
    _eval("nast-beta10.0", "1111", "1111", claim=0.65, foil={"polarity": 0.9}, hits=False, ret=0.1),
]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    for e in EVALS:
        (tmp / "eval").mkdir(exist_ok=True)
        (tmp / "eval" / f"{e['method']}.json").write_text(json.dumps(e))
    evals = load_evals(tmp / "eval")
    build(evals, {}, tmp / "tables", tmp / "plots", n_boot=200, seed=0)
    return tmp / "tables", evals


def test_methods_in_order(tables):
    _, evals = tables
    # the beta runs by the value of beta (10 after 2), not by name
    assert [e["method"] for e in evals] == ["zero_shot", "lora_uniform", "nast", "nast-beta0.5", "nast-beta2.0",
                                            "nast-beta10.0"]


def test_summary_cells(tables):
    out, _ = tables
    s = {r["method"]: r for r in pl.read_csv(out / "summary.csv").iter_rows(named=True)}
    assert list(s) == ["zero_shot", "lora_uniform", "nast", "nast-beta0.5", "nast-beta2.0", "nast-beta10.0"]
    want = {  # method: negated, affirmative, gap, gap_closed (1 - gap / zero-shot gap 0.5), claim, r5
        "zero_shot": (0.25, 0.75, 0.5, 0.0, 0.5, 0.35),
        "lora_uniform": (0.5, 0.75, 0.25, 0.5, 0.6, 0.35),
        "nast": (0.75, 0.75, 0.0, 1.0, 0.7, 0.35),
        "nast-beta0.5": (0.25, 0.25, 0.0, 1.0, 0.55, 0.3),
        "nast-beta2.0": (0.5, 0.5, 0.0, 1.0, 0.6, 0.2),
        "nast-beta10.0": (1.0, 1.0, 0.0, 1.0, 0.65, 0.1),
    }
    for m, (neg, aff, gap, closed, claim, r5) in want.items():
        r = s[m]
        got = (r["mcq_negated_acc"], r["mcq_affirmative_acc"], r["mcq_gap"], r["gap_closed"], r["claim_acc"],
               r["retrieval_r5"])
        assert got == pytest.approx((neg, aff, gap, closed, claim, r5), abs=1e-9), m
        assert (r["mcq_negated_acc_lo"], r["mcq_negated_acc_hi"]) == pytest.approx((neg - 0.1, neg + 0.1)), m
        assert (r["mcq_affirmative_acc_lo"], r["mcq_affirmative_acc_hi"]) == pytest.approx((aff - 0.2, aff)), m
        assert (r["mcq_gap_lo"], r["mcq_gap_hi"]) == pytest.approx((gap - 0.3, 0.9)), m
        assert r["claim_pair_acc"] == pytest.approx(claim + 0.05)
        assert [r[k] for k in RET] == pytest.approx(list(RET.values())) and r["auroc_mean"] == 0.55
        assert r["n_mcq"] == 4
    assert (s["zero_shot"]["claim_acc_image_shuffled"], s["zero_shot"]["claim_polarity_image_shuffled"]) == (0.45, 0.4)
    assert (s["nast"]["claim_acc_image_shuffled"], s["nast"]["claim_polarity_image_shuffled"]) == (0.3, 0.2)
    assert s["lora_uniform"]["claim_acc_image_shuffled"] is None  # not in that JSON: empty, not 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nast"] == pytest.approx({"mcq_negated_acc": 0.75, "mcq_affirmative_acc": 0.75, "mcq_gap": 0.0,
                                             "claim_acc": 0.7, "retrieval_r5": 0.35, "gap_closed": 1.0})
    assert metrics["zero_shot"]["gap_closed"] == 0.0 and metrics["lora_uniform"]["gap_closed"] == 0.5

    md = (out / "summary.md").read_text()
    assert "| nast | 0.750 | 0.750 | 0.000 |" in md and "| zero_shot | 0.250 | 0.750 | 0.500 |" in md


def test_long_tables(tables):
    out, _ = tables
    cond = pl.read_csv(out / "per_condition.csv")
    rows = cond.filter(pl.col("method") == "nast").select("condition", "negated_acc", "affirmative_acc").rows()
    assert rows[0] == ("Edema", 0.75, 0.75) and rows[1][:2] == ("Fracture", 0.5) and math.isnan(rows[1][2])
    assert len(rows) == 2
    assert cond.filter(pl.col("method") == "zero_shot").select("negated_acc", "affirmative_acc").row(0) == (0.25, 0.75)
    by_n = pl.read_csv(out / "by_n_negated.csv", schema_overrides={"n_negated": pl.Utf8})
    assert by_n.filter(pl.col("method") == "lora_uniform").select(
        "n_negated", "negated_acc", "affirmative_acc").rows() == [("1", 0.5, 0.75)]
    foil = pl.read_csv(out / "by_foil_type.csv")
    assert sorted(foil.filter(pl.col("method") == "zero_shot").select("foil_type", "claim_acc").rows()) == [
        ("laterality", 0.75), ("polarity", 0.5)]
    assert foil.height == 2 + 2 + 2 + 1 + 1 + 1
    sweep = pl.read_csv(out / "beta_sweep.csv")
    want = [(0.5, "nast-beta0.5", 0.25, 0.0, 0.3), (2.0, "nast-beta2.0", 0.5, 0.0, 0.2),
            (10.0, "nast-beta10.0", 1.0, 0.0, 0.1)]
    assert sweep.select("beta", "method", "mcq_negated_acc", "mcq_gap", "retrieval_r5").rows() == want
    # the sweep is ordered by beta whatever order the evaluations come in
    unsorted = beta_sweep_table(EVALS[::-1])
    assert unsorted.select("beta", "method", "mcq_negated_acc", "mcq_gap", "retrieval_r5").rows() == want


def test_paired_differences(tables, caplog):
    out, _ = tables
    paired = {(r["method"], r["reference"]): r for r in pl.read_csv(out / "paired.csv").iter_rows(named=True)}
    # per-question gaps (aff - neg): zero_shot 0110 (0.5), lora_uniform 0010 (0.25), nast 0000 (0)
    want = {("lora_uniform", "zero_shot"): (0.25, -0.25), ("nast", "zero_shot"): (0.5, -0.5),
            ("nast", "lora_uniform"): (0.25, -0.25)}
    assert set(paired) == set(want)  # the beta runs have no per-question hits: not paired
    for key, (nd, gd) in want.items():
        r = paired[key]
        assert (r["negated_diff"], r["gap_diff"], r["n_mcq"]) == pytest.approx((nd, gd, 4)), key
        assert r["negated_diff_lo"] <= r["negated_diff"] <= r["negated_diff_hi"]
        assert r["gap_diff_lo"] <= r["gap_diff"] <= r["gap_diff_hi"]


def test_unpaired_methods_are_named_in_a_warning(tables, tmp_path, caplog):
    _, evals = tables
    with caplog.at_level(logging.WARNING, logger="nast.report"):
        build(evals, {}, tmp_path / "t", tmp_path / "p", n_boot=10, seed=0)
    for m in ("nast-beta0.5", "nast-beta2.0", "nast-beta10.0"):
        assert f"{m} has no per-question hits" in caplog.text


def test_only_the_named_methods_enter_the_tables(tmp_path):
    """The DAG passes its methods: a stale JSON of a dropped method, or a copy of lora_uniform's
    kept beside it (another seed), stays out of the tables and cannot become the paired reference."""
    from nast.errors import StageError

    d = tmp_path / "eval"
    d.mkdir()
    for e in EVALS:
        (d / f"{e['method']}.json").write_text(json.dumps(e))
    other_seed = _eval("lora_uniform", "0000", "0000", claim=0.1, foil={"polarity": 0.1})
    (d / "lora_uniform-s1.json").write_text(json.dumps(other_seed))       # a copy: says lora_uniform
    (d / "full_ft.json").write_text(json.dumps(_eval("full_ft", "1111", "1111", claim=0.9, foil={})))  # dropped
    named = ["zero_shot", "lora_uniform", "nast"]
    evals = load_evals(d, named)
    assert [e["method"] for e in evals] == named
    build(evals, {}, tmp_path / "tables", tmp_path / "plots", n_boot=200, seed=0)
    assert pl.read_csv(tmp_path / "tables" / "summary.csv")["method"].to_list() == named
    paired = pl.read_csv(tmp_path / "tables" / "paired.csv")
    row = paired.filter(method="nast", reference="lora_uniform").row(0, named=True)
    assert row["negated_diff"] == pytest.approx(0.25)                       # 1110 - 1100, not 1110 - 0000
    with pytest.raises(StageError, match="lora_uniform-s1.json: says method 'lora_uniform'"):
        load_evals(d)  # no list: every JSON, each named after its method
    with pytest.raises(StageError, match=r"not found for --methods: .*dpo\.json"):
        load_evals(d, [*named, "dpo"])
