"""Template backend of `nast mcq` / `nast affirm`: verified options, cue-free rewrites, determinism."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
from conftest import CHECKER_NORMAL_CONDITIONS, make_permutations

from nast.text import polarity, templates
from nast.text.affirm import build_benchmark
from nast.text.mcq import build_mcq

LETTERS = "ABCD"

#: An INDEPENDENT negation-cue list (not taken from the polarity module): words/phrases that make a
#: statement negative in English radiology text.
INDEPENDENT_CUES = (
    "no", "not", "without", "absent", "absence", "negative", "free", "lack", "lacking", "lacks",
    "none", "never", "neither", "nor", "denies", "deny", "exclude", "excluded", "ruled out",
    "resolved", "unremarkable for", "clear of", "n't", "cannot", "non",
)
_CUE_RE = re.compile(r"\b(" + "|".join(re.escape(c) for c in INDEPENDENT_CUES) + r")\b", re.I)


@pytest.fixture(scope="module")
def mcq_small(base_params):
    perm = make_permutations(24, seed=3)
    return perm, *build_mcq(perm, base_params)


def test_every_template_option_verified(mcq_small):
    perm, mcq, quarantine, summary = mcq_small
    assert quarantine.height == 0 and mcq.height == perm.height == 24
    assert summary["options_checked"] == 96 and summary["share_options_verified"] == 1.0
    assert mcq["verified"].all()
    for row in mcq.iter_rows(named=True):
        assert not any(c.lower() in row["question"].lower() for c in row["conditions"])
        for L in LETTERS:
            found = polarity.check(row[f"negated_{L}"], row["conditions"])
            want = {c: ("present" if v else "absent") for c, v in zip(row["conditions"], row[f"option_{L}"])}
            assert found == want, (row[f"negated_{L}"], found, want)
            if 0 in row[f"option_{L}"]:
                assert _CUE_RE.search(row[f"negated_{L}"]), row[f"negated_{L}"]


def test_mcq_columns_follow_contract(mcq_small):
    perm, mcq, _, _ = mcq_small
    assert mcq.columns[: len(perm.columns)] == perm.columns
    for col in ["question", *[f"negated_{L}" for L in LETTERS], "mcq_backend", "verified"]:
        assert col in mcq.columns
    assert mcq["mcq_backend"].unique().to_list() == ["template"]
    assert mcq.select(perm.columns).equals(perm.sort(["subject_id", "study_id"]))


def test_same_seed_same_table_different_seed_different_phrasing(base_params, mcq_small):
    perm, mcq, _, _ = mcq_small
    again, _, _ = build_mcq(perm, base_params)
    assert again.equals(mcq)
    other = {**base_params, "mcq": {**base_params["mcq"], "seed": 7}}
    diff, _, _ = build_mcq(perm, other)
    texts = lambda df: df.select([f"negated_{L}" for L in LETTERS]).to_numpy().ravel().tolist()  # noqa: E731
    changed = sum(a != b for a, b in zip(texts(mcq), texts(diff)))
    assert changed > len(texts(mcq)) // 2
    assert diff["verified"].all()


def test_templates_cover_the_connecting_patterns(base_params):
    perm = make_permutations(60, seed=11)
    mcq, q, _ = build_mcq(perm, base_params)
    assert q.height == 0
    used = {p["pattern"] for s in mcq["negated_parts"] for p in json.loads(s).values()}
    assert len(used & set(templates.MIXED_PATTERNS)) >= 6
    assert used & set(templates.ALL_ABSENT_PATTERNS) and used & set(templates.ALL_PRESENT_PATTERNS)


def test_bad_input_rows_are_quarantined_and_reconciled(base_params):
    perm = make_permutations(6, seed=1)
    perm = perm.with_columns(
        pl.when(pl.col("study_id") == perm["study_id"][0]).then(pl.lit([1, 1], dtype=pl.List(pl.Int8)))
        .otherwise(pl.col("option_B")).alias("option_B"),
        pl.when(pl.col("study_id") == perm["study_id"][1]).then(pl.lit("E"))
        .otherwise(pl.col("correct")).alias("correct"),
    )
    mcq, q, summary = build_mcq(perm, base_params)
    assert mcq.height == 4 and q.height == 2
    reasons = dict(zip(q["key"].to_list(), q["reason"].to_list()))
    assert "option_B has 2 labels" in reasons[str(perm["study_id"][0])]
    assert "correct letter" in reasons[str(perm["study_id"][1])]
    assert summary["rows_in"] == 6


def test_template_affirm_keeps_structure_and_has_no_negation(base_params):
    perm = make_permutations(16, seed=5, conditions=CHECKER_NORMAL_CONDITIONS)
    mcq, _, _ = build_mcq(perm, base_params)
    bench, q, summary = build_benchmark(mcq, base_params)
    assert q.height == 0, q["reason"].to_list()
    assert bench.height == 16 and bench["affirm_verified"].all()
    assert summary["options_with_negation_cue"] == 0
    for row in bench.iter_rows(named=True):
        parts = json.loads(row["negated_parts"])
        for L in LETTERS:
            aff = row[f"affirmative_{L}"]
            assert not _CUE_RE.search(aff), aff                      # independent cue list
            assert not polarity.has_negation_cue(aff), aff
            found = polarity.check(aff, row["conditions"])
            want = {c: ("present" if v else "absent") for c, v in zip(row["conditions"], row[f"option_{L}"])}
            assert found == want, (aff, found, want)
            present = templates.join_list([s for _, s in parts[L]["present"]], "and")
            if present:  # present conditions keep their exact wording (same joined phrase)
                assert present.lower() in aff.lower() and present.lower() in row[f"negated_{L}"].lower()
    again, _, _ = build_benchmark(mcq, base_params)
    assert again.equals(bench)


def test_failing_rewrites_are_quarantined_with_reason(base_params, monkeypatch):
    perm = make_permutations(8, seed=2, conditions=CHECKER_NORMAL_CONDITIONS)
    mcq, _, _ = build_mcq(perm, base_params)
    bad = dict(templates.affirmative_phrases())
    bad["Pleural Effusion"] = ("no pleural fluid",)  # a "rewrite" that still negates
    monkeypatch.setattr(templates, "affirmative_phrases", lambda: bad)
    bench, q, _ = build_benchmark(mcq, base_params)
    assert q.height > 0 and bench.height + q.height == 8
    assert all("negation cue in" in r and "no pleural fluid" in r.lower() for r in q["reason"].to_list())
    for r in bench.iter_rows(named=True):  # kept rows never needed the broken phrasing
        pe_absent = [v == 0 for L in LETTERS for c, v in zip(r["conditions"], r[f"option_{L}"])
                     if c == "Pleural Effusion"]
        assert not any(pe_absent)


def test_affirmative_table_phrasings_are_recognised_by_checker():
    """Each affirmative.csv phrasing must read as 'absent' for its own condition only."""
    from nast.conditions import CONDITIONS

    table = templates.affirmative_phrases()
    assert set(table) == set(CONDITIONS)
    unrecognised = []
    for cond, phrasings in table.items():
        for ph in phrasings:
            assert not _CUE_RE.search(ph), ph
            found = polarity.check(ph, list(CONDITIONS))
            others = {c: v for c, v in found.items() if v and c != cond}
            if found[cond] != "absent" or others:
                unrecognised.append(f"{cond}: {ph!r} -> {found[cond]} {others or ''}")
    assert unrecognised == [], "polarity checker does not recognise " + "; ".join(unrecognised)


def test_surface_forms_are_recognised_by_checker():
    from nast.conditions import CONDITIONS

    for cond, forms in templates.surface_forms().items():
        for form in forms:
            assert polarity.check(form, list(CONDITIONS)) == {
                c: ("present" if c == cond else None) for c in CONDITIONS}, form


def test_parallel_verifier_matches_polarity_check(monkeypatch, mcq_small):
    """The forked nlp.pipe path gives exactly polarity.check / has_negation_cue per text."""
    from nast.text import generation as mcq_mod

    _, mcq, _, _ = mcq_small
    monkeypatch.setattr(mcq_mod, "MIN_PARALLEL_TEXTS", 10)
    monkeypatch.setattr(mcq_mod, "CHUNK", 16)
    v = mcq_mod.PolarityVerifier(n_process=2)
    items = [(r[f"negated_{L}"], r["conditions"]) for r in mcq.iter_rows(named=True) for L in LETTERS]
    items += [("Normal heart size and clear lungs", ["Cardiomegaly", "Lung Opacity"])]
    v.prefetch(items, cues=True)
    assert len(v._mentions) >= 40
    for text, conds in items:
        assert v.check(text, conds) == polarity.check(text, conds)
        assert v.has_cue(text) == polarity.has_negation_cue(text)
