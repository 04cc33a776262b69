"""The training objective and NAST's per-block learning rates against hand-computed values.

* The loss of a fixed batch equals its parts computed here in numpy from the model's own
  encoders: CLIP (symmetric cross-entropy, same-image / same-text pairs excluded) + lambda_claim x
  claim (true caption vs its foils), + lambda_image x the image direction when on, the NegCLIP
  variant (polarity foils as extra image->text negatives) for hard_negative; composite claim
  groups are part of the batch.
* ``nast train`` in the default mode (``nast.scale: lr``, ``nast.normalize: mean``) gives AdamW one
  parameter group per text block with lr x alpha_l^beta / mean(alpha^beta) - hand-computed from
  the tiny world's layer_weights.csv - and the first update of every LoRA tensor is
  ``-lr_l * g / (|g| + eps)`` (Adam's first step), with g the gradient of the hand-written loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tiny_world
import torch
import yaml
from PIL import Image

from nast.cli import main
from nast.models import load_model
from nast.train import trainer
from nast.train.data import caption_groups, claim_polarity_labels, composite_groups
from nast.train.methods import resolve_method

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ numpy reference losses
def _lse(x):
    x = np.asarray(x, dtype=float)
    m = x.max()
    return m + np.log(np.exp(x - m).sum())


def np_clip(img, txt, scale, keys, texts, extra=None, extra_ok=None):
    """Mean of the image->text and text->image cross-entropies; pair (i, j != i) is left out of the
    softmax when it is the same image or the very same text. ``extra`` [M, D]: further text
    columns of the image->text direction (hard negatives), ``extra_ok[i][m]`` whether column m is
    a negative for row i."""
    b = len(img)
    logits = scale * img @ txt.T
    allowed = [[i == j or (keys[i] != keys[j] and texts[i] != texts[j]) for j in range(b)] for i in range(b)]
    i2t, t2i = [], []
    for i in range(b):
        row = [logits[i, j] for j in range(b) if allowed[i][j]]
        if extra is not None and len(extra):
            row += [scale * float(img[i] @ extra[m]) for m in range(len(extra)) if extra_ok[i][m]]
        i2t.append(_lse(row) - logits[i, i])
        col = [logits[j, i] for j in range(b) if allowed[j][i]]
        t2i.append(_lse(col) - logits[i, i])
    return 0.5 * (np.mean(i2t) + np.mean(t2i))


def np_claim(img, cap, foils, scale):
    """foils[i]: the foil embeddings of row i; rows without foils are left out."""
    terms = [_lse([scale * float(img[i] @ cap[i])] + [scale * float(img[i] @ f) for f in foils[i]])
             - scale * float(img[i] @ cap[i]) for i in range(len(img)) if len(foils[i])]
    return float(np.mean(terms)) if terms else 0.0


def np_claim_image(cap, img, opposite, scale):
    """Caption i against its own image and the images j with opposite[i][j] (target: own image)."""
    terms = []
    for i in range(len(cap)):
        cols = [j for j in range(len(img)) if j != i and opposite[i][j]]
        if cols:
            terms.append(_lse([scale * float(cap[i] @ img[j]) for j in [i, *cols]]) - scale * float(cap[i] @ img[i]))
    return float(np.mean(terms)) if terms else 0.0


# ------------------------------------------------------------------------------- fixtures
def _with_polarity_pairs(ctx: pl.DataFrame) -> pl.DataFrame:
    """The tiny world's contextual table with CheXpert finding names and, per image, two more
    claims that are "X" / "no X" polarity pairs of two findings, so that composite claim groups
    (train.composite_claims) exist and the image direction has contradicting images."""
    ctx = ctx.with_columns(pl.col("finding").replace_strict(dict(zip(tiny_world.FINDINGS, tiny_world.COND))))
    extra = []
    for r in ctx.unique("dicom_id", keep="first").sort("dicom_id").iter_rows(named=True):
        pos = int(r["dicom_id"][1:]) % 4
        present, absent = tiny_world.FINDINGS[pos], tiny_world.FINDINGS[(pos + 2) % 4]
        for cap, foil, finding in ((present, f"no {present}", tiny_world.COND[pos]),
                                   (f"no {absent}", absent, tiny_world.COND[(pos + 2) % 4])):
            extra.append({**r, "claim_id": f"{r['study_id']}-{cap}", "finding": finding, "caption": cap,
                          "foil": foil, "foil_type": "polarity"})
    return pl.concat([ctx, pl.DataFrame(extra, schema=ctx.schema)])


@pytest.fixture(scope="module")
def batch(world):
    """A fixed batch: every train caption group, single and composite, with the model's embeddings."""
    params = world["params"]
    tp = params["train"]
    ctx = _with_polarity_pairs(pl.read_parquet(world["files"]["contextual"]))
    single = caption_groups(ctx, "train")
    comp = composite_groups(single, int(tp["composite_claims"]), int(tp["composite_parts"]), int(tp["seed"]))
    assert comp.height > 0
    groups = pl.concat([single, comp], how="diagonal").sort(["dicom_id", "caption"])
    torch.manual_seed(0)
    vl = load_model(params["model"], device="cpu")
    vl.model.eval()
    with torch.no_grad():
        pixels = []
        for p in groups["image_path"]:
            with Image.open(p) as im:
                pixels.append(vl.preprocess(im))
        img = vl.encode_image(torch.stack(pixels))
    cohort = pl.read_parquet(world["files"]["cohort"])
    return {"vl": vl, "groups": groups, "img": img, "cohort": cohort, "n_single": single.height}


