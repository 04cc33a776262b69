"""nast train -> nast evaluate -> nast report on the tiny world (real model, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml

from nast.cli import main
from nast.models import load_model
from nast.train import trainer

FRACTIONS = ("mcq_negated_acc", "mcq_affirmative_acc", "claim_acc", "claim_pair_acc", "retrieval_r5")


def _cli(world, *argv):
    return main([argv[0], "--params", world["files"]["params"], *argv[1:]])


def _inputs(world):
    f = world["files"]
    return ["--cohort", f["cohort"], "--benchmark", f["benchmark"], "--contextual", f["contextual"]]


@pytest.fixture(scope="module")
def pipeline(eval_world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    f = eval_world["files"]
    # the zero-shot evaluation also reads an official-layout MedNega-CXR JSON (exported from the tiny benchmark)
    from nast.text.mednega import to_records

    (tmp / "mednega.json").write_text(json.dumps(to_records(pl.read_parquet(f["benchmark"]))))
    params = yaml.safe_load(Path(f["params"]).read_text())
    params["evaluate"]["mednega_json"] = str(tmp / "mednega.json")
    (tmp / "params_mednega.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:  # module scope: set up before the autouse NAST_TRACKING=0
        mp.setenv("NAST_TRACKING", "0")
        for method, extra in (("zero_shot", []), ("nast", ["--beta", "0.5"])):
            name = method if not extra else "nast-beta0.5"
            assert _cli(eval_world, "train", "--method", method, *extra, *_inputs(eval_world),
                        "--layer-weights", f["layer_weights"], "--out", str(tmp / "models" / name)) == 0
            world = ({"files": {**f, "params": str(tmp / "params_mednega.yaml")}} if method == "zero_shot"
                     else eval_world)
            assert _cli(world, "evaluate", "--method", name, "--model-dir", str(tmp / "models" / name),
                        *_inputs(eval_world), "--out", str(tmp / "eval" / f"{name}.json")) == 0
    return tmp


def test_eval_json_schema_and_ranges(pipeline):
    res = json.loads((pipeline / "eval" / "zero_shot.json").read_text())
    assert res["method"] == "zero_shot"
    assert res["n_mcq"] == 2 and res["n_claim_groups"] == 4 and res["n_claim_pairs"] == 6
    for k in FRACTIONS:
        assert 0.0 <= res[k] <= 1.0, k
    assert res["mcq_gap"] == pytest.approx(res["mcq_affirmative_acc"] - res["mcq_negated_acc"])
    for k in ("mcq_negated_acc", "mcq_affirmative_acc"):
        lo, hi = res[f"{k}_ci"]
        assert lo <= res[k] <= hi
    assert set(res["retrieval"]) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}
    # only 2 test studies: R@5 is trivially 1, R@1 in {0, .5, 1}
    assert res["retrieval"]["i2t_r5"] == 1.0 and res["retrieval"]["i2t_r1"] in (0.0, 0.5, 1.0)
    assert set(res["claim_acc_by_foil_type"]) == {"polarity", "severity", "laterality"}
    # the text-only control: claims scored against another subject's image
    assert 0.0 <= res["claim_acc_image_shuffled"] <= 1.0
    assert set(res["claim_acc_by_foil_type_image_shuffled"]) <= set(res["claim_acc_by_foil_type"])
    # test images d6 (Edema pos) and d7 (Edema uncertain): Edema has one class only -> no AUROC
    assert "Edema" not in res["auroc"]
    assert set(res["mcq_by_n_negated"]) <= {"0", "1", "2", "3"}
    assert set(res["mcq_by_condition"]) <= {"Pleural Effusion", "Pneumothorax", "Edema", "Atelectasis"}
    # MedNega-CXR JSON: all 8 records have a frontal image in the cohort (all splits are evaluated)
    assert res["mednega"]["n_mcq"] == 8 and res["mednega"]["n_mednega_skipped"] == 0
    assert 0 <= res["mednega"]["mcq_negated_acc"] <= 1


def test_trained_adapter_is_reloaded(eval_world, pipeline):
    mdir = pipeline / "models" / "nast-beta0.5"
    vl = load_model(eval_world["params"]["model"], device="cpu")
    tokens = vl.tokenize(["there is no pleural effusion"])
    with torch.no_grad():
        base = vl.encode_text(tokens)
    cfg = trainer.load_trained(vl, mdir)
    assert cfg["method"] == "nast-beta0.5" and cfg["adapted_modules"] == trainer.adapted_modules(vl.model)
    saved = torch.load(mdir / "adapter.pt", weights_only=True)
    params = dict(vl.model.named_parameters())
    for k, v in saved.items():
        assert torch.equal(params[k].detach(), v), k
    with torch.no_grad():
        tuned = vl.encode_text(tokens)
        again = vl.encode_text(tokens)
    assert not torch.allclose(base, tuned)
    assert torch.equal(tuned, again)  # PEFT's MHA merge/unmerge does not drift the base weights


def test_report_tables_and_plots(eval_world, pipeline):
    out, plots = pipeline / "tables", pipeline / "plots"
    assert _cli(eval_world, "report", "--eval-dir", str(pipeline / "eval"), "--out", str(out),
                "--plots", str(plots), "--models-dir", str(pipeline / "models")) == 0
    summary = pl.read_csv(out / "summary.csv")
    assert summary["method"].to_list() == ["zero_shot", "nast-beta0.5"]
    for col in ("method", "mcq_negated_acc", "mcq_affirmative_acc", "mcq_gap", "claim_acc", "retrieval_r5",
                "mcq_gap_lo", "mcq_gap_hi", "mcq_negated_acc_lo", "mcq_negated_acc_hi"):
        assert col in summary.columns, col
    for col in ("mcq_negated_acc", "mcq_affirmative_acc", "claim_acc", "retrieval_r5", "mcq_negated_acc_lo"):
        assert summary[col].is_between(0, 1).all(), col
    assert summary["mcq_gap"].is_between(-1, 1).all()
    md = (out / "summary.md").read_text()
    first = md.split("## Paired")[0]
    assert first.count("\n| ") == 3 and "nast-beta0.5" in first
    # the trained method against zero_shot on the same questions (lora_uniform was not run)
    paired = pl.read_csv(out / "paired.csv")
    assert paired.select("method", "reference").rows() == [("nast-beta0.5", "zero_shot")]
    row = paired.row(0, named=True)
    nb = summary.filter(pl.col("method") == "nast-beta0.5").row(0, named=True)
    zr = summary.filter(pl.col("method") == "zero_shot").row(0, named=True)
    assert row["negated_diff"] == pytest.approx(nb["mcq_negated_acc"] - zr["mcq_negated_acc"], abs=1e-4)
    assert row["gap_diff"] == pytest.approx(nb["mcq_gap"] - zr["mcq_gap"], abs=1e-4)
    assert row["negated_diff_lo"] <= row["negated_diff"] <= row["negated_diff_hi"]
    assert row["n_mcq"] == nb["n_mcq"] and "## Paired differences" in md
    sweep = pl.read_csv(out / "beta_sweep.csv")
    assert sweep["beta"].to_list() == [0.5]
    foil = pl.read_csv(out / "by_foil_type.csv")
    assert set(foil["foil_type"]) == {"polarity", "severity", "laterality"} and foil.height == 6
    assert pl.read_csv(out / "per_condition.csv")["negated_acc"].is_between(0, 1).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"zero_shot", "nast-beta0.5"}
    for name in ("gap_by_method.png", "claim_by_foil_type.png", "beta_sweep.png", "training_curves.png"):
        assert (plots / name).stat().st_size > 1000, name
    zs = json.loads((pipeline / "eval" / "zero_shot.json").read_text())
    assert summary.filter(pl.col("method") == "zero_shot")["mcq_gap"][0] == pytest.approx(zs["mcq_gap"], abs=1e-4)


def test_report_missing_key_is_structural_error(eval_world, tmp_path, capsys):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "x.json").write_text(json.dumps({"method": "x", "mcq_negated_acc": 0.5}))
    rc = _cli(eval_world, "report", "--eval-dir", str(tmp_path / "eval"), "--out", str(tmp_path / "t"),
              "--plots", str(tmp_path / "p"))
    assert rc == 2 and "x.json: missing key 'mcq_affirmative_acc'" in capsys.readouterr().err
