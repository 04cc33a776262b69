"""The pre-resized image cache (nast cache-images): the crops give the very tensors the JPEGs give,
the loaders read them (not the files) once attached, every image is cached exactly once, a cache
at another size is refused naming the key, and a killed run resumes keeping the finished shards."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from PIL import Image

from nast.cli import main
from nast.config import load_params
from nast.errors import StageError
from nast.models import embeddings as E
from nast.models import image_cache as C
from nast.models import load_model
from nast.stages import cache_images


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """11 grayscale/RGB JPEGs of odd, non-square sizes (resize + crop do work), in three splits."""
    tmp = tmp_path_factory.mktemp("cache")
    rng = np.random.default_rng(3)
    rows = []
    for i in range(11):
        w, h = 37 + 5 * i, 71 - 3 * i
        arr = (rng.random((h, w)) * 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L") if i % 3 else Image.fromarray(np.stack([arr] * 3, -1), mode="RGB")
        p = tmp / f"img{i:02d}.jpg"
        img.save(p, quality=90)
        rows.append({"image_path": str(p), "split": ("train", "validate", "test")[i % 3]})
    path = tmp / "cohort.parquet"
    pl.DataFrame(rows).write_parquet(path)
    return {"tmp": tmp, "cohort": str(path), "paths": [r["image_path"] for r in rows], "rows": rows}


def _params(world, tmp: Path, size) -> str:
    params = {**world["params"], "data": {**world["params"]["data"], "image_cache_size": size}}
    path = tmp / f"params-{size}.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


@pytest.fixture(scope="module")
def cache(world, cohort):
    out = cohort["tmp"] / "image_cache"
    assert main(["cache-images", "--params", _params(world, cohort["tmp"], 32), "--cohort", cohort["cohort"],
                 "--out", str(out)]) == 0
    return out


def test_every_image_is_cached_once_per_split(cohort, cache):
    manifest = json.loads((cache / C.MANIFEST).read_text())
    assert manifest["size"] == 32 and manifest["n"] == 11
    assert manifest["n_by_split"] == {"test": 3, "train": 4, "validate": 4}
    index = pl.read_parquet(cache / C.INDEX)
    assert index["image_path"].to_list() == sorted(cohort["paths"])
    for s in manifest["shards"]:
        assert np.load(cache / s["file"]).shape == (s["n"], 32, 32)


def test_cached_crops_give_the_files_tensors(world, cohort, cache):
    vl = load_model(world["params"]["model"], device="cpu")
    c = C.open_cache(cache)
    for p in cohort["paths"]:
        with Image.open(p) as img:
            want = vl.preprocess(img)
        assert torch.equal(vl.from_crop(c.crop(p)), want), p
    with torch.no_grad():
        plain = E.embed_paths(vl, cohort["paths"], batch_size=4)
        vl.use_image_cache(c)
        cached = E.embed_paths(vl, cohort["paths"], batch_size=4)
    assert torch.equal(plain, cached)
    assert c.crop("nowhere.jpg") is None


def test_attached_cache_is_read_instead_of_the_files(world, cohort, cache, tmp_path):
    """A planted change in the cache shows in the embeddings: the loader reads the crops."""
    import shutil

    planted = tmp_path / "cache"
    shutil.copytree(cache, planted)
    manifest = json.loads((planted / C.MANIFEST).read_text())
    shard = planted / manifest["shards"][0]["file"]
    arr = np.load(shard)
    arr[0] = 255 - arr[0]
    np.save(shard, arr)
    vl = load_model(world["params"]["model"], device="cpu")
    first = sorted(p for p in cohort["paths"] if p in {r["image_path"] for r in cohort["rows"]
                                                       if r["split"] == manifest["shards"][0]["split"]})[0]
    with torch.no_grad():
        plain = E.embed_paths(vl, [first])
        vl.use_image_cache(C.open_cache(planted))
        read = E.embed_paths(vl, [first])
    assert not torch.allclose(plain, read)


def test_cache_at_another_size_is_refused_naming_the_key(world, cohort, tmp_path):
    """cache-images refuses a size the model's config does not declare, before decoding anything;
    a cache at another size (built around that check) is refused by every reader."""
    out = tmp_path / "c48"
    p48 = _params(world, tmp_path, 48)
    assert main(["cache-images", "--params", p48, "--cohort", cohort["cohort"], "--out", str(out)]) == 2
    assert not out.exists()
    with pytest.raises(StageError, match=r"data.image_cache_size is 48 but the model .* takes 32 px: set "
                                         r"data.image_cache_size: 32"):
        cache_images.run(cache_images_args(cohort, out), load_params(p48))
    by_split: dict[str, list[str]] = {}
    for r in cohort["rows"]:
        by_split.setdefault(r["split"], []).append(r["image_path"])
    C.write_cache(out, {k: sorted(v) for k, v in by_split.items()}, 48)
    vl = load_model(world["params"]["model"], device="cpu")
    with pytest.raises(StageError, match=r"cached at 48 px but the model takes 32 px; set data.image_cache_size: 32"):
        vl.use_image_cache(C.open_cache(out))
    # the stage that reads it stops with the message (exit 2)
    f = world["files"]
    assert main(["embed-images", "--params", f["params"], "--cohort", f["cohort"], "--image-cache", str(out),
                 "--out", str(tmp_path / "emb")]) == 2


def cache_images_args(cohort, out):
    return argparse.Namespace(cohort=cohort["cohort"], grounding=None, out=str(out))


def test_no_size_no_cache(world, cohort, tmp_path):
    assert main(["cache-images", "--params", _params(world, tmp_path, None), "--cohort", cohort["cohort"],
                 "--out", str(tmp_path / "c")]) == 2


def test_an_image_in_two_splits_or_a_missing_file_is_an_error(cohort, tmp_path):
    p = cohort["paths"]
    with pytest.raises(StageError, match="is in two splits"):
        C.write_cache(tmp_path / "a", {"train": p[:3], "test": p[2:4]}, 32)
    with pytest.raises(StageError, match=r"image not found: .*missing\.jpg"):
        C.write_cache(tmp_path / "b", {"train": p[:2] + [str(tmp_path / "missing.jpg")]}, 32)


def test_a_killed_run_resumes_keeping_the_finished_shards(cohort, tmp_path):
    by_split = {"train": cohort["paths"][:7], "test": cohort["paths"][7:]}
    fresh = C.write_cache(tmp_path / "fresh", by_split, 32, shard=2)
    assert fresh["shards_written"] == len(fresh["shards"]) == 6 and fresh["shards_kept"] == 0
    out = tmp_path / "resumed"
    C.write_cache(out, by_split, 32, shard=2)
    # a kill: the last shard's array never reached its name, and a temp file is left behind
    last = fresh["shards"][-1]["file"]
    (out / last).unlink()
    (out / f".{last}.tmp-999").write_bytes(b"partial")
    stamps = {f: os.stat(out / f).st_mtime_ns for f in (s["file"] for s in fresh["shards"][:-1])}
    again = C.write_cache(out, by_split, 32, shard=2)
    assert (again["shards_kept"], again["shards_written"]) == (5, 1)
    assert {f: os.stat(out / f).st_mtime_ns for f in stamps} == stamps  # kept, not rewritten
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "fresh").iterdir())
    for s in fresh["shards"]:
        assert np.array_equal(np.load(out / s["file"]), np.load(tmp_path / "fresh" / s["file"]))
    assert pl.read_parquet(out / C.INDEX).equals(pl.read_parquet(tmp_path / "fresh" / C.INDEX))
    # another plan (other paths): the stale shards go, the counts still reconcile
    other = C.write_cache(out, {"train": cohort["paths"][:3]}, 32, shard=2)
    assert other["n"] == 3 and sorted(p.name for p in out.glob("*.npy")) == ["train-0000.npy", "train-0001.npy"]


def test_embed_images_on_the_cache_writes_the_same_store(world, tmp_path):
    f = world["files"]
    cache = tmp_path / "cache"
    params = _params(world, tmp_path, 32)
    assert main(["cache-images", "--params", params, "--cohort", f["cohort"], "--out", str(cache)]) == 0
    for name, extra in (("plain", []), ("cached", ["--image-cache", str(cache)])):
        assert main(["embed-images", "--params", params, "--cohort", f["cohort"], *extra,
                     "--out", str(tmp_path / name)]) == 0
    assert np.array_equal(np.load(tmp_path / "plain" / E.ARRAY), np.load(tmp_path / "cached" / E.ARRAY))


def test_train_vision_on_the_cache_trains_the_same_weights(world, tmp_path):
    """train.train_vision reads pixels every step: from the cache they are the files' pixels, so
    the trained adapter is the same."""
    f = world["files"]
    params = {**world["params"], "data": {**world["params"]["data"], "image_cache_size": 32},
              "train": {**world["params"]["train"], "train_vision": True, "epochs": 1}}
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    cache = tmp_path / "cache"
    assert main(["cache-images", "--params", str(pfile), "--cohort", f["cohort"], "--out", str(cache)]) == 0
    weights = {}
    for name, extra in (("plain", []), ("cached", ["--image-cache", str(cache)])):
        argv = ["train", "--params", str(pfile), "--method", "lora_uniform", "--cohort", f["cohort"],
                "--benchmark", f["benchmark"], "--contextual", f["contextual"], *extra, "--out", str(tmp_path / name)]
        assert main(argv) == 0
        weights[name] = torch.load(tmp_path / name / "adapter.pt", map_location="cpu")
    assert weights["plain"].keys() == weights["cached"].keys() and weights["plain"]
    for k in weights["plain"]:
        assert torch.equal(weights["plain"][k], weights["cached"][k]), k


def test_grounding_images_get_their_own_split_once(cohort):
    """cache-images --grounding: the counterfactuals and controls that are not cohort images, once
    each, in a 'grounding' split; a cohort split of that name is refused."""
    cf = [str(Path(cohort["tmp"]) / f"cf{i}.jpg") for i in range(3)]
    grounding = pl.DataFrame({"cf_path": [cf[0], cf[1], cf[0]], "ctrl_path": [cf[2], None, cohort["paths"][0]]})
    by_split = cache_images.paths_by_split(pl.read_parquet(cohort["cohort"]), grounding)
    assert by_split[C.GROUNDING_SPLIT] == sorted(cf)
    assert sum(len(v) for v in by_split.values()) == len(cohort["paths"]) + 3
    clash = pl.DataFrame({"image_path": ["a.jpg"], "split": [C.GROUNDING_SPLIT]})
    with pytest.raises(StageError, match="clashes"):
        cache_images.paths_by_split(clash, grounding)