def _texts(vl, texts):
    with torch.no_grad():
        return vl.encode_text(vl.tokenize(list(texts))).double().numpy()


def _scale(vl):
    return min(float(np.exp(float(vl.logit_scale.detach()))), 100.0)


def _parts(b, clip_texts=None, spec=None, with_image=False):
    vl, groups = b["vl"], b["groups"]
    rows = groups.to_dicts()
    img = b["img"].double().numpy()
    cap = _texts(vl, [r["caption"] for r in rows])
    foils = [_texts(vl, r["foils"]) if r["foils"] else [] for r in rows]
    s = _scale(vl)
    keys = [r["dicom_id"] for r in rows]
    pos_texts = clip_texts or [r["caption"] for r in rows]
    pos = _texts(vl, pos_texts) if clip_texts else cap
    out = {}
    if spec is not None and spec.hard_negative:
        pol = [(f, e) for r, fe in zip(rows, foils) for f, t, e in zip(r["foils"], r["foil_types"], fe)
               if t == "polarity"]
        extra = np.array([e for _, e in pol])
        ok = [[f != r["caption"] for f, _ in pol] for r in rows]
        out["clip"] = np_clip(img, pos, s, keys, pos_texts, extra, ok)
    else:
        out["clip"] = np_clip(img, pos, s, keys, pos_texts)
    out["claim"] = np_claim(img, cap, foils, s)
    if with_image:
        lab = {r["image_path"]: r for r in b["cohort"].to_dicts()}
        own = [lab[r["image_path"]].get(r["finding"]) if r["finding"] else None for r in rows]
        opposite = [[own[i] in (0, 1) and lab[rows[j]["image_path"]].get(rows[i]["finding"]) == 1 - own[i]
                     for j in range(len(rows))] for i in range(len(rows))]
        assert any(any(r) for r in opposite)
        out["image"] = np_claim_image(cap, img, opposite, s)
    return out


def _spec(world, method, **train):
    params = {**world["params"], "train": {**world["params"]["train"], **train}}
    return resolve_method(method, params)


# ---------------------------------------------------------------------------------- loss
def test_loss_is_clip_plus_lambda_claim(world, batch):
    spec = _spec(world, "nast")
    assert spec.lambda_claim == world["params"]["train"]["lambda_claim"] == 1.0
    rows = list(range(batch["groups"].height))
    assert len(rows) > batch["n_single"]  # composite groups are in the batch
    with torch.no_grad():
        got = trainer.step_loss(batch["vl"], spec, batch["groups"], rows, batch["img"])
    want = _parts(batch)
    assert want["claim"] > 0.1 and want["clip"] > 0.1
    assert float(got["clip_loss"]) == pytest.approx(want["clip"], rel=1e-4)
    assert float(got["claim_loss"]) == pytest.approx(want["claim"], rel=1e-4)
    assert float(got["loss"]) == pytest.approx(want["clip"] + want["claim"], rel=1e-4)
    assert "claim_image_loss" not in got

    # another lambda; the CLIP term on report captions (two identical texts: never each other's negative)
    spec = _spec(world, "lora_uniform", lambda_claim=0.35)
    assert spec.lambda_claim == 0.35
    reports = [f"report of {r['dicom_id']}." if k % 5 else "no acute cardiopulmonary process."
               for k, r in enumerate(batch["groups"].to_dicts())]
    with torch.no_grad():
        got = trainer.step_loss(batch["vl"], spec, batch["groups"], rows, batch["img"], reports)
    want = _parts(batch, clip_texts=reports)
    assert float(got["clip_loss"]) == pytest.approx(want["clip"], rel=1e-4)
    assert float(got["loss"]) == pytest.approx(want["clip"] + 0.35 * want["claim"], rel=1e-4)


