"""The image embedding store (nast embed-images) and the streamed images: the same numbers as
the frozen vision tower in the stages' own path, so reading the store changes no result; a store
of another base model is refused naming the file; train.train_vision never reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from nast.cli import main
from nast.errors import StageError
from nast.models import embeddings as E
from nast.models import load_model
from nast.models.data import load_images
from nast.models.testing import save_tiny
from nast.train import trainer
from nast.train.data import caption_groups
from nast.train.methods import resolve_method


@pytest.fixture(scope="module")
def store(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "image_embeddings"
    f = world["files"]
    assert main(["embed-images", "--params", f["params"], "--cohort", f["cohort"], "--out", str(out)]) == 0
    return out


def _paths(world):
    return sorted(pl.read_parquet(world["files"]["cohort"])["image_path"].to_list())


def test_streamed_embeddings_equal_the_all_at_once_path(world):
    vl = load_model(world["params"]["model"], device="cpu")
    paths = _paths(world)
    with torch.no_grad():
        pixels = load_images(vl, paths)  # the pre-streaming code: every image in one tensor
        old = torch.cat([vl.encode_image(pixels[i : i + 3]) for i in range(0, len(pixels), 3)])
    new = E.embed_paths(vl, paths, batch_size=3)
    assert torch.equal(old, new)
    assert torch.equal(E.load_pixels(vl, paths[:2]), pixels[:2])


def test_store_holds_every_cohort_image_with_the_base_fingerprint(world, store):
    manifest = json.loads((store / E.MANIFEST).read_text())
    paths = _paths(world)
    assert manifest["n"] == len(paths) and manifest["dim"] == 32
    ck = world["params"]["model"]["checkpoint"]
    assert manifest["base"]["files"]["checkpoint"]["path"] == ck
    s = E.open_store(store, world["params"]["model"])
    assert pl.read_parquet(store / E.INDEX)["image_path"].to_list() == paths
    vl = load_model(world["params"]["model"], device="cpu")
    torch.testing.assert_close(s.lookup(paths[::-1]), E.embed_paths(vl, paths[::-1]), rtol=0, atol=1e-6)
    with pytest.raises(StageError, match="no image embedding for 1 image"):
        s.lookup(["nowhere.jpg"])


def test_store_of_another_base_model_is_refused_naming_the_file(world, store, tmp_path):
    other = save_tiny("open_clip", Path(__file__).parent / "configs", tmp_path / "other", seed=1)
    with pytest.raises(StageError, match=r"checkpoint .*checkpoint\.pt.*differs from .*other/checkpoint\.pt"):
        E.open_store(store, other)
    # the CLI stops with the message (exit 2), not a traceback
    f = world["files"]
    params = {**world["params"], "model": other}
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    argv = ["train", "--params", str(tmp_path / "params.yaml"), "--method", "lora_uniform", "--cohort", f["cohort"],
            "--benchmark", f["benchmark"], "--contextual", f["contextual"], "--embeddings", str(store),
            "--out", str(tmp_path / "m")]
    assert main(argv) == 2


def _train(world, out, store=None, **tp_over):
    params = world["params"]
    torch.manual_seed(0)
    vl = load_model(params["model"], device="cpu")
    tp = {**params["train"], "epochs": 1, **tp_over}
    spec = resolve_method("lora_uniform", {**params, "train": tp})
    trainer.apply_method(vl, spec, tp, None)
    groups = caption_groups(pl.read_parquet(world["files"]["contextual"]), "train")
    curve, done = trainer.train(vl, spec, groups, tp, [1.0] * vl.n_text_layers, "lr", out, embeddings=store)
    assert done
    return trainer.trainable_state(vl.model), curve


def test_training_on_the_store_reaches_the_same_weights(world, store, tmp_path):
    s = E.open_store(store, world["params"]["model"])
    a, ca = _train(world, tmp_path / "pixels")
    b, cb = _train(world, tmp_path / "store", s)
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert ca[0]["loss"] == pytest.approx(cb[0]["loss"], rel=1e-5)


def test_train_vision_never_reads_the_store(world, store, tmp_path):
    s = E.open_store(store, world["params"]["model"])
    with pytest.raises(StageError, match="train_vision"):
        _train(world, tmp_path / "tv", s, train_vision=True)
    _train(world, tmp_path / "tv2", None, train_vision=True)  # pixels, streamed per batch


def test_evaluate_with_the_store_gives_the_same_json(world, store, tmp_path):
    f = world["files"]
    assert main(["train", "--params", f["params"], "--method", "zero_shot", "--cohort", f["cohort"],
                 "--benchmark", f["benchmark"], "--contextual", f["contextual"], "--out", str(tmp_path / "zs")]) == 0
    results = []
    for name, extra in (("pixels", []), ("store", ["--embeddings", str(store)])):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--params", f["params"], "--method", "zero_shot", "--model-dir", str(tmp_path / "zs"),
                     "--cohort", f["cohort"], "--benchmark", f["benchmark"], "--contextual", f["contextual"],
                     *extra, "--out", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0] == results[1]


def test_vision_trained_model_dirs_do_not_use_the_store(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    # the manifest says whether this method's tower trained (train.train_vision may name methods)
    (d / "params_used.json").write_text(json.dumps({"train": {"train_vision": ["grounded"]}}))
    (d / "manifest.json").write_text(json.dumps({"trained": True, "vision_trained": True}))
    assert E.vision_trained(d) and E.store_for_model(tmp_path / "missing", {}, d) is None
    (d / "manifest.json").write_text(json.dumps({"trained": True, "vision_trained": False}))
    assert not E.vision_trained(d)
    # a folder written before the manifest had the field: params_used.json's train.train_vision: true
    (d / "manifest.json").write_text(json.dumps({"trained": True}))
    (d / "params_used.json").write_text(json.dumps({"train": {"train_vision": True}}))
    assert E.vision_trained(d)
    (d / "params_used.json").write_text(json.dumps({"train": {"train_vision": False}}))
    assert not E.vision_trained(d)


def test_train_vision_names_the_methods_whose_tower_trains(world, tmp_path):
    """train.train_vision: [grounded] trains grounded's tower only; true every trained method's;
    zero_shot never; the beta sweep counts as nast. The stage records it in manifest.json, and
    the tower's parameters really train (and only then)."""
    from nast.train.methods import trains_vision

    tp = {"train_vision": ["grounded", "nast"]}
    assert trains_vision("grounded", tp) and trains_vision("nast", tp)
    assert not trains_vision("lora_uniform", tp) and not trains_vision("nast-grounded", tp)
    assert trains_vision("dpo", {"train_vision": True}) and not trains_vision("zero_shot", {"train_vision": True})
    assert not trains_vision("grounded", {"train_vision": False})
    params = {**world["params"], "train": {**world["params"]["train"], "train_vision": ["nast"]}}
    assert resolve_method("nast", params, beta="0.5").vision
    assert not resolve_method("lora_uniform", params).vision and not resolve_method("zero_shot", params).vision

    f = world["files"]
    import yaml

    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump({**params, "train": {**params["train"], "train_vision": ["lora_uniform"],
                                                         "epochs": 1}}))
    keys = {}
    for method in ("lora_uniform", "topk_layers"):
        argv = ["train", "--params", str(pfile), "--method", method, "--cohort", f["cohort"], "--benchmark",
                f["benchmark"], "--contextual", f["contextual"], "--layer-weights", f["layer_weights"],
                "--out", str(tmp_path / method)]
        assert main(argv) == 0
        assert E.vision_trained(tmp_path / method) == (method == "lora_uniform")
        keys[method] = set(torch.load(tmp_path / method / "adapter.pt", map_location="cpu"))
    assert any(k.startswith("visual.") for k in keys["lora_uniform"])
    assert not any(k.startswith("visual.") for k in keys["topk_layers"])

    # the tower trains at train.vision_lr, not the LoRA lr: a vanishing one leaves it at the base's weights
    base = {f"visual.{k}": v for k, v in load_model(params["model"], device="cpu").model.visual.state_dict().items()}
    moved = {}
    for vlr in (1e-12, 1e-3):
        pfile.write_text(yaml.safe_dump({**params, "train": {**params["train"], "train_vision": ["lora_uniform"],
                                                             "vision_lr": vlr, "epochs": 1}}))
        out = tmp_path / f"vlr{vlr}"
        assert main(["train", "--params", str(pfile), "--method", "lora_uniform", "--cohort", f["cohort"],
                     "--benchmark", f["benchmark"], "--contextual", f["contextual"], "--out", str(out)]) == 0
        state = torch.load(out / "adapter.pt", map_location="cpu")
        weights = [k for k in state if k in base and state[k].is_floating_point() and "running_" not in k]
        moved[vlr] = max(float((state[k].float() - base[k].float()).abs().max()) for k in weights)
        assert any("lora_" in k for k in state)
    assert moved[1e-12] < 1e-8 < 1e-5 < moved[1e-3]


