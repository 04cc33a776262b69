"""Gradient scaling by alpha_l^beta, beta = 0 == uniform LoRA, resume after a stop and after a real SIGKILL
(via the CLI)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch

from nast.cli import main
from nast.models import load_model
from nast.models.data import load_images
from nast.train import trainer
from nast.train.data import caption_groups
from nast.train.methods import resolve_method


def _setup(world, method, beta=None):
    params = world["params"]
    torch.manual_seed(0)
    vl = load_model(params["model"], device="cpu")
    spec = resolve_method(method, params, beta)
    lw = trainer.read_layer_weights(world["files"]["layer_weights"])
    trainer.apply_method(vl, spec, params["train"], lw)
    return vl, spec, lw


def _block_grads(vl, world, spec, scales):
    groups = caption_groups(pl.read_parquet(world["files"]["contextual"]), "train")
    rows = list(range(4))
    # move LoRA B off zero so that every adapter tensor has a gradient
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for n, p in vl.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        img = vl.encode_image(load_images(vl, [groups["image_path"][r] for r in rows]))
    vl.model.zero_grad()
    trainer.step_loss(vl, spec, groups, rows, img)["loss"].backward()
    blocks = trainer.block_parameters(vl)
    trainer.scale_gradients(blocks, scales)
    return {i: [p.grad.clone() for p in ps] for i, ps in blocks.items()}


def test_layer_scales_from_csv(world):
    lw = trainer.read_layer_weights(world["files"]["layer_weights"])  # alpha 0.3, 0.0, 0.5, 1.0 (layers 0..3)
    assert trainer.layer_scales(lw, 3, 1.0) == [0.0, 0.5, 1.0]
    assert trainer.layer_scales(lw, 3, 2.0) == [0.0, 0.25, 1.0]
    assert trainer.layer_scales(lw, 3, 0.0) == [1.0, 1.0, 1.0]
    from nast.errors import StageError

    with pytest.raises(StageError, match="layer 4"):
        trainer.layer_scales(lw, 4, 1.0)


def test_reversed_layer_weights_flip_the_blocks_and_keep_the_embeddings():
    lw = pl.DataFrame({"layer": [0, 1, 2, 3, 4], "cte": [0.9, 0.74, 0.40, 0.19, 0.11],
                       "cte_lo": [0.8, 0.7, 0.35, 0.15, 0.05], "alpha": [1.0, 1.0, 0.46, 0.12, 0.0]})
    rev = trainer.reversed_layer_weights(lw)
    assert rev.columns == lw.columns
    assert rev["layer"].to_list() == [0, 1, 2, 3, 4]
    assert rev["alpha"].to_list() == [1.0, 0.0, 0.12, 0.46, 1.0]
    assert rev["cte_lo"].to_list() == [0.8, 0.05, 0.15, 0.35, 0.7]
    # the same factors on the opposite blocks: NAST's mean-normalised budget is unchanged
    fwd = trainer.normalize_scales(trainer.layer_scales(lw, 4, 1.0), "mean")
    back = trainer.normalize_scales(trainer.layer_scales(rev, 4, 1.0), "mean")
    assert back == fwd[::-1] and fwd != back
    # the block with the highest CTE becomes the lowest; topk_layers would pick the other end
    assert trainer.topk_blocks(lw, 1, 4) == [0] and trainer.topk_blocks(rev, 1, 4) == [3]
    from nast.errors import StageError

    with pytest.raises(StageError, match="no text-block rows"):
        trainer.reversed_layer_weights(lw.filter(pl.col("layer") == 0))


def test_gradients_scaled_per_layer(world):
    vl0, spec0, lw = _setup(world, "lora_uniform")
    g0 = _block_grads(vl0, world, spec0, [1.0] * 3)
    vl2, spec2, _ = _setup(world, "nast", "2")
    scales = trainer.layer_scales(lw, 3, spec2.beta)
    g2 = _block_grads(vl2, world, spec2, scales)
    for i, s in enumerate([0.0, 0.25, 1.0]):
        assert g0[i], f"block {i} has no adapter params"
        for a, b in zip(g0[i], g2[i]):
            assert float(a.abs().sum()) > 0
            torch.testing.assert_close(b, a * s, rtol=1e-5, atol=1e-7)


def _train_cli(world, out, *extra, method="nast"):
    f = world["files"]
    argv = ["train", "--params", f["params"], "--method", method, "--cohort", f["cohort"],
            "--benchmark", f["benchmark"], "--contextual", f["contextual"],
            "--layer-weights", f["layer_weights"], "--out", str(out), *extra]
    return main(argv)


def _adapter(out):
    return torch.load(Path(out) / "adapter.pt", weights_only=True)


def _train_api(world, method, beta, out):
    vl, spec, lw = _setup(world, method, beta)
    groups = caption_groups(pl.read_parquet(world["files"]["contextual"]), "train")
    scales = trainer.layer_scales(lw, vl.n_text_layers, spec.beta)
    tp = {**world["params"]["train"], "epochs": 1}
    curve, done = trainer.train(vl, spec, groups, tp, scales, "grad", out)
    assert done and len(curve) == 1
    return trainer.trainable_state(vl.model)


def test_beta0_equals_uniform_lora(world, tmp_path):
    a = _train_api(world, "nast", "0", tmp_path / "b0")
    b = _train_api(world, "lora_uniform", None, tmp_path / "lu")
    init = _adapter_init(world)
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], init[k]) for k in a if "lora_B" in k)  # it did train


def test_resume_reproduces_uninterrupted_run(world, tmp_path, caplog):
    assert _train_cli(world, tmp_path / "full", "--beta", "1") == 0
    a = _adapter(tmp_path / "full")
    cfg = json.loads((tmp_path / "full" / "adapter_config.json").read_text())
    # alphas 0, 0.5, 1 for the three blocks; nast.normalize: mean divides by their mean (0.5)
    expected = [0.0, 1.0, 2.0] if world["params"]["nast"].get("normalize") == "mean" else [0.0, 0.5, 1.0]
    assert cfg["method"] == "nast-beta1" and cfg["layer_scales"] == pytest.approx(expected)
    # block 0 has alpha 0 -> alpha^1 = 0 -> its adapters never move; block 2 does
    init = _adapter_init(world)
    moved = {k: not torch.equal(v, init[k]) for k, v in a.items()}
    assert not any(m for k, m in moved.items() if ".resblocks.0." in k)
    assert any(m for k, m in moved.items() if ".resblocks.2." in k)

    # killed after epoch 1, then resumed -> same final weights and curve
    assert _train_cli(world, tmp_path / "r", "--beta", "1", "--stop-after-epoch", "1") == 3
    assert not (tmp_path / "r" / "adapter.pt").exists()
    assert [p.name for p in (tmp_path / "r" / "state").glob("*.pt")] == ["epoch_001.pt"]
    # a checkpoint written with other settings is never resumed
    shutil.copytree(tmp_path / "r", tmp_path / "stale")
    with caplog.at_level(logging.WARNING):
        assert _train_cli(world, tmp_path / "stale", "--beta", "2", "--stop-after-epoch", "1") == 3
    assert "starting afresh" in caplog.text
    stale = torch.load(tmp_path / "stale" / "state" / "epoch_001.pt", weights_only=False)
    fresh = torch.load(tmp_path / "r" / "state" / "epoch_001.pt", weights_only=False)
    assert stale["fingerprint"] != fresh["fingerprint"]
    assert _train_cli(world, tmp_path / "r", "--beta", "1") == 0
    c = _adapter(tmp_path / "r")
    assert a.keys() == c.keys()
    for k in a:
        assert torch.equal(a[k], c[k]), k
    assert (tmp_path / "r" / "curve.csv").read_text() == (tmp_path / "full" / "curve.csv").read_text()
    curve = pl.read_csv(tmp_path / "r" / "curve.csv")
    assert curve["epoch"].to_list() == [1, 2]
    assert {"loss", "clip_loss", "claim_loss", "val_mcq_negated_acc", "val_mcq_affirmative_acc",
            "val_claim_acc"} <= set(curve.columns)
    for name in ("manifest.json", "params_used.json", "layer_weights.csv", "adapter_config.json"):
        assert (tmp_path / "r" / name).is_file()


def _adapter_init(world):
    vl, _spec, _ = _setup(world, "nast", "1")
    return trainer.trainable_state(vl.model)


def test_zero_shot_writes_marker(world, tmp_path):
    assert _train_cli(world, tmp_path / "z", method="zero_shot") == 0
    m = json.loads((tmp_path / "z" / "manifest.json").read_text())
    assert m["trained"] is False and m["base"]["family"] == "open_clip"
    assert not (tmp_path / "z" / "adapter.pt").exists()


def test_beta_flag_only_for_nast(world, tmp_path, capsys):
    assert _train_cli(world, tmp_path / "x", "--beta", "1", method="lora_uniform") == 2
    assert "--beta applies to --method nast only" in capsys.readouterr().err


def test_clip_loss_pairs_images_with_the_given_captions(world):
    """clip_texts replaces only the CLIP loss's captions: the claim captions themselves give the
    same loss as no clip_texts; other texts change the CLIP term and leave the claim term alone."""
    vl, spec, _ = _setup(world, "lora_uniform")
    groups = caption_groups(pl.read_parquet(world["files"]["contextual"]), "train")
    rows = list(range(min(6, groups.height)))
    with torch.no_grad():
        img = vl.encode_image(load_images(vl, [groups["image_path"][r] for r in rows]))
        plain = trainer.step_loss(vl, spec, groups, rows, img)
        same = trainer.step_loss(vl, spec, groups, rows, img, [groups["caption"][r] for r in rows])
        other = trainer.step_loss(vl, spec, groups, rows, img,
                                  [f"report {k}: moderate right pleural effusion. no pneumothorax." for k in rows])
    assert torch.allclose(plain["loss"], same["loss"], atol=1e-6)
    assert torch.equal(plain["claim_loss"], other["claim_loss"])
    assert not torch.allclose(plain["clip_loss"], other["clip_loss"], atol=1e-4)


def test_normalize_scales_keeps_the_lr_budget():
    from nast.errors import StageError

    assert trainer.normalize_scales([0.0, 0.5, 1.0], "none") == [0.0, 0.5, 1.0]
    out = trainer.normalize_scales([0.0, 0.5, 1.0], "mean")
    assert out == pytest.approx([0.0, 1.0, 2.0]) and sum(out) / 3 == pytest.approx(1.0)
    assert trainer.normalize_scales([1.0, 1.0], "mean") == [1.0, 1.0]  # uniform stays uniform
    with pytest.raises(StageError, match="nothing would be trained"):
        trainer.normalize_scales([0.0, 0.0], "mean")


def test_sigkill_mid_training_resumes_to_the_same_weights(tmp_path):
    """A real kill (SIGKILL of the `nast train` process, no clean exit) between epochs or in the
    middle of one; the rerun resumes from the last complete epoch and ends with the weights and
    curve of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import tiny_world

    world = tiny_world.build(tmp_path / "w", train={"epochs": 8})
    f = world["files"]
    argv = ["train", "--params", f["params"], "--method", "nast", "--cohort", f["cohort"],
            "--benchmark", f["benchmark"], "--contextual", f["contextual"], "--layer-weights", f["layer_weights"]]
    assert main([*argv, "--out", str(tmp_path / "full")]) == 0

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nast.cli", *argv, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while not list((out / "state").glob("epoch_*.pt")):
            assert proc.poll() is None, "nast train ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "adapter.pt").exists()
    done = sorted(p.name for p in (out / "state").glob("epoch_*.pt"))
    assert len(done) == 1 and done[0] < "epoch_008.pt", done
    torch.load(out / "state" / done[0], weights_only=False)  # the checkpoint on disk is whole

    assert main([*argv, "--out", str(out)]) == 0
    a, b = _adapter(tmp_path / "full"), _adapter(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (out / "curve.csv").read_text() == (tmp_path / "full" / "curve.csv").read_text()