def test_loss_with_the_image_direction(world, batch):
    spec = _spec(world, "nast", lambda_image=0.4)
    assert spec.lambda_image == 0.4
    rows = list(range(batch["groups"].height))
    labels = claim_polarity_labels(batch["groups"], batch["cohort"])
    with torch.no_grad():
        got = trainer.step_loss(batch["vl"], spec, batch["groups"], rows, batch["img"], None, labels)
    want = _parts(batch, with_image=True)
    assert want["image"] > 0.1
    assert float(got["claim_image_loss"]) == pytest.approx(want["image"], rel=1e-4)
    assert float(got["loss"]) == pytest.approx(want["clip"] + want["claim"] + 0.4 * want["image"], rel=1e-4)


def test_hard_negative_loss(world, batch):
    spec = _spec(world, "hard_negative")
    assert spec.hard_negative and spec.lambda_claim == 0.0
    rows = list(range(batch["groups"].height))
    with torch.no_grad():
        got = trainer.step_loss(batch["vl"], spec, batch["groups"], rows, batch["img"])
    want = _parts(batch, spec=spec)
    plain = _parts(batch)["clip"]
    assert want["clip"] > plain + 0.05  # the extra negatives matter in this batch
    assert float(got["clip_loss"]) == pytest.approx(want["clip"], rel=1e-4)
    assert float(got["loss"]) == pytest.approx(want["clip"], rel=1e-4)


def test_each_baseline_trains_the_claim_loss_it_says():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    lam = params["train"]["lambda_claim"]
    assert lam > 0
    for method in ("lora_uniform", "nast", "full_ft", "topk_layers"):
        assert resolve_method(method, params).lambda_claim == lam, method
    assert resolve_method("nast", params, "2").beta == 2.0
    assert resolve_method("nast", params).beta == params["nast"]["beta"]
    assert resolve_method("lora_uniform", params).beta == 0.0


# ------------------------------------------------------------- per-block learning rates
class _RecordingAdamW(torch.optim.AdamW):
    made: list = []

    def __init__(self, params, *a, **k):
        super().__init__(params, *a, **k)
        _RecordingAdamW.made.append([{"lr": g["lr"], "params": [id(p) for p in g["params"]]}
                                     for g in self.param_groups])


@pytest.fixture(scope="module")
def one_step(tmp_path_factory):
    """nast trained for exactly one optimizer step (one epoch, one batch) in the default mode, at
    beta 1 (params) and beta 2 (--beta)."""
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())["nast"]
    assert defaults["scale"] == "lr" and defaults["normalize"] == "mean"  # the default mode is what is tested
    tmp = tmp_path_factory.mktemp("one_step")
    world = tiny_world.build(tmp, train={"epochs": 1, "batch_size": 256, "clip_caption": "claim"})
    f = world["files"]
    _with_polarity_pairs(pl.read_parquet(f["contextual"])).write_parquet(f["contextual"])
    assert world["params"]["nast"]["beta"] == 1.0 and world["params"]["train"]["lr"] == 0.01
    made = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAST_TRACKING", "0")
        mp.setattr(torch.optim, "AdamW", _RecordingAdamW)
        for name, extra in (("b1", []), ("b2", ["--beta", "2"])):
            _RecordingAdamW.made.clear()
            assert main(["train", "--params", f["params"], "--method", "nast", *extra, "--cohort", f["cohort"],
                         "--benchmark", f["benchmark"], "--contextual", f["contextual"],
                         "--layer-weights", f["layer_weights"], "--out", str(tmp / name)]) == 0
            (made[name],) = _RecordingAdamW.made
    return world, tmp, made


#: tiny_world.layer_weights: alpha 0.0, 0.5, 1.0 for layers 1..3 = text blocks 0..2
#: beta 1: (0, .5, 1) / mean .5 = (0, 1, 2); beta 2: (0, .25, 1) / mean (1.25 / 3) = (0, .6, 2.4)
EXPECTED_LR = {"b1": [0.0, 0.01, 0.02], "b2": [0.0, 0.006, 0.024]}


