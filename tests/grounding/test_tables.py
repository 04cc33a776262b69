"""nast report's grounding tables from hand-written grounding JSONs."""

from __future__ import annotations

import json

import polars as pl
import pytest

from nast.grounding import tables as T
from nast.report import build_grounding, method_key


def entry(method, cf_pos, hits_pos, digest="p1"):
    return {
        "method": method, "split": "test", "n_pairs": len(hits_pos), "n_ctrl": 2, "n_localized": 4, "n_kept": 1,
        "cf_pos_acc": cf_pos, "cf_pos_acc_ci": [cf_pos - 0.1, cf_pos + 0.1],
        "cf_neg_acc": 0.5, "cf_neg_acc_ci": [0.4, 0.6],
        "ctrl_pos_acc": 0.5, "ctrl_neg_acc": 0.5, "cf_pref_acc": 0.75, "ctrl_pref_acc": 0.5,
        "loc_iou": 0.2, "loc_iou_ci": [0.1, 0.3], "pointing_game": 0.25, "localization": "integrated_gradients",
        "attribution": {"occlusion": {"available": True, "n": 1, "iou": 0.3, "iou_ci": [0.3, 0.3], "f1": 0.4,
                                      "precision": 0.5, "recall": 0.6, "pointing": 1.0},
                        "patch_similarity": {"available": False, "n": 0}},
        "pair_hits": {"pairs": digest, "cf_pos": hits_pos, "cf_neg": "hhhh", "cf_pref": "1101",
                      "ctrl_pos": "1h--", "ctrl_neg": "0h--", "ctrl_pref": "hh--"},
    }


def test_tables_and_paired_differences(tmp_path):
    d = tmp_path / "grounding"
    d.mkdir()
    evals = [entry("zero_shot", 0.5, "0101"), entry("lora_uniform", 0.75, "1101"), entry("nast", 1.0, "1111"),
             entry("other_pairs", 1.0, "1111", digest="p2")]
    for e in evals:
        (d / f"{e['method']}.json").write_text(json.dumps(e))
    loaded = T.load(d, method_key)
    assert [e["method"] for e in loaded][:3] == ["zero_shot", "lora_uniform", "nast"]
    g = T.grounding_table(loaded)
    row = g.filter(pl.col("method") == "lora_uniform").row(0, named=True)
    assert row["cf_pos_acc"] == 0.75 and row["cf_pos_acc_lo"] == pytest.approx(0.65) and row["n_pairs"] == 4
    a = T.attribution_table(loaded)
    occ = a.filter((pl.col("method") == "nast") & (pl.col("attribution") == "occlusion")).row(0, named=True)
    assert occ["iou"] == 0.3 and occ["f1"] == 0.4 and occ["n_kept"] == 1 and occ["available"]
    assert not a.filter(pl.col("attribution") == "patch_similarity")["available"].any()
    p = T.paired_table(loaded, n_boot=200, seed=0)
    get = {(r["method"], r["baseline"], r["metric"]): r for r in p.iter_rows(named=True)}
    assert get[("lora_uniform", "zero_shot", "cf_pos_acc")]["diff"] == pytest.approx(0.25)
    assert get[("nast", "zero_shot", "cf_pos_acc")]["diff"] == pytest.approx(0.5)
    assert get[("nast", "lora_uniform", "cf_pos_acc")]["diff"] == pytest.approx(0.25)
    assert get[("nast", "zero_shot", "ctrl_pos_acc")]["n"] == 2          # only pairs with a control
    assert get[("nast", "zero_shot", "cf_neg_acc")]["diff"] == 0.0
    assert not any(m == "other_pairs" for m, _b, _k in get)             # other pairs: not paired
    assert not any(m == "zero_shot" for m, _b, _k in get)
    files = build_grounding(d, None, tmp_path / "tables", tmp_path / "plots", n_boot=50)
    assert {"grounding.csv", "paired_grounding.csv", "attribution.csv", "grounding.md"} <= set(files)
    assert "Paired differences" in (tmp_path / "tables" / "grounding.md").read_text()


def test_only_the_named_methods_are_loaded(tmp_path):
    from nast.errors import StageError

    d = tmp_path / "grounding"
    d.mkdir()
    for e in (entry("zero_shot", 0.5, "0101"), entry("lora_uniform", 0.75, "1101"), entry("nast", 1.0, "1111")):
        (d / f"{e['method']}.json").write_text(json.dumps(e))
    (d / "lora_uniform-s1.json").write_text(json.dumps(entry("lora_uniform", 0.0, "0000")))
    loaded = T.load(d, method_key, ["zero_shot", "lora_uniform", "nast"])
    assert [e["method"] for e in loaded] == ["zero_shot", "lora_uniform", "nast"]
    p = T.paired_table(loaded, n_boot=50, seed=0)
    assert p.filter(method="nast", baseline="lora_uniform", metric="cf_pos_acc")["diff"][0] == pytest.approx(0.25)
    with pytest.raises(StageError, match="says method 'lora_uniform' but is named 'lora_uniform-s1'"):
        T.load(d, method_key)
