"""nast.models: one interface over open_clip / open_clip_hf / hf_clip, tiny random models, offline."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nast.errors import StageError
from nast.models import load_model

FAMILIES = ("open_clip", "open_clip_hf", "hf_clip")
#: adapters per text block: open_clip attn (MHA) + c_fc + c_proj; BERT q,k,v + 3 dense; HF CLIP q,k,v,out,fc1,fc2
TARGETS_PER_BLOCK = {"open_clip": 3, "open_clip_hf": 6, "hf_clip": 6}
CAPTIONS = ["There is no pleural effusion.", "Mild pulmonary edema", "heart size is normal"]


def _gray(w=50, h=40, seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8)
    return Image.fromarray(arr, "L")


@pytest.mark.parametrize("family", FAMILIES)
def test_encoders_shapes_and_normalisation(tiny_models, family):
    vl = tiny_models[family]
    assert vl.family == family
    tokens = vl.tokenize(CAPTIONS)
    assert tokens["input_ids"].shape[0] == 3
    if family != "open_clip":
        assert tokens["attention_mask"].shape == tokens["input_ids"].shape
    pixels = torch.stack([vl.preprocess(_gray(seed=i)) for i in range(2)])
    assert pixels.shape == (2, 3, vl.image_size, vl.image_size)
    with torch.no_grad():
        zi, zt = vl.encode_image(pixels), vl.encode_text(tokens)
    assert zi.shape == (2, 32) and zt.shape == (3, 32)
    torch.testing.assert_close(zi.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(zt.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(zt[0], zt[1])  # different captions, different embeddings
    assert vl.logit_scale.numel() == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_text_layers_and_decomposition_match_library_forward(tiny_models, family):
    vl = tiny_models[family]
    assert len(vl.text_layers()) == 3 == vl.n_text_layers
    tokens = vl.tokenize(CAPTIONS)
    T = int(vl.token_lengths(tokens).max())
    with torch.no_grad():
        states, ctx = vl.text_states({k: v[:, :T] for k, v in tokens.items()})
        z = vl.text_readout(states[-1], ctx)
        ref = vl.encode_text(tokens)
    assert len(states) == 4 and states[0].shape[:2] == (3, T)
    torch.testing.assert_close(z, ref, atol=1e-6, rtol=0)
    assert T < tokens["input_ids"].shape[1]  # the trimming below is not vacuous
    with torch.no_grad():
        torch.testing.assert_close(vl.encode_text_trimmed(tokens), ref, atol=1e-6, rtol=0)
    assert any(p.requires_grad for p in vl.text_module().parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_targets_exist_and_select_layers(tiny_models, family):
    vl = tiny_models[family]
    modules = dict(vl.model.named_modules())
    names = vl.lora_target_modules()
    assert len(names) == 3 * TARGETS_PER_BLOCK[family]
    assert all(n in modules for n in names)
    assert not any(n.startswith("visual") or "vision" in n for n in names)
    one = vl.lora_target_modules([1])
    assert len(one) == TARGETS_PER_BLOCK[family]
    assert all(f"{vl.text_layer_prefix()}.1." in n for n in one)
    with pytest.raises(IndexError):
        vl.lora_target_modules([3])


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_adapters_land_exactly_on_the_targets_and_get_gradients(tiny_model_params, family):
    from peft import LoraConfig, get_peft_model

    vl = load_model(tiny_model_params[family], "cpu")  # fresh copy: PEFT modifies the model in place
    targets = vl.lora_target_modules([0, 2])
    peft_model = get_peft_model(vl.model, LoraConfig(r=2, lora_alpha=4, target_modules=vl.lora_target_regex([0, 2])))
    adapted = {n.removeprefix("base_model.model.") for n, m in peft_model.named_modules()
               if hasattr(m, "lora_A") and not n.endswith(".base_layer")}
    adapted = {n for n in adapted if not n.endswith("out_proj") or family == "hf_clip"}
    assert adapted == set(targets)
    z = vl.encode_text(vl.tokenize(CAPTIONS[:2]))
    (z[0] - z[1]).pow(2).sum().backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    if family == "open_clip":
        # the MHA itself is adapted (in_proj + out_proj), so attention gets a gradient
        assert any(".attn.lora_B" in n for n in grads)


def test_preprocess_replicates_gray_and_normalises(tiny_models):
    vl = tiny_models["open_clip"]  # mean 0.5, std 0.25 in the tiny config
    flat = Image.new("L", (20, 30), color=191)
    x = vl.preprocess(flat)
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(x, torch.full_like(x, (191 / 255 - 0.5) / 0.25), atol=1e-5, rtol=0)
    rgb = Image.merge("RGB", [_gray(seed=1)] * 3)
    y = vl.preprocess(rgb)
    assert torch.equal(y[0], y[1]) and torch.equal(y[1], y[2])
    torch.testing.assert_close(y, vl.preprocess(_gray(seed=1)))


def test_missing_checkpoint_names_the_file(tiny_model_params, tmp_path):
    mp = dict(tiny_model_params["open_clip"], checkpoint=str(tmp_path / "nope.pt"))
    with pytest.raises(StageError, match="nope.pt"):
        load_model(mp, "cpu")


def test_missing_bert_config_and_tokenizer_name_the_file(tiny_model_params, tmp_path):
    src = Path(tiny_model_params["open_clip_hf"]["name"]).parent
    dst = tmp_path / "biomed"
    shutil.copytree(src, dst)
    mp = dict(tiny_model_params["open_clip_hf"], name=str(dst / "open_clip_config.json"),
              checkpoint=str(dst / "open_clip_pytorch_model.bin"))
    for f in ("tokenizer.json", "vocab.txt"):
        (dst / "bert" / f).unlink()
    with pytest.raises(StageError, match=r"tokenizer not found: .*bert"):
        load_model(mp, "cpu")
    (dst / "bert" / "config.json").unlink()
    with pytest.raises(StageError, match=r"bert/config.json"):
        load_model(mp, "cpu")


def test_missing_hf_clip_files_name_the_file(tiny_model_params, tmp_path):
    dst = tmp_path / "pubmedclip"
    shutil.copytree(tiny_model_params["hf_clip"]["checkpoint"], dst)
    mp = dict(tiny_model_params["hf_clip"], name=str(dst), checkpoint=str(dst))
    (dst / "model.safetensors").unlink()
    with pytest.raises(StageError, match="model.safetensors"):
        load_model(mp, "cpu")
    (dst / "config.json").unlink()
    with pytest.raises(StageError, match="config.json"):
        load_model(mp, "cpu")


def test_unknown_config_name_is_a_stage_error(tiny_model_params, tmp_path):
    ck = tmp_path / "ck.pt"
    shutil.copyfile(tiny_model_params["open_clip"]["checkpoint"], ck)
    with pytest.raises(StageError, match="no-such-config"):
        load_model(dict(tiny_model_params["open_clip"], name="no-such-config", checkpoint=str(ck)), "cpu")


def test_openai_layout_state_dict_is_inferred(tmp_path):
    """CheXzero-style: a bare OpenAI-layout state dict, architecture inferred (name: openai)."""
    from open_clip.model import CLIP

    cfg = {"embed_dim": 16, "quick_gelu": True,
           "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}}
    torch.manual_seed(1)
    ref = CLIP(**cfg).eval()
    sd = ref.state_dict()
    sd["context_length"] = torch.tensor(16)  # extra keys OpenAI files carry
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "chexzero.pt")
    vl = load_model({"family": "open_clip", "name": "openai", "checkpoint": str(tmp_path / "chexzero.pt")}, "cpu")
    assert vl.n_text_layers == 2 and vl.image_size == 16
    tokens = vl.tokenize(["no pneumothorax"])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(ref.encode_text(tokens["input_ids"]), dim=-1)
        torch.testing.assert_close(vl.encode_text(tokens), expected)


def test_packaged_demo_config_is_the_tiny_clip():
    from importlib import resources

    cfg = json.loads((resources.files("nast.models") / "configs" / "nast-tiny-clip.json").read_text())
    # a small ModifiedResNet image tower (a list of layers), 64 px input
    assert isinstance(cfg["vision_cfg"]["layers"], list) and 64 <= cfg["vision_cfg"]["image_size"] <= 96
    assert cfg["text_cfg"]["vocab_size"] == 49408  # open_clip's SimpleTokenizer


def test_packaged_12_block_demo_config_loads_as_open_clip(tmp_path):
    """nast-tiny-clip-12 (workflow/presets/demo-12block.yaml): the demo's image tower and embed_dim,
    a 12-block text tower (as CheXzero / BiomedCLIP / PubMedCLIP), loaded by its packaged name."""
    import yaml

    from nast.models.families import package_config
    from nast.models.testing import save_tiny_open_clip

    preset = yaml.safe_load((Path(__file__).parents[2] / "workflow/presets/demo-12block.yaml").read_text())
    name = preset["model"]["name"]
    cfg12, cfg4 = (json.loads(package_config(n).read_text()) for n in (name, "nast-tiny-clip"))
    assert cfg12["vision_cfg"] == cfg4["vision_cfg"] and cfg12["embed_dim"] == cfg4["embed_dim"]
    assert cfg12["text_cfg"]["context_length"] == cfg4["text_cfg"]["context_length"]
    mp = save_tiny_open_clip(package_config(name), tmp_path / "m")
    ck = tmp_path / "checkpoint.pt"  # no model_config.json beside it: the packaged name is what resolves
    shutil.copyfile(mp["checkpoint"], ck)
    vl = load_model({"family": "open_clip", "name": name, "checkpoint": str(ck), "device": "cpu"}, "cpu")
    assert vl.family == "open_clip" and vl.n_text_layers == 12 == len(vl.text_layers())
    with torch.no_grad():
        assert vl.encode_text(vl.tokenize(CAPTIONS)).shape == (3, cfg12["embed_dim"])


@pytest.mark.parametrize("family", FAMILIES)
def test_declared_image_size_is_the_loaded_models(tiny_models, tiny_model_params, family, tmp_path):
    """The input size read from the config files alone (nast cache-images checks it before any
    work) is the size the loaded model takes; unknown (None) when the config is not there."""
    from nast.models.families import declared_image_size

    assert declared_image_size(tiny_model_params[family]) == tiny_models[family].image_size
    gone = dict(tiny_model_params[family], name=str(tmp_path / "none.json"), checkpoint=str(tmp_path / "none"))
    assert declared_image_size(gone) is None
    assert declared_image_size({"family": "open_clip", "name": "openai", "checkpoint": None}) is None
