"""The counterfactual grounding loss (methods grounded / nast-grounded): by hand, and a training
run through `nast train` that lowers it and resumes like the other methods."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from nast.cli import main
from nast.train import losses
from nast.train.methods import resolve_method


def test_grounding_loss_by_hand():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cf = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    ctrl = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    has = torch.tensor([True, False])
    pos = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    got = losses.grounding_loss(img, cf, ctrl, has, pos, neg, 2.0)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731 - softplus
    # pair 0: s(I,X)-s(cf,X) = 1, s(cf,noX)-s(I,noX) = 1; pair 1: both 0; control (pair 0 only) equal -> 0
    want = (sp(-2.0) + sp(-2.0) + sp(0.0) + sp(0.0)) / 2
    assert float(got) == pytest.approx(want, rel=1e-6)
    # a control that moves the scores is penalised: pair 0's control = its counterfactual
    got2 = losses.grounding_loss(img, cf, cf, has, pos, neg, 2.0)
    assert float(got2) == pytest.approx(want + (2.0 * 1) ** 2 + (2.0 * -1) ** 2, rel=1e-6)
    # the text cannot win it: the same text for both images gives the tie value
    same = losses.grounding_loss(img, img, img, has, pos, neg, 2.0)
    assert float(same) == pytest.approx(2 * sp(0.0), rel=1e-6)


def test_grounded_methods_resolve(world):
    params = world["params"]
    g, ng = resolve_method("grounded", params), resolve_method("nast-grounded", params)
    assert g.lambda_ground == params["train"]["lambda_ground"] > 0 and g.beta == 0
    assert ng.lambda_ground == g.lambda_ground and ng.beta == params["nast"]["beta"]
    assert resolve_method("lora_uniform", params).lambda_ground == 0


def _grounding_table(world, tmp_path) -> str:
    """Counterfactuals of the tiny world's images: a bright square removed (cf) or painted elsewhere
    (ctrl), one pair per training image."""
    cohort = pl.read_parquet(world["files"]["cohort"])
    rows = []
    for i, r in enumerate(cohort.filter(pl.col("split") == "train").iter_rows(named=True)):
        with Image.open(r["image_path"]) as im:
            a = np.asarray(im.convert("L")).copy()
        cf = a.copy()
        a[4:12, 4:12] = 250
        Image.fromarray(a).save(tmp_path / f"i{i}.png")
        Image.fromarray(cf).save(tmp_path / f"c{i}.png")
        ctrl = cf.copy()
        ctrl[20:28, 20:28] = int(cf[20:28, 20:28].mean())
        Image.fromarray(ctrl).save(tmp_path / f"k{i}.png")
        rows.append({"dicom_id": r["dicom_id"], "split": "train", "finding": "Lung Lesion", "box_index": 0,
                     "image_path": str(tmp_path / f"i{i}.png"), "width": a.shape[1], "height": a.shape[0],
                     "x0": 4, "y0": 4, "x1": 12, "y1": 12, "cf_path": str(tmp_path / f"c{i}.png"),
                     "ctrl_path": str(tmp_path / f"k{i}.png") if i % 2 == 0 else None})
    path = tmp_path / "grounding.parquet"
    pl.DataFrame(rows).write_parquet(path)
    return str(path)


def _train(world, method, out, grounding=None, extra=()):
    f = world["files"]
    args = ["train", "--params", f["params"], "--method", method, "--cohort", f["cohort"], "--benchmark",
            f["benchmark"], "--contextual", f["contextual"], "--layer-weights", f["layer_weights"], "--out", str(out)]
    if grounding:
        args += ["--grounding", grounding]
    return main(args + list(extra))


def test_grounded_training_lowers_the_grounding_loss_and_resumes(world, tmp_path):
    g = _grounding_table(world, tmp_path)
    assert _train(world, "grounded", tmp_path / "nog") == 2  # the table is required
    assert _train(world, "grounded", tmp_path / "a", g) == 0
    curve = pl.read_csv(tmp_path / "a" / "curve.csv")
    assert "ground_loss" in curve.columns and curve["ground_loss"].is_finite().all()
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["spec"]["lambda_ground"] > 0 and cfg["spec"]["base"] == "grounded"
    # resume: stopped after epoch 1, rerun -> the same weights as the uninterrupted run
    assert _train(world, "grounded", tmp_path / "b", g, ["--stop-after-epoch", "1"]) == 3
    assert _train(world, "grounded", tmp_path / "b", g) == 0
    wa = torch.load(tmp_path / "a" / "adapter.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "adapter.pt", weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # the term changes training: lora_uniform (same everything, lambda_ground 0) ends elsewhere
    assert _train(world, "lora_uniform", tmp_path / "u") == 0
    wu = torch.load(tmp_path / "u" / "adapter.pt", weights_only=True)
    assert any(not torch.equal(wa[k], wu[k]) for k in wa)


def test_grounded_with_its_tower_trained_resumes_to_the_same_weights(world, tmp_path):
    """make demo-full's grounded (train.train_vision: [grounded]): killed after epoch 1 and rerun,
    it ends with the uninterrupted run's weights, the vision tower's and its BatchNorm statistics
    included (they live in the resume checkpoint too)."""
    import yaml

    from nast.models.families import package_config
    from nast.models.testing import save_tiny_open_clip

    g = _grounding_table(world, tmp_path)
    # the demo's tower (an open_clip ModifiedResNet with BatchNorm layers), randomly initialised
    model = save_tiny_open_clip(package_config("nast-tiny-clip"), tmp_path / "resnet")
    params = {**world["params"], "model": {**world["params"]["model"], **model},
              "train": {**world["params"]["train"], "train_vision": ["grounded"], "epochs": 2}}
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    f = {**world["files"], "params": str(pfile)}
    w = {**world, "files": f}
    assert _train(w, "grounded", tmp_path / "a", g) == 0
    assert _train(w, "grounded", tmp_path / "b", g, ["--stop-after-epoch", "1"]) == 3
    assert _train(w, "grounded", tmp_path / "b", g) == 0
    wa = torch.load(tmp_path / "a" / "adapter.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "adapter.pt", weights_only=True)
    assert any(k.startswith("visual.") for k in wa) and any("running_var" in k for k in wa)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["vision_trained"] is True
