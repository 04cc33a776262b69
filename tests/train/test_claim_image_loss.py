"""The image direction of the claim loss (train.lambda_image): masks, semantics, labels, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.nn.functional as F
import yaml

from nast.cli import main
from nast.errors import StageError
from nast.train.data import caption_groups, claim_polarity_labels, opposite_mask
from nast.train.losses import claim_image_loss

from .tiny_world import COND, FINDINGS


def test_opposite_mask_pairs_only_known_opposite_labels():
    # findings: 0 = Edema, 1 = Effusion; labels 1 / 0 / -1 (uncertain or not mentioned)
    fidx = torch.tensor([0, 0, 1, -1])
    labels = torch.tensor([[1, 0], [0, 0], [-1, 1], [0, 1]])
    m = opposite_mask(fidx, labels)
    # row 0 (Edema = 1): images 1 and 3 have Edema = 0
    assert m[0].tolist() == [False, True, False, True]
    # row 1 (Edema = 0): only image 0 has Edema = 1
    assert m[1].tolist() == [True, False, False, False]
    # row 2 (Effusion = 1): images 0 and 1 have Effusion = 0; image 3 agrees
    assert m[2].tolist() == [True, True, False, False]
    # row 3: finding not in the cohort -> never contradicted
    assert not m[3].any()


def test_claim_image_loss_rewards_the_own_image_over_contradicting_ones():
    img = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]), dim=-1)
    opposite = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    good = F.normalize(torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 1.0]]), dim=-1)   # near own image
    bad = F.normalize(torch.tensor([[0.1, 1.0], [1.0, 0.1], [1.0, 1.0]]), dim=-1)    # near the contradicting one
    assert float(claim_image_loss(good, img, opposite, 10.0)) < float(claim_image_loss(bad, img, opposite, 10.0))
    # row 2 has no contradicting image: left out (changing its caption changes nothing)
    other = good.clone()
    other[2] = F.normalize(torch.tensor([-1.0, 0.2]), dim=-1)
    assert torch.equal(claim_image_loss(good, img, opposite, 10.0), claim_image_loss(other, img, opposite, 10.0))
    # the same image as a column is never a negative even if flagged (diagonal); nothing flagged -> 0
    assert float(claim_image_loss(good, img, torch.zeros(3, 3, dtype=torch.bool), 10.0)) == 0.0
    # a caption that prefers no image (equidistant) costs log(1 + #opposite)
    eq = F.normalize(torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]), dim=-1)
    sq = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), dim=-1)
    loss = claim_image_loss(eq, sq, opposite, 10.0)
    assert float(loss) == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=1e-6)


def _with_chexpert_findings(world, tmp: Path) -> Path:
    """A copy of the tiny world's contextual table whose findings are CheXpert (cohort) names."""
    ctx = pl.read_parquet(world["files"]["contextual"])
    path = tmp / "contextual_chexpert.parquet"
    ctx.with_columns(pl.col("finding").replace_strict(dict(zip(FINDINGS, COND)))).write_parquet(path)
    return path


def test_claim_polarity_labels_from_the_cohort(world, tmp_path):
    ctx = pl.read_parquet(_with_chexpert_findings(world, tmp_path))
    groups = caption_groups(ctx, "train")
    cohort = pl.read_parquet(world["files"]["cohort"])
    fidx, labels = claim_polarity_labels(groups, cohort)
    assert fidx.shape == (groups.height,) and labels.shape[0] == groups.height
    findings = sorted(set(groups["finding"].to_list()))
    for r, row in enumerate(groups.iter_rows(named=True)):
        assert findings[int(fidx[r])] == row["finding"]
        want = cohort.filter(pl.col("image_path") == row["image_path"])[row["finding"]][0]
        assert int(labels[r, fidx[r]]) == (want if want in (0, 1) else -1)
    with pytest.raises(StageError, match="cohort.parquet: no labels for 1 training image"):
        claim_polarity_labels(groups, cohort.filter(pl.col("image_path") != groups["image_path"][0]))


def _train(world, contextual: Path, out: Path, lam: float) -> Path:
    params = yaml.safe_load(Path(world["files"]["params"]).read_text())
    params["train"]["lambda_image"] = lam
    pfile = out.parent / f"params_{lam}.yaml"
    pfile.write_text(yaml.safe_dump(params))
    f = world["files"]
    assert main(["train", "--params", str(pfile), "--method", "lora_uniform", "--cohort", f["cohort"],
                 "--benchmark", f["benchmark"], "--contextual", str(contextual),
                 "--layer-weights", f["layer_weights"], "--out", str(out)]) == 0
    return out


def test_train_with_the_image_direction(world, tmp_path):
    ctx = _with_chexpert_findings(world, tmp_path)
    off = _train(world, ctx, tmp_path / "off", 0.0)
    on = _train(world, ctx, tmp_path / "on", 1.0)
    curve = pl.read_csv(on / "curve.csv")
    assert "claim_image_loss" in curve.columns and (curve["claim_image_loss"] > 0).all()
    assert "claim_image_loss" not in pl.read_csv(off / "curve.csv").columns
    a = torch.load(off / "adapter.pt", weights_only=True)
    b = torch.load(on / "adapter.pt", weights_only=True)
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    assert json.loads((on / "adapter_config.json").read_text())["spec"]["lambda_image"] == 1.0