def test_workers_give_the_same_batches(world):
    vl = load_model(world["params"]["model"], device="cpu")
    paths = _paths(world)
    a = torch.cat(list(E.image_batches(vl, paths, 3, workers=0)))
    b = torch.cat(list(E.image_batches(vl, paths, 3, workers=2)))
    assert torch.equal(a, b) and np.isfinite(a.numpy()).all()


def test_base_fingerprint_ignores_torch_save_noise_not_the_weights(tmp_path):
    """Two saves of the same weights (torch.save names its zip folder after the temporary file and
    draws a new serialization id) fingerprint alike; other weights do not (the SLURM test compares
    the store's manifest between a local and a SLURM run)."""
    import os

    import torch

    from nast.models.embeddings import _sha256

    sd = {"w": torch.arange(10.0)}
    for name, tmp in (("a.pt", "a.tmp1"), ("b.pt", "b.tmp2")):
        torch.save(sd, tmp_path / tmp)
        os.replace(tmp_path / tmp, tmp_path / name)
    assert (tmp_path / "a.pt").read_bytes() != (tmp_path / "b.pt").read_bytes()
    assert _sha256(tmp_path / "a.pt") == _sha256(tmp_path / "b.pt")
    torch.save({"w": torch.arange(10.0) + 1}, tmp_path / "c.pt")
    assert _sha256(tmp_path / "a.pt") != _sha256(tmp_path / "c.pt")
