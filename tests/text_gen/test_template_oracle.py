"""Template MCQs and their affirmative rewrites against options written out by hand.

The other template tests judge the options with the polarity checker, the same reader that
verified them when they were built; here the oracle is a person: for three questions every
negated option and its affirmative twin is spelled out below (and was read against its label
vector). The phrase tables are pinned to their first phrasing per condition so that only the
template machinery (patterns, order, joining, capitalisation, the seeded choices) is under test.
"""

from __future__ import annotations

import pytest
from conftest import make_permutations

from nast.text import templates as T
from nast.text.affirm import build_benchmark, template_affirm
from nast.text.mcq import build_mcq

CONDS = ("Cardiomegaly", "Enlarged Cardiomediastinum", "Lung Opacity", "Pleural Effusion")

#: study -> (conditions, correct, question, {letter: (labels, negated option, affirmative option)})
EXPECTED = {
    50000000: (["Enlarged Cardiomediastinum", "Pleural Effusion", "Cardiomegaly"], "C",
               "Which statement best describes this chest X-ray?", {
        "A": ([1, 0, 0], "Widened mediastinum, with no evidence of cardiomegaly or pleural effusion",
              "Widened mediastinum, with normal heart size and sharp costophrenic angles"),
        "B": ([0, 1, 0], "Pleural effusion present, but no widened mediastinum or cardiomegaly",
              "Pleural effusion present, with normal mediastinal contour and normal heart size"),
        "C": ([1, 1, 0], "Pleural effusion and widened mediastinum seen, but no cardiomegaly",
              "Pleural effusion and widened mediastinum seen, with normal heart size"),
        "D": ([0, 0, 1], "Absence of pleural effusion or widened mediastinum, but cardiomegaly noted",
              "Sharp costophrenic angles and normal mediastinal contour, with cardiomegaly noted"),
    }),
    50000001: (["Lung Opacity", "Cardiomegaly", "Pleural Effusion"], "A",
               "Which option correctly summarizes this chest X-ray?", {
        "A": ([1, 0, 0], "Absence of pleural effusion or cardiomegaly, but lung opacity noted",
              "Sharp costophrenic angles and normal heart size, with lung opacity noted"),
        "B": ([0, 1, 1], "Evidence of pleural effusion and cardiomegaly without lung opacity",
              "Evidence of pleural effusion and cardiomegaly with clear lungs"),
        "C": ([1, 1, 0], "Cardiomegaly and lung opacity present, but no pleural effusion",
              "Cardiomegaly and lung opacity present, with sharp costophrenic angles"),
        "D": ([1, 1, 1], "Cardiomegaly, lung opacity and pleural effusion present",
              "Cardiomegaly, lung opacity and pleural effusion present"),
    }),
    50000002: (["Lung Opacity", "Pleural Effusion", "Enlarged Cardiomediastinum"], "D",
               "Which of the following best describes the findings on this chest radiograph?", {
        "A": ([0, 1, 1], "Absence of lung opacity, but widened mediastinum and pleural effusion noted",
              "Clear lungs, with widened mediastinum and pleural effusion noted"),
        "B": ([1, 1, 0], "Pleural effusion and lung opacity noted, no sign of widened mediastinum",
              "Pleural effusion and lung opacity noted, normal mediastinal contour"),
        "C": ([1, 1, 1], "Lung opacity, pleural effusion and widened mediastinum",
              "Lung opacity, pleural effusion and widened mediastinum"),
        "D": ([0, 0, 0], "No radiographic evidence of pleural effusion, widened mediastinum or lung opacity",
              "Sharp costophrenic angles, normal mediastinal contour and clear lungs on this radiograph"),
    }),
}

#: the first phrasing per condition (pinned), as in data/phrases.csv and data/affirmative.csv
FORMS = {"Cardiomegaly": "cardiomegaly", "Enlarged Cardiomediastinum": "widened mediastinum",
         "Lung Opacity": "lung opacity", "Pleural Effusion": "pleural effusion", "Edema": "edema",
         "Pneumothorax": "pneumothorax"}
NORMAL = {"Cardiomegaly": "normal heart size", "Enlarged Cardiomediastinum": "normal mediastinal contour",
          "Lung Opacity": "clear lungs", "Pleural Effusion": "sharp costophrenic angles",
          "Edema": "normal pulmonary vascularity", "Pneumothorax": "fully expanded lungs"}


