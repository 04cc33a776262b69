"""The preference methods dpo / nast-dpo: the length-regularised DPO loss by hand, the pair
builder's counts, the frozen reference, and training runs through `nast train` (with resume)."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
import torch
from test_grounded import _grounding_table, _train

from nast.models import load_model
from nast.train import losses, preference, trainer
from nast.train.data import caption_groups
from nast.train.methods import resolve_method


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_dpo_loss_by_hand():
    pol_w = torch.tensor([2.0, 1.0])
    pol_l = torch.tensor([1.0, 1.5])
    ref_w = torch.tensor([1.0, 1.0])
    ref_l = torch.tensor([1.0, 1.0])
    len_w = torch.tensor([5, 4])
    len_l = torch.tensor([4, 4])
    # pair 0: Delta = (2-1) - (1-1) = 1, length +1; pair 1: Delta = 0 - 0.5 = -0.5, length 0
    z = losses.dpo_margins(pol_w, pol_l, ref_w, ref_l, len_w, len_l, 0.1, 0.05)
    assert z.tolist() == pytest.approx([0.1 * 1 + 0.05 * 1, 0.1 * -0.5])
    got = losses.dpo_loss(pol_w, pol_l, ref_w, ref_l, len_w, len_l, 0.1, 0.05)
    assert float(got) == pytest.approx(-(_logsig(0.15) + _logsig(-0.05)) / 2, rel=1e-6)
    # the length term's sign: a longer chosen caption with alpha > 0 lowers the loss ...
    same = torch.tensor([0.0])
    base = losses.dpo_loss(same, same, same, same, torch.tensor([4]), torch.tensor([4]), 0.1, 0.05)
    longer = losses.dpo_loss(same, same, same, same, torch.tensor([6]), torch.tensor([4]), 0.1, 0.05)
    shorter = losses.dpo_loss(same, same, same, same, torch.tensor([2]), torch.tensor([4]), 0.1, 0.05)
    assert float(base) == pytest.approx(math.log(2))
    assert float(longer) < float(base) < float(shorter)
    assert float(longer) == pytest.approx(-_logsig(0.05 * 2), rel=1e-6)
    # ... alpha = 0 is plain DPO, and no pairs give 0
    assert float(losses.dpo_loss(same, same, same, same, torch.tensor([6]), torch.tensor([4]), 0.1, 0.0)) == \
        pytest.approx(math.log(2))
    assert float(losses.dpo_loss(same[:0], same[:0], same[:0], same[:0], same[:0], same[:0], 0.1, 0.05)) == 0.0


def test_text_pairs_count_every_group_and_foil():
    groups = pl.DataFrame({
        "dicom_id": ["a", "a", "b", "c", "d"],
        "image_path": ["a.png", "a.png", "b.png", "c.png", "d.png"],
        "caption": ["left pleural effusion", "no edema", "mild edema", "no pneumothorax", "cardiomegaly"],
        "foils": [["no left pleural effusion", "right pleural effusion"], ["edema"],
                  ["no edema", "severe edema", "edema of the hand"], [], [None]],
        "foil_types": [["polarity", "laterality"], ["polarity"], ["polarity", "severity", "location"], [], [None]],
    })
    pairs, c = preference.text_pairs(groups)
    assert c["groups"] == 5 and c["groups_with_pairs"] == 3 and c["groups_without_foil"] == 2
    assert c["foils"] == 6 and c["foils_other_type"] == 1 and c["pairs"] == 5 == pairs.height
    assert c["pairs"] + c["foils_other_type"] == c["foils"]
    assert c["by_foil_type"] == {"polarity": 3, "laterality": 1, "severity": 1}
    assert pairs.filter(pl.col("group") == 2)["foil_index"].to_list() == [0, 1]  # index in the foils list
    row = pairs.row(1, named=True)
    assert (row["chosen"], row["rejected"], row["image_path"]) == ("left pleural effusion", "right pleural effusion",
                                                                   "a.png")


def test_image_pairs_prefer_the_factual_image_for_x_and_the_counterfactual_for_no_x():
    ground = pl.DataFrame({"dicom_id": ["a", "b"], "finding": ["Lung Lesion", "Pneumothorax"], "box_index": [0, 0],
                           "image_path": ["a.png", "b.png"], "cf_path": ["a.cf.png", None]})
    pairs, c = preference.image_pairs(ground, 0)
    assert c == {"rows": 2, "rows_without_cf": 1, "pairs": 2}
    x, nox = pairs.row(0, named=True), pairs.row(1, named=True)
    assert (x["image_w"], x["image_l"], x["polarity"]) == ("a.png", "a.cf.png", "present")
    assert (nox["image_w"], nox["image_l"], nox["polarity"]) == ("a.cf.png", "a.png", "absent")
    assert nox["caption"].endswith(x["caption"]) and nox["caption"] != x["caption"]
    assert preference.image_pairs(None, 0)[1]["pairs"] == 0


def test_dpo_methods_resolve(world):
    params = world["params"]
    d, nd = resolve_method("dpo", params), resolve_method("nast-dpo", params)
    assert d.lambda_claim == 0 and d.lambda_dpo == params["train"]["lambda_claim"] > 0 and d.beta == 0
    assert (d.dpo_beta, d.dpo_alpha) == (params["train"]["dpo_beta"], params["train"]["dpo_alpha"])
    assert nd.beta == params["nast"]["beta"] and nd.dpo_beta == d.dpo_beta


def test_reference_scores_are_the_frozen_base(world):
    """The reference is the base model (adapters off), unchanged by a training step that moves the policy."""
    params = world["params"]
    torch.manual_seed(0)
    vl = load_model(params["model"], device="cpu")
    spec = resolve_method("dpo", params)
    trainer.apply_method(vl, spec, params["train"], None)
    groups = caption_groups(pl.read_parquet(world["files"]["contextual"]), "train")
    pairs, counts = preference.text_pairs(groups)
    assert counts["pairs"] > 0
    from nast.models.data import load_images

    paths = groups["image_path"].to_list()
    with torch.no_grad():
        img = vl.encode_image(load_images(vl, paths))

    def ref():
        vl.model.eval()
        with preference.adapters_disabled(vl.model):
            return preference.text_reference(vl, groups, pairs, img, trainer._scale(vl))

    before = ref()
    base = {n: p.detach().clone() for n, p in vl.model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in vl.model.parameters() if p.requires_grad], lr=0.05)
    rows = list(range(min(4, groups.height)))
    for _ in range(2):
        out = trainer.step_loss(vl, spec, groups, rows, img[rows], None, None, before)
        loss = out["loss"] - torch.nn.functional.logsigmoid(out["dpo_text_z"]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # the policy moved (adapters on) ...
    with torch.no_grad():
        policy = trainer.step_loss(vl, spec, groups, rows, img[rows], None, None, before)["dpo_text_z"]
    assert policy.abs().max() > 0
    # ... the base weights and the reference scores did not
    after = ref()
    assert all(torch.equal(base[n], p) for n, p in vl.model.named_parameters() if n in base)
    for k in ("ref_w", "ref_l", "len_w", "len_l", "use"):
        assert torch.allclose(before[k].float(), after[k].float(), atol=1e-6), k


def test_dpo_and_nast_dpo_train_and_dpo_resumes(world, tmp_path):
    g = _grounding_table(world, tmp_path)
    assert _train(world, "dpo", tmp_path / "a", g) == 0
    curve = pl.read_csv(tmp_path / "a" / "curve.csv")
    for col in ("dpo_loss", "dpo_text_loss", "dpo_image_loss"):
        assert col in curve.columns and curve[col].is_finite().all(), col
    assert (curve["claim_loss"] == 0).all()
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["spec"]["base"] == "dpo" and cfg["spec"]["lambda_dpo"] > 0 and cfg["spec"]["dpo_beta"] == 0.1
    # resume: stopped after epoch 1, rerun -> the same weights and curve as the uninterrupted run
    assert _train(world, "dpo", tmp_path / "b", g, ["--stop-after-epoch", "1"]) == 3
    assert _train(world, "dpo", tmp_path / "b", g) == 0
    wa = torch.load(tmp_path / "a" / "adapter.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "adapter.pt", weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "a" / "curve.csv").read_text() == (tmp_path / "b" / "curve.csv").read_text()
    # text pairs only (no --grounding) still trains
    assert _train(world, "dpo", tmp_path / "t") == 0
    assert "dpo_image_loss" not in pl.read_csv(tmp_path / "t" / "curve.csv").columns
    # nast-dpo: per-layer scales as nast, and it ends elsewhere than dpo
    assert _train(world, "nast-dpo", tmp_path / "n", g) == 0
    cfg_n = json.loads((tmp_path / "n" / "adapter_config.json").read_text())
    assert cfg_n["spec"]["beta"] > 0 and len(set(cfg_n["layer_scales"])) > 1
    wn = torch.load(tmp_path / "n" / "adapter.pt", weights_only=True)
    assert any(not torch.equal(wa[k], wn[k]) for k in wa)