def _fresh(world):
    """The state the stage starts from: same seed, same adapters (LoRA A random, B zero)."""
    params = world["params"]
    torch.manual_seed(int(params["train"]["seed"]))
    vl = load_model(params["model"], device="cpu")
    spec = resolve_method("nast", params)
    trainer.apply_method(vl, spec, params["train"], trainer.read_layer_weights(world["files"]["layer_weights"]))
    return vl


def test_optimizer_groups_have_lr_times_alpha_beta(one_step):
    world, tmp, made = one_step
    for name, lrs in EXPECTED_LR.items():
        groups = made[name]
        assert [g["lr"] for g in groups] == pytest.approx(lrs, abs=1e-12), name
        cfg = json.loads((tmp / name / "adapter_config.json").read_text())
        assert cfg["scale_mode"] == "lr" and cfg["layer_scales"] == pytest.approx([x / 0.01 for x in lrs])
    # one group per text block, holding exactly that block's LoRA tensors
    vl = _fresh(world)
    params = dict(vl.model.named_parameters())
    by_block = [sorted(n for n, p in params.items() if p.requires_grad and f"resblocks.{i}." in n) for i in range(3)]
    assert all(by_block)
    saved = torch.load(tmp / "b1" / "adapter.pt", weights_only=True)
    assert sorted(saved) == sorted(n for b in by_block for n in b)
    assert [len(g["params"]) for g in made["b1"]] == [len(b) for b in by_block]


def test_first_update_of_each_block_follows_its_lr(one_step):
    world, tmp, _ = one_step
    vl = _fresh(world)
    init = trainer.trainable_state(vl.model)
    # the gradient of the hand-written loss over the whole (single) batch
    tp = world["params"]["train"]
    single = caption_groups(pl.read_parquet(world["files"]["contextual"]), "train")
    comp = composite_groups(single, int(tp["composite_claims"]), int(tp["composite_parts"]), int(tp["seed"]))
    assert comp.height > 0
    groups = pl.concat([single, comp], how="diagonal").to_dicts()
    vl.model.eval()
    with torch.no_grad():
        pixels = []
        for r in groups:
            with Image.open(r["image_path"]) as im:
                pixels.append(vl.preprocess(im))
        img = vl.encode_image(torch.stack(pixels))
    for m in vl.text_layers():
        m.train()
    cap = vl.encode_text(vl.tokenize([r["caption"] for r in groups]))
    s = vl.logit_scale.detach().exp().clamp(max=100.0)
    logits = s * img @ cap.T
    b = len(groups)
    ok = torch.tensor([[i == j or (groups[i]["dicom_id"] != groups[j]["dicom_id"]
                                   and groups[i]["caption"] != groups[j]["caption"]) for j in range(b)]
                       for i in range(b)])
    masked = logits.masked_fill(~ok, float("-inf"))
    diag = logits.diagonal()
    clip = 0.5 * ((torch.logsumexp(masked, 1) - diag).mean() + (torch.logsumexp(masked.T, 1) - diag).mean())
    claim_terms = []
    for i, r in enumerate(groups):
        if r["foils"]:
            f = vl.encode_text(vl.tokenize(r["foils"]))
            row = torch.cat([(s * img[i] @ cap[i]).reshape(1), s * f @ img[i]])
            claim_terms.append(torch.logsumexp(row, 0) - row[0])
    loss = clip + tp["lambda_claim"] * torch.stack(claim_terms).mean()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in vl.model.named_parameters() if p.requires_grad}

    for name, lrs in EXPECTED_LR.items():
        saved = torch.load(tmp / name / "adapter.pt", weights_only=True)
        for n, g in grads.items():
            block = int(n.split("resblocks.")[1].split(".")[0])
            lr = lrs[block]
            delta = saved[n] - init[n]
            want = -lr * g / (g.abs() + 1e-8)  # AdamW's first step (bias-corrected), no weight decay
            # where |g| is near Adam's eps the step depends on g's last digits (encode_text vs the
            # trimmed encoding): only its bound is exact there
            clear = g.abs() > 1e-6
            bad = ((delta - want).abs() > 1e-3 * lr + 1e-9) & clear | (delta.abs() > lr * (1 + 1e-3) + 1e-9)
            bad |= (g == 0) & (delta != 0)  # LoRA A (B starts at zero) and frozen blocks do not move
            assert not bad.any(), (name, n, int(bad.sum()), delta[bad][:5], want[bad][:5])
            assert float(clear.float().mean()) > 0.9 or lr == 0 or "lora_A" in n, (name, n)
            if "lora_B" in n and lr > 0:
                assert float(delta.abs().max()) == pytest.approx(lr, rel=1e-3), (name, n)