@pytest.fixture()
def pinned(monkeypatch):
    forms = {c: (v[0],) for c, v in T.surface_forms().items()}
    normal = {c: (v[0],) for c, v in T.affirmative_phrases().items()}
    assert {c: forms[c][0] for c in FORMS} == FORMS and {c: normal[c][0] for c in NORMAL} == NORMAL
    monkeypatch.setattr(T, "surface_forms", lambda: forms)
    monkeypatch.setattr(T, "affirmative_phrases", lambda: normal)


def test_three_template_questions_written_out_by_hand(pinned, base_params):
    perm = make_permutations(3, seed=4, conditions=CONDS)
    mcq, q, _ = build_mcq(perm, base_params)
    bench, q2, _ = build_benchmark(mcq, base_params)
    assert q.height == q2.height == 0
    got = {r["study_id"]: r for r in bench.iter_rows(named=True)}
    assert set(got) == set(EXPECTED)
    for study, (conds, correct, question, options) in EXPECTED.items():
        r = got[study]
        assert (r["conditions"], r["correct"], r["question"]) == (conds, correct, question), study
        for L, (labels, negated, affirmative) in options.items():
            assert list(r[f"option_{L}"]) == labels, (study, L)
            assert r[f"negated_{L}"] == negated, (study, L)
            assert r[f"affirmative_{L}"] == affirmative, (study, L)
        assert r["verified"] and r["affirm_verified"]


def test_rendering_by_hand():
    parts = T.OptionParts("m_without", (("Cardiomegaly", "enlarged heart"), ("Edema", "edema")),
                          (("Pleural Effusion", "effusion"), ("Pneumothorax", "pneumothorax")))
    assert T.render_negated(parts) == "Enlarged heart and edema without effusion or pneumothorax"

    class First:  # the first phrasing every time
        @staticmethod
        def choice(seq):
            return seq[0]

    aff, normal = T.render_affirmative(parts, First())
    assert aff == "Enlarged heart and edema with sharp costophrenic angles and fully expanded lungs"
    assert normal == {"Pleural Effusion": "sharp costophrenic angles", "Pneumothorax": "fully expanded lungs"}
    three = T.OptionParts("n_no", (), (("Edema", "edema"), ("Fracture", "fracture"), ("Pneumonia", "pneumonia")))
    assert T.render_negated(three) == "No edema, fracture or pneumonia"
    assert T.render_negated(T.OptionParts("m_no_but", (("Edema", "edema"),), (("Fracture", "fracture"),))) == \
        "No fracture, but edema present"
    assert T.render_affirmative(T.OptionParts("m_no_but", (("Edema", "edema"),), (("Fracture", "fracture"),)),
                                First())[0] == "Intact ribs, with edema present"
    assert T.render_negated(T.OptionParts("p_noted", (("Edema", "edema"), ("Atelectasis", "atelectasis")), ())) == \
        "Edema and atelectasis noted"


def test_llm_rows_are_rewritten_from_their_labels_by_hand(pinned):
    """An MCQ without stored parts (LLM-written): canonical forms, the default pattern per case."""
    row = {"study_id": 7, "conditions": ["Cardiomegaly", "Edema", "Pneumothorax"], "negated_parts": None,
           "option_A": [1, 0, 0], "option_B": [0, 0, 0], "option_C": [1, 1, 1], "option_D": [0, 1, 0]}
    assert template_affirm(row, seed=0) == {
        "affirmative_A": "Cardiomegaly with normal pulmonary vascularity and fully expanded lungs",
        "affirmative_B": "Normal heart size, normal pulmonary vascularity and fully expanded lungs",
        "affirmative_C": "Cardiomegaly, edema and pneumothorax",
        "affirmative_D": "Edema with normal heart size and fully expanded lungs",
    }
    # ... and the matching negated wording of those defaults
    assert [T.render_negated(T.default_parts(row["conditions"], row[f"option_{L}"])) for L in "ABCD"] == [
        "Cardiomegaly without edema or pneumothorax", "No cardiomegaly, edema or pneumothorax",
        "Cardiomegaly, edema and pneumothorax", "Edema without cardiomegaly or pneumothorax"]
