"""Which modules get LoRA adapters, and does every adapter parameter really get a gradient?

Table of tiny models (all three families, built offline) x methods, as in PEFT's own tests.
"""

from __future__ import annotations

import polars as pl
import pytest
import tiny_world
import torch

from nast.models import load_model
from nast.train import trainer
from nast.train.data import caption_groups
from nast.train.methods import resolve_method


@pytest.fixture(scope="module", params=["open_clip", "open_clip_hf", "hf_clip"])
def fam(request, tmp_path_factory):
    return tiny_world.build(tmp_path_factory.mktemp(request.param), family=request.param)


def _one_batch(vl, world, spec):
    ctx = pl.read_parquet(world["files"]["contextual"])
    groups = caption_groups(ctx, "train")
    rows = list(range(min(4, groups.height)))
    from nast.models.data import load_images

    with torch.no_grad():
        img = vl.encode_image(load_images(vl, [groups["image_path"][r] for r in rows]))
    return trainer.step_loss(vl, spec, groups, rows, img)


def _grads_after_one_step(vl, world, spec):
    """One SGD step first (LoRA B starts at 0, so A's grad is 0 at init), then fresh grads."""
    params = [p for p in vl.model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5)
    _one_batch(vl, world, spec)["loss"].backward()
    opt.step()
    opt.zero_grad()
    _one_batch(vl, world, spec)["loss"].backward()
    return {n: p.grad for n, p in vl.model.named_parameters() if p.requires_grad}


def test_lora_adapters_on_every_family(fam):
    _check_adapters(fam, "lora_uniform")


def test_topk_layers_adapters(world):
    _check_adapters(world, "topk_layers")  # the block selection is family independent


def _check_adapters(fam, method):
    params = fam["params"]
    vl = load_model(params["model"], device="cpu")
    spec = resolve_method(method, params)
    lw = trainer.read_layer_weights(fam["files"]["layer_weights"])
    info = trainer.apply_method(vl, spec, params["train"], lw)
    adapted = trainer.adapted_modules(vl.model)
    assert sorted(adapted) == sorted(info["targets"])
    prefix = vl.text_layer_prefix()
    assert all(n.startswith(prefix + ".") for n in adapted), adapted
    blocks = {int(n[len(prefix) + 1:].split(".")[0]) for n in adapted}
    if method == "topk_layers":
        # cte = 2*alpha - 0.1 -> highest CTE layers are 3 and 2 -> blocks 2 and 1
        assert blocks == {1, 2}
    else:
        assert blocks == set(range(vl.n_text_layers))
    # every family adapts attention and MLP of each adapted block
    suffixes = {n.split(".")[-1] for n in adapted}
    assert len(suffixes) >= 2
    # nothing outside the adapters is trainable (vision frozen)
    trainable = [n for n, p in vl.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    grads = _grads_after_one_step(vl, fam, spec)
    dead = [n for n, g in grads.items() if g is None or float(g.abs().sum()) == 0.0]
    assert not dead, f"adapter parameters without gradient: {dead}"


def test_mha_out_proj_is_retargeted(world):
    vl = load_model(world["params"]["model"], device="cpu")
    names = ["transformer.resblocks.0.attn.out_proj", "transformer.resblocks.0.mlp.c_fc"]
    assert trainer.resolve_targets(vl.model, names) == ["transformer.resblocks.0.attn",
                                                        "transformer.resblocks.0.mlp.c_fc"]
    from nast.errors import StageError

    with pytest.raises(StageError, match="not found"):
        trainer.resolve_targets(vl.model, ["transformer.resblocks.9.mlp.c_fc"])


def test_full_ft_trains_text_tower_only(world):
    params = world["params"]
    vl = load_model(params["model"], device="cpu")
    spec = resolve_method("full_ft", params)
    trainer.apply_method(vl, spec, params["train"], None)
    assert not trainer.adapted_modules(vl.model)
    trainable = {n for n, p in vl.model.named_parameters() if p.requires_grad}
    assert any(n.startswith("transformer.resblocks") for n in trainable)
    assert "token_embedding.weight" in trainable
    assert not any(n.startswith("visual.") for n in trainable)
    assert spec.lr == params["train"]["full_ft_lr"]


def test_hard_negative_loss_uses_polarity_foils(world):
    params = world["params"]
    vl = load_model(params["model"], device="cpu")
    hn = resolve_method("hard_negative", params)
    lu = resolve_method("lora_uniform", params)
    trainer.apply_method(vl, hn, params["train"], None)
    with torch.no_grad():
        a = _one_batch(vl, world, hn)
        b = _one_batch(vl, world, lu)
    assert float(a["claim_loss"]) == 0.0 and hn.lambda_claim == 0.0
    # extra negatives can only make the image->text softmax harder
    assert float(a["clip_loss"]) > float(b["clip_loss"])


def test_trained_vision_tower_keeps_its_batchnorm_statistics(tmp_path):
    """train.train_vision on the demo's ResNet tower: its BatchNorm running statistics move with
    training and are saved with the weights (adapter.pt, resume checkpoints), so the reloaded
    model evaluates with its own statistics, not the base's (found by the issue-14 experiments:
    without them R@5 fell from 0.39 to 0.11)."""
    from nast.models.adapters import load_trainable_state, trainable_state
    from nast.models.families import package_config
    from nast.models.testing import save_tiny_open_clip

    mp = dict(save_tiny_open_clip(package_config("nast-tiny-clip"), tmp_path / "m"), device="cpu")
    vl = load_model(mp, "cpu")
    for p in vl.model.parameters():
        p.requires_grad_(False)
    for p in vl.model.visual.parameters():
        p.requires_grad_(True)
    vl.model.train()
    with torch.no_grad():  # a train-mode forward moves the running statistics
        gen = torch.Generator().manual_seed(0)
        vl.encode_image(torch.randn(4, 3, vl.image_size, vl.image_size, generator=gen) * 2 + 1)
    state = trainable_state(vl.model)
    assert sum(k.endswith("running_var") for k in state) >= 1
    torch.save(state, tmp_path / "adapter.pt")
    fresh = load_model(mp, "cpu")
    before = dict(fresh.model.named_buffers())
    moved = [n for n, b in vl.model.named_buffers() if n.endswith("running_mean") and not torch.equal(b, before[n])]
    assert moved  # the forward did change them: the check below can fail
    load_trainable_state(fresh.model, torch.load(tmp_path / "adapter.pt", weights_only=True), "adapter.pt")
    after = dict(fresh.model.named_buffers())
    for n, b in vl.model.named_buffers():
        assert torch.equal(b, after[n]), n
    vl.model.eval()
    fresh.model.eval()
    x = torch.rand(2, 3, vl.image_size, vl.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(vl.encode_image(x), fresh.encode_image(x))
