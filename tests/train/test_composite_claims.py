"""Composite claim captions (train.composite_claims): parts, rendering, foils, determinism, CLI."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
import yaml

from nast.cli import main
from nast.train.data import COMPOSITE_CUES, _reword, caption_groups, claim_parts, composite_groups, render_composite

PATTERN = {"mixed": "{P}, {c} {N}", "absent": "{c} {N}", "present": "{P}"}


def _contextual(rows: list[tuple[str, str, str, str, str]]) -> pl.DataFrame:
    """rows: (dicom_id, finding, caption, foil, foil_type)."""
    return pl.DataFrame(
        [(d, f"img/{d}.jpg", "train", c, fo, t, fi) for d, fi, c, fo, t in rows],
        schema=["dicom_id", "image_path", "split", "caption", "foil", "foil_type", "finding"], orient="row")


CTX = _contextual([
    ("a", "Pleural Effusion", "moderate right pleural effusion", "no right pleural effusion", "polarity"),
    ("a", "Pleural Effusion", "moderate right pleural effusion", "severe right pleural effusion", "severity"),
    ("a", "Pneumothorax", "no pneumothorax", "pneumothorax", "polarity"),
    ("a", "Edema", "no pulmonary edema", "pulmonary edema", "polarity"),
    ("a", "Fracture", "left fracture", "right fracture", "laterality"),   # no polarity foil: no part
    ("b", "Edema", "no pulmonary edema", "pulmonary edema", "polarity"),  # one part only: no composite
])


def test_parts_use_the_negated_noun_so_no_severity_word_marks_the_truth():
    parts = claim_parts(caption_groups(CTX, "train"))
    got = sorted(parts.select("dicom_id", "finding", "present", "noun").iter_rows())
    # the fracture claim has no polarity foil: no part
    assert got == [("a", "Edema", False, "pulmonary edema"), ("a", "Pleural Effusion", True, "right pleural effusion"),
                   ("a", "Pneumothorax", False, "pneumothorax"), ("b", "Edema", False, "pulmonary edema")]


def test_render_scopes_no_over_the_absent_parts_only():
    nouns = ["right pleural effusion", "pneumothorax", "pulmonary edema"]
    assert render_composite(nouns, [True, False, False], PATTERN) == (
        "right pleural effusion, no pneumothorax or pulmonary edema")
    assert render_composite(nouns, [True, True, False], PATTERN) == (
        "right pleural effusion and pneumothorax, no pulmonary edema")
    assert render_composite(nouns, [False, False, False], PATTERN) == (
        "no right pleural effusion, pneumothorax or pulmonary edema")
    assert render_composite(nouns, [True, True, True], PATTERN) == (
        "right pleural effusion, pneumothorax and pulmonary edema")


def test_composite_groups_are_true_with_one_flip_foils_and_seeded():
    groups = caption_groups(CTX, "train")
    comp = composite_groups(groups, per_image=3, max_parts=3, seed=0)
    assert set(comp["dicom_id"]) == {"a"}  # image b has a single part
    assert comp.columns == ["dicom_id", "image_path", "caption", "foils", "foil_types", "finding"]
    truth = {"effusion": True, "pneumothorax": False, "edema": False}  # a word of every phrasing
    for r in comp.iter_rows(named=True):
        assert r["finding"] is None and r["foil_types"] == ["polarity"] * 3 and len(set(r["foils"])) == 3
        assert r["caption"] not in r["foils"]
        # every finding of the caption appears under the cue exactly when its claim is negative
        for word, present in truth.items():
            assert word in r["caption"]
            assert (word in _negated_nouns(r["caption"])) == (not present), (word, r["caption"])
        # each foil contradicts exactly one claim, in the caption's own wording
        for foil in r["foils"]:
            flipped = [w for w, present in truth.items() if (w in _negated_nouns(foil)) == present]
            assert len(flipped) == 1, foil
        assert "right" in r["caption"]  # the laterality stays whatever the phrasing
    again = composite_groups(groups, per_image=3, max_parts=3, seed=0)
    assert again.equals(comp)
    assert composite_groups(groups, per_image=0, max_parts=3, seed=0).height == 0
    two = composite_groups(groups, per_image=5, max_parts=2, seed=1)
    assert all(len(f) == 2 for f in two["foils"].to_list())
    assert two["caption"].n_unique() == two.height  # a repeated draw is kept once


def _negated_nouns(text: str) -> str:
    """The negated clause of a composite: what follows its cue up to the clause end."""
    for cue in sorted(COMPOSITE_CUES, key=len, reverse=True):
        m = re.search(rf"(?:^|[,;.] ){cue} (.*?)(?:\. |; |$)", text)
        if m:
            return m.group(1)
    return ""


def test_reword_names_the_finding_by_the_phrase_table_and_keeps_modifiers():
    import random

    from nast.text.templates import surface_forms

    forms = {_reword("right pleural effusion", "Pleural Effusion", random.Random(i)) for i in range(40)}
    assert forms == {f"right {f}" for f in surface_forms()["Pleural Effusion"]}
    assert _reword("left fracture", "Fracture", random.Random(0)) in {"left fracture", "left rib fracture"}
    assert _reword("something else", "Edema", random.Random(0)) == "something else"  # no canonical phrase
    assert _reword("pneumothorax", "Not A Finding", random.Random(0)) == "pneumothorax"


def test_cues_are_forward_negation_cues_of_the_reader_lexicon():
    from nast.text.polarity import NEGATION_CUES

    assert set(COMPOSITE_CUES) <= set(NEGATION_CUES)
    nouns = ["pneumothorax", "pulmonary edema"]
    got = {render_composite(nouns, [True, False], {**PATTERN, "cue": c}) for c in COMPOSITE_CUES}
    assert "pneumothorax, without pulmonary edema" in got and len(got) == len(COMPOSITE_CUES)


def test_train_adds_composite_groups(world, tmp_path: Path, caplog):
    params = yaml.safe_load(Path(world["files"]["params"]).read_text())
    params["train"]["composite_claims"] = 2
    params["train"]["epochs"] = 1
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    f = world["files"]
    # the tiny world's claims in the contextual stage's "X" / "no X" form, two per image
    base = pl.read_parquet(f["contextual"])
    images = base.select("study_id", "subject_id", "dicom_id", "image_path", "split").unique().sort("dicom_id")
    claims = pl.DataFrame([("Edema", "pulmonary edema", "no pulmonary edema"),
                           ("Pneumothorax", "no pneumothorax", "pneumothorax")],
                          schema=["finding", "caption", "foil"], orient="row")
    ctx = pl.concat([base, images.join(claims, how="cross").with_columns(
        claim_id=pl.col("dicom_id") + ":" + pl.col("finding"), foil_type=pl.lit("polarity")
    ).select(base.columns)])
    ctx_file = tmp_path / "contextual.parquet"
    ctx.write_parquet(ctx_file)
    single = caption_groups(ctx, "train").height
    expected = composite_groups(caption_groups(ctx, "train"), 2, 3, int(params["train"]["seed"])).height
    assert expected > 0
    caplog.set_level("INFO")
    assert main(["train", "--params", str(pfile), "--method", "lora_uniform", "--cohort", f["cohort"],
                 "--benchmark", f["benchmark"], "--contextual", str(ctx_file),
                 "--layer-weights", f["layer_weights"], "--out", str(tmp_path / "m")]) == 0
    assert f"{single + expected} caption groups (train; {single} single claims + {expected} composite)" in caplog.text
    assert (tmp_path / "m" / "adapter.pt").is_file()


@pytest.mark.parametrize("bad", [{"composite_claims": -1}, {"composite_parts": 1}])
def test_schema_rejects_bad_composite_settings(bad, tmp_path: Path):
    from nast.config import ConfigError, load_params

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["train"].update(bad)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=f"train.{next(iter(bad))}"):
        load_params(p)
