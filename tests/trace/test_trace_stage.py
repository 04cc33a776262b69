"""`nast trace` end to end on a tiny benchmark: outputs, schema, quarantine, direction."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from PIL import Image

from nast.cli import main

ROOT = Path(__file__).parents[2]


def _benchmark(tmp: Path) -> Path:
    rows = []
    texts = [("Pleural effusion is present, the heart is enlarged.",
              "There is pleural effusion, no normal heart size."),
             ("The lungs are clear, edema is present.", "There is no consolidation, there is edema."),
             ("Pneumothorax is present on the left.", "There is a left pneumothorax, no effusion."),
             ("Heart size is normal.", "No cardiomegaly."),
             ("Support devices are seen.", "There are support devices.")]
    for i, (aff, neg) in enumerate(texts):
        img = tmp / f"img{i}.jpg"
        if i != 2:  # row 2 points at a missing image -> quarantined
            arr = np.random.default_rng(i).integers(0, 256, size=(48, 48), dtype=np.uint8)
            Image.fromarray(arr, "L").save(img)
        row = {"study_id": 100 + i, "image_path": str(img), "split": "test" if i == 4 else "train",
               "correct": "B", "verified": True, "affirm_verified": True}
        for x in "ABCD":
            row[f"negated_{x}"] = neg if x == "B" else f"option {x} negated"
            row[f"affirmative_{x}"] = aff if x == "B" else f"option {x}"
        rows.append(row)
    path = tmp / "benchmark.parquet"
    pl.DataFrame(rows).write_parquet(path)
    return path


def _params(tmp: Path, model_params: dict, direction: str, unit: str | None = None) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"] = {**model_params, "device": "cpu"}
    params["trace"].update(direction=direction, max_examples=8, batch_size=2, min_abs_d=0.0)
    if unit is not None:
        params["trace"]["unit"] = unit
    p = tmp / f"params_{direction}{'_' + unit if unit else ''}.yaml"
    p.write_text(yaml.safe_dump(params))
    return p


def test_trace_stage_outputs_and_direction(tmp_path, tiny_model_params):
    bench = _benchmark(tmp_path)
    outs = {}
    for direction in ("caption", "foil"):
        out = tmp_path / f"cte_{direction}"
        rc = main(["trace", "--params", str(_params(tmp_path, tiny_model_params["open_clip"], direction)),
                   "--benchmark", str(bench), "--out", str(out)])
        assert rc == 0
        outs[direction] = out
    out = outs["caption"]
    for f in ("cte.parquet", "layer_weights.csv", "heatmap.png", "layers.png", "summary.json", "quarantine.parquet"):
        assert (out / f).is_file(), f
    table = pl.read_parquet(out / "cte.parquet")
    assert table.schema == {"layer": pl.Int16, "position": pl.Int16, "effect": pl.Float64, "n": pl.Int64}
    assert sorted(table["layer"].unique().to_list()) == [0, 1, 2, 3]
    assert table["n"].max() == 3  # 3 usable train pairs (1 quarantined, 1 test row ignored)
    weights = pl.read_csv(out / "layer_weights.csv")
    assert weights.columns == ["layer", "cte", "cte_lo", "cte_hi", "alpha"] and weights.height == 4
    assert (weights["cte_lo"] <= weights["cte"]).all() and (weights["cte"] <= weights["cte_hi"]).all()
    assert weights["alpha"].min() == 0.0 and weights["alpha"].max() == 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_examples"] + summary["n_skipped_small_d"] == 3
    assert summary["direction"] == "caption" and summary["n_quarantined"] == 1
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())["trace"]
    assert summary["example_weighting"] == defaults["example_weighting"] and summary["unit"] == defaults["unit"]
    assert 0.0 <= summary["top_block_agreement"] <= 1.0
    q = pl.read_parquet(out / "quarantine.parquet")
    assert q["key"].to_list() == ["102"] and "image not found" in q["reason"][0]
    foil = pl.read_parquet(outs["foil"] / "cte.parquet")
    assert foil.select("layer", "position", "n").equals(table.select("layer", "position", "n"))
    assert not np.allclose(foil["effect"].to_numpy(), table["effect"].to_numpy())
    # same inputs, same bytes
    main(["trace", "--params", str(tmp_path / "params_caption.yaml"), "--benchmark", str(bench),
          "--out", str(tmp_path / "again")])
    assert (tmp_path / "again" / "cte.parquet").read_bytes() == (out / "cte.parquet").read_bytes()


def test_trace_missing_column_names_file_and_column(tmp_path, tiny_model_params, capsys):
    bench = _benchmark(tmp_path)
    pl.read_parquet(bench).drop("negated_C").write_parquet(tmp_path / "bad.parquet")
    rc = main(["trace", "--params", str(_params(tmp_path, tiny_model_params["open_clip"], "caption")),
               "--benchmark", str(tmp_path / "bad.parquet"), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "bad.parquet" in err and "negated_C" in err


def test_trace_units_give_different_layer_weights_same_grid_shape(tmp_path, tiny_model_params):
    bench = _benchmark(tmp_path)
    w, t = {}, {}
    for unit in ("state", "block"):
        out = tmp_path / f"cte_{unit}"
        assert main(["trace", "--params", str(_params(tmp_path, tiny_model_params["open_clip"], "caption", unit)),
                     "--benchmark", str(bench), "--out", str(out)]) == 0
        assert json.loads((out / "summary.json").read_text())["unit"] == unit
        w[unit] = pl.read_csv(out / "layer_weights.csv")
        t[unit] = pl.read_parquet(out / "cte.parquet")
    assert t["state"].select("layer", "position", "n").equals(t["block"].select("layer", "position", "n"))
    # layer 0 (embeddings) is patched the same way; the blocks' CTEs differ
    np.testing.assert_allclose(t["state"].filter(pl.col("layer") == 0)["effect"].to_numpy(),
                               t["block"].filter(pl.col("layer") == 0)["effect"].to_numpy(), atol=1e-9)
    assert not np.allclose(w["state"]["cte"].to_numpy()[1:], w["block"]["cte"].to_numpy()[1:])
