"""nast evaluate-grounding on models whose answers are known by construction: one that reads the
finding (the blob) from the image and negation from the text, one that ignores the image, and
random tiny models of the three families (every attribution method runs on each)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

from nast.cli import main
from nast.grounding import attribution as A
from nast.grounding import evaluate_grounding as EG
from nast.grounding import metrics as G
from nast.models.base import VLModel
from nast.text.templates import ABSENCE_CUES


class KeyedModel(VLModel):
    """Image: how much of it is brighter than the background (the blob); text: negated or not.

    s(I, "X") = p / |e|, s(I, "no X") = (1 - p) / |e| with p = b / (b + 60), b = the summed
    brightness above the background (unsaturated, so covering part of the blob lowers p): the
    finding's presence is read from the image alone, its negation from the text alone. Background
    pixels contribute exactly 0, so an edit of the background changes no score."""

    family = "test"

    def __init__(self, blind: bool = False):
        super().__init__(nn.Linear(1, 1), image_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        self.blind = blind

    def encode_image(self, pixels):
        x = pixels.mean(1)
        bright = torch.relu(x - 1.0).flatten(1).sum(-1) * 4  # pixel 230 -> 1.6 normalised; background < 0
        p = bright / (bright + 60)
        if self.blind:
            p = torch.full_like(p, 0.3) + 0 * bright
        e = torch.stack([p, 1 - p, torch.full_like(p, 0.2)], -1)
        return nn.functional.normalize(e, dim=-1)

    def tokenize(self, texts):
        neg = [any(t.startswith(c + " ") for c in ABSENCE_CUES) for t in texts]
        return {"input_ids": torch.tensor(neg, dtype=torch.long)[:, None]}

    def encode_text_trimmed(self, tokens):
        neg = tokens["input_ids"][:, 0].float()
        e = torch.stack([1 - neg, neg, torch.zeros_like(neg)], -1)
        return nn.functional.normalize(e, dim=-1)


@pytest.fixture(scope="module")
def table(grounding_world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("g_table")
    out = tmp / "grounding.parquet"
    assert main(["grounding-data", "--params", str(grounding_world["params_path"]), "--box-format", "demo",
                 "--boxes", str(grounding_world["demo_csv"]), "--root", str(grounding_world["data"]),
                 "--cohort", str(grounding_world["cohort"]), "--cf-dir", str(tmp / "cf"), "--out", str(out),
                 "--quarantine", str(tmp / "q.parquet"), "--report-dir", str(tmp / "v")]) == 0
    return pl.read_parquet(out)


def test_a_model_that_reads_the_finding_from_the_image_scores_1(table, grounding_world):
    cfg = grounding_world["params"]["grounding"]
    out, ex = EG.evaluate(KeyedModel(), table, cfg, grounding_world["params"]["evaluate"])
    n_test = sum(s == "test" for _d, s, _f, _b in grounding_world["images"])
    assert out["n_pairs"] == n_test and out["n_ctrl"] == n_test
    assert out["cf_pos_acc"] == 1.0 and out["cf_neg_acc"] == 1.0 and out["cf_pref_acc"] == 1.0
    # the control edits background only: every score ties, 0.5 by construction
    assert out["ctrl_pos_acc"] == 0.5 and out["ctrl_neg_acc"] == 0.5 and out["ctrl_pref_acc"] == 0.5
    assert out["n_kept"] == n_test and out["n_attributed"] == n_test
    # the evidence is the blob: the maps find it
    assert out["loc_iou"] > 0.5 and out["pointing_game"] == 1.0
    for name in ("occlusion", "integrated_gradients"):
        assert out["attribution"][name]["iou"] > 0.4, (name, out["attribution"][name])
    # occlusion's maximum is a whole 8 px window, which can straddle the box edge
    assert out["attribution"]["integrated_gradients"]["pointing"] == 1.0
    assert out["attribution"]["occlusion"]["pointing"] >= 0.5
    assert out["attribution"]["patch_similarity"] == {"available": False, "n": 0}
    assert ex["maps"].shape == (2, 64, 64)
    hits = G.decode_half_hits(out["pair_hits"]["cf_neg"])
    assert hits.tolist() == [1.0] * n_test


def test_a_model_that_ignores_the_image_scores_one_half(table, grounding_world):
    cfg = grounding_world["params"]["grounding"]
    out, _ = EG.evaluate(KeyedModel(blind=True), table, cfg, grounding_world["params"]["evaluate"])
    for k in ("cf_pos_acc", "cf_neg_acc", "ctrl_pos_acc", "ctrl_neg_acc", "cf_pref_acc", "ctrl_pref_acc"):
        assert out[k] == 0.5, k
    assert out["n_kept"] == 0
    assert set(out["pair_hits"]["cf_pos"]) == {"h"}


def test_metrics_by_hand():
    s = {"img_pos": np.array([0.9, 0.2, 0.5, 0.5]), "img_neg": np.array([0.1, 0.3, 0.5, 0.2]),
         "cf_pos": np.array([0.1, 0.4, 0.5, 0.6]), "cf_neg": np.array([0.8, 0.3, 0.4, 0.1]),
         "ctrl_pos": np.array([0.8, np.nan, 0.5, 0.1]), "ctrl_neg": np.array([0.2, np.nan, 0.9, 0.0])}
    h = G.pair_hits(s)
    assert h["cf_pos"].tolist() == [1.0, 0.0, 0.5, 0.0]
    assert h["cf_neg"].tolist() == [1.0, 0.5, 0.0, 0.0]
    assert h["ctrl_pos"][[0, 2, 3]].tolist() == [1.0, 0.5, 1.0] and np.isnan(h["ctrl_pos"][1])
    assert h["cf_pref"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert G.verified(s).tolist() == [True, False, False, False]
    # prefers X on I and flips on the counterfactual, but the control flips too / is missing: not kept
    both = {k: np.array([0.9, 0.9]) if k == "img_pos" else np.array([0.1, 0.1]) if k == "img_neg"
            else np.array([0.1, 0.1]) if k == "cf_pos" else np.array([0.9, 0.9]) if k == "cf_neg"
            else np.array([0.2, np.nan]) if k == "ctrl_pos" else np.array([0.8, np.nan]) for k in s}
    assert G.verified(both).tolist() == [False, False]
    both["ctrl_pos"], both["ctrl_neg"] = np.array([0.8, 0.8]), np.array([0.2, 0.2])
    assert G.verified(both).tolist() == [True, True]
    assert G.encode_half_hits(h["ctrl_pos"]) == "1-h1"


def test_phrasing_is_fixed_per_pair_and_uses_the_tables():
    pos, neg = EG.phrasing("d1", "Pleural Effusion", 0, 0)
    assert pos in ("pleural effusion", "effusion") and neg.endswith(" " + pos)
    assert neg[: -len(pos) - 1] in ABSENCE_CUES
    assert EG.phrasing("d1", "Pleural Effusion", 0, 0) == (pos, neg)
    drawn = {EG.phrasing(f"d{i}", "Pleural Effusion", 0, 0)[1] for i in range(60)}
    assert len(drawn) > 6


@pytest.mark.parametrize("family", ["open_clip", "open_clip_hf", "hf_clip"])
def test_every_attribution_runs_on_each_family(family, tiny_models, table, grounding_world):
    vl = tiny_models[family]
    vl.model.eval()
    pixels = torch.randn(2, 3, vl.image_size, vl.image_size)
    text = nn.functional.normalize(torch.randn(2, vl.encode_image(pixels[:1]).shape[-1]), dim=-1)
    cfg = grounding_world["params"]["grounding"]
    for name in A.METHODS:
        m = A.attribute(name, vl, pixels, text, cfg)
        assert m is not None and m.shape == (2, vl.image_size, vl.image_size), name
        assert torch.isfinite(m).all() and m.abs().sum() > 0, name
    out, _ = EG.evaluate(vl, table, cfg, grounding_world["params"]["evaluate"])
    assert 0 <= out["cf_neg_acc"] <= 1 and out["attribution"]["patch_similarity"].get("available", True)


def test_occlusion_map_finds_the_evidence_of_the_score():
    vl = KeyedModel()
    x = torch.full((1, 3, 64, 64), -1.0)
    x[..., 40:56, 8:24] = 1.6
    t = nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0]]), dim=-1)
    m = A.attribute("occlusion", vl, x, t, {"occlusion_cells": 8})[0]
    y, xx = np.unravel_index(int(m.argmax()), m.shape)
    assert 40 <= y < 56 and 8 <= xx < 24
    assert float(m[:32, 32:].abs().max()) == 0.0  # no evidence where nothing is read


def test_stage_writes_json_and_maps(table, grounding_world, tmp_path, monkeypatch):
    import nast.grounding.evaluate_grounding as mod
    import nast.models

    monkeypatch.setattr(nast.models, "load_model", lambda *a, **k: KeyedModel())
    (tmp_path / "zs").mkdir()
    (tmp_path / "zs" / "manifest.json").write_text('{"trained": false}')
    gpath = tmp_path / "g.parquet"
    table.write_parquet(gpath)
    cf_dir = tmp_path / "cf"
    cf_dir.mkdir()
    rc = main(["evaluate-grounding", "--params", str(grounding_world["params_path"]), "--method", "zero_shot",
               "--model-dir", str(tmp_path / "zs"), "--grounding", str(gpath), "--cf-dir", str(cf_dir),
               "--out", str(tmp_path / "o.json"), "--maps", str(tmp_path / "o.npz")])
    assert rc == 0
    out = json.loads((tmp_path / "o.json").read_text())
    assert out["method"] == "zero_shot" and out["cf_neg_acc"] == 1.0
    with np.load(tmp_path / "o.npz") as z:
        assert z["maps"].shape[0] == 2 and len(z["keys"]) == 2
    assert mod  # the module under test
    assert main(["evaluate-grounding", "--params", str(grounding_world["params_path"]), "--method", "x",
                 "--model-dir", str(tmp_path / "nope"), "--grounding", str(gpath), "--cf-dir", str(cf_dir),
                 "--out", str(tmp_path / "p.json"), "--maps", str(tmp_path / "p.npz")]) == 2
