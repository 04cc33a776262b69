"""The three CLIP families behind :class:`nast.models.VLModel` (local files only, no hub).

=============  =======================================  ============================================
family         architecture                             text block stack / LoRA targets per block
=============  =======================================  ============================================
open_clip      open_clip ``CLIP`` (OpenAI layout;       ``transformer.resblocks[i]``;
               CheXzero, the demo model)                ``attn`` (the nn.MultiheadAttention, PEFT's
                                                        LoRA MHA layer: in_proj + out_proj),
                                                        ``mlp.c_fc``, ``mlp.c_proj``
open_clip_hf   open_clip ``CustomTextCLIP`` with a HF   ``text.transformer.encoder.layer[i]``;
               BERT text tower (BiomedCLIP)             ``query``, ``key``, ``value``, ``dense``
hf_clip        HuggingFace ``CLIPModel`` (PubMedCLIP)   ``text_model.encoder.layers[i]``;
                                                        ``q_proj``, ``k_proj``, ``v_proj``,
                                                        ``out_proj``, ``fc1``, ``fc2``
=============  =======================================  ============================================

Where the files come from (``params.model``):

* ``open_clip``: ``checkpoint`` = a state dict (.pt/.bin/.safetensors; a ``{"state_dict": ...}``
  training checkpoint or a TorchScript archive also work, ``module.`` prefixes are stripped).
  ``name`` = a model-config JSON path, else ``model_config.json`` next to the checkpoint, else a
  config shipped in ``nast/models/configs/<name>.json``, else an open_clip built-in config name
  (e.g. ``ViT-B-32-quickgelu`` for CheXzero). ``name: openai`` infers the architecture from an
  OpenAI-layout state dict (``open_clip.model.build_model_from_openai_state_dict``).
* ``open_clip_hf``: ``name`` = the open_clip config JSON (BiomedCLIP's ``open_clip_config.json``:
  ``{"model_cfg": ..., "preprocess_cfg": ...}`` or a bare model config). Its
  ``text_cfg.hf_model_name`` (and ``hf_tokenizer_name``) must be a LOCAL directory holding the
  BERT ``config.json`` and tokenizer files -- absolute, relative to the JSON's folder, or relative
  to the working directory. The BERT tower is built from that config (never downloaded) and all
  weights come from ``checkpoint``.
* ``hf_clip``: ``checkpoint`` (or ``name``) = a local ``CLIPModel`` directory: ``config.json``,
  ``model.safetensors`` or ``pytorch_model.bin``, tokenizer files, optionally
  ``preprocessor_config.json`` (image size / mean / std).

Any missing file raises :class:`nast.errors.StageError` naming it.
"""

from __future__ import annotations

import inspect
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nast.config import params_file as _pf
from nast.errors import MissingFileError, StageError
from nast.models.base import OPENAI_MEAN, OPENAI_STD, VLModel

# belt and braces: nothing in this package may reach the HuggingFace hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# ----------------------------------------------------------------------------- helpers
def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Load a checkpoint file into a flat float32 state dict (never executes pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "model checkpoint")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # TorchScript archive (OpenAI's original .pt files)
            try:
                sd = torch.jit.load(str(path), map_location="cpu").state_dict()
            except Exception:
                raise StageError(f"{path}: not a readable checkpoint ({exc})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise StageError(f"{path}: checkpoint is not a state dict")
    out = {}
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module."):]
        out[k] = v.float() if torch.is_tensor(v) and v.is_floating_point() else v
    return out


def package_config(name: str) -> Path:
    return Path(str(resources.files("nast.models") / "configs" / f"{name}.json"))


def resolve_open_clip_config(name: str, checkpoint: str | Path | None) -> tuple[dict | None, Path | None]:
    """Find the model config for ``name`` (see module docstring); (None, None) for ``openai``."""
    if name == "openai":
        return None, None
    p = Path(name)
    if p.suffix == ".json" or p.is_file():
        if not p.is_file():
            raise MissingFileError(p, "model config")
        return json.loads(p.read_text()), p
    if checkpoint is not None:
        beside = Path(checkpoint).parent / "model_config.json"
        if beside.is_file():
            return json.loads(beside.read_text()), beside
    pkg = package_config(name)
    if pkg.is_file():
        return json.loads(pkg.read_text()), pkg
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise StageError(
            f"model config not found: {name!r} is neither a JSON file, nor {pkg}, nor an open_clip "
            f"built-in config ({_pf()}: model.name)"
        )
    return dict(cfg), None


def split_config(cfg: dict) -> tuple[dict, dict]:
    """(model_cfg, preprocess_cfg) from a bare config or a ``{"model_cfg", "preprocess_cfg"}`` one."""
    if "model_cfg" in cfg:
        return dict(cfg["model_cfg"]), dict(cfg.get("preprocess_cfg") or {})
    model_cfg = {k: v for k, v in cfg.items() if k != "preprocess_cfg"}
    return model_cfg, dict(cfg.get("preprocess_cfg") or {})


def _constructor_kwargs(cls, cfg: dict) -> dict:
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return {k: v for k, v in cfg.items() if k in allowed}


def _load_weights(model: nn.Module, sd: dict[str, Tensor], source: Path) -> None:
    for k in ("input_resolution", "context_length", "vocab_size"):
        sd.pop(k, None)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    # position_ids buffers of HF towers are not always saved
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise StageError(
            f"{source}: checkpoint does not match the model config: missing keys "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected keys "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for k, v in sd.items():
        if own[k].shape != v.shape:
            raise StageError(f"{source}: key {k!r} has shape {tuple(v.shape)}, config expects {tuple(own[k].shape)}")
    model.load_state_dict(sd, strict=False)


class _TextTower(nn.Module):
    """A view on the text parameters of a native open_clip CLIP (they live on the CLIP module)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.positional_embedding = clip.positional_embedding
        if isinstance(clip.text_projection, nn.Module):
            self.text_projection = clip.text_projection
        elif clip.text_projection is not None:
            self.text_projection = clip.text_projection


# ----------------------------------------------------------------------------- open_clip

def open_clip_patch_embeddings(visual: nn.Module, pixels: Tensor) -> Tensor | None:
    """``[B, h, w, D]`` spatial embeddings of an open_clip image tower in the joint space.

    * ``ModifiedResNet`` (attention pooling): the final feature map with the pool's positional
      embedding, through the pool's value and output projections, i.e. attention pooling with
      each location attending only to itself (the dense reading of CLIP's pool, as in MaskCLIP).
    * ``VisionTransformer``: the final patch tokens through ``ln_post`` and ``proj``, the path the
      class token takes to the embedding.
    None for any other tower (e.g. a timm trunk).
    """
    if hasattr(visual, "attnpool") and hasattr(visual, "layer4"):
        x = visual.stem(pixels)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(visual, name)(x)
        b, c, h, w = x.shape
        pool = visual.attnpool
        tokens = x.flatten(2).permute(0, 2, 1)  # [B, hw, C]
        pos = pool.positional_embedding[1:]
        if pos.shape[0] != h * w:
            return None
        tokens = pool.c_proj(pool.v_proj(tokens + pos[None].to(tokens.dtype)))
        return tokens.reshape(b, h, w, -1)
    if hasattr(visual, "_embeds") and hasattr(visual, "transformer") and hasattr(visual, "grid_size"):
        gh, gw = visual.grid_size
        x = visual.transformer(visual._embeds(pixels))
        x = visual.ln_post(x)[:, -gh * gw :]
        if visual.proj is not None:
            x = x @ visual.proj
        return x.reshape(x.shape[0], gh, gw, -1)
    return None


class OpenClipModel(VLModel):
    """open_clip native ``CLIP`` (OpenAI layout): causal text transformer, EOT pooling."""

    family = "open_clip"
    lora_suffixes = ("attn", "mlp.c_fc", "mlp.c_proj")

    def __init__(self, model: nn.Module, **kw):
        super().__init__(model, **kw)
        from open_clip.tokenizer import SimpleTokenizer

        self.context_length = int(model.context_length)
        self._tokenizer = SimpleTokenizer(context_length=self.context_length)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        ids = self._tokenizer(list(texts), context_length=self.context_length)
        return {"input_ids": ids.to(self.device)}

    def token_lengths(self, tokens: dict[str, Tensor]) -> Tensor:
        ids = tokens["input_ids"]
        if self.model.attn_mask is None:  # bidirectional without a padding mask: padding is read too
            return torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long, device=ids.device)
        # SimpleTokenizer: <sot> ... <eot> then pad 0; the EOT id is the largest id in the row
        return ids.argmax(-1) + 1

    def encode_image(self, pixels: Tensor) -> Tensor:
        return self._normalize(self.model.encode_image(pixels))

    def patch_embeddings(self, pixels: Tensor) -> Tensor | None:
        return open_clip_patch_embeddings(self.model.visual, pixels)

    def encode_text(self, tokens: dict[str, Tensor]) -> Tensor:
        return self._normalize(self.model.encode_text(tokens["input_ids"]))

    def causal_readout_index(self, tokens: dict[str, Tensor]) -> Tensor | None:
        m = self.model
        if m.attn_mask is None:
            return None
        ids = tokens["input_ids"]
        if m.text_pool_type == "argmax":
            return ids.argmax(-1)
        if m.text_pool_type == "eos":
            return (ids == m.text_eos_id).int().argmax(-1)
        if m.text_pool_type == "first":
            return torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
        return None  # 'last' / 'none': every position can matter

    def text_layers(self) -> list[nn.Module]:
        return list(self.model.transformer.resblocks)

    def text_layer_prefix(self) -> str:
        return "transformer.resblocks"

    def text_module(self) -> nn.Module:
        return _TextTower(self.model)

    # decomposition ------------------------------------------------------------
    def text_embed(self, tokens: dict[str, Tensor]) -> Tensor:
        m = self.model
        ids = tokens["input_ids"]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(ids).to(cast)
        return x + m.positional_embedding[: ids.shape[1]].to(cast)

    def text_context(self, tokens: dict[str, Tensor], hidden: Tensor) -> dict[str, Any]:
        m = self.model
        T = hidden.shape[1]
        mask = m.attn_mask[:T, :T] if m.attn_mask is not None else None
        return {"attn_mask": mask, "input_ids": tokens["input_ids"]}

    def text_block(self, i: int, hidden: Tensor, ctx: dict[str, Any]) -> Tensor:
        tr = self.model.transformer
        blk = tr.resblocks[i]
        if not tr.batch_first:
            return blk(hidden.transpose(0, 1), attn_mask=ctx["attn_mask"]).transpose(0, 1)
        return blk(hidden, attn_mask=ctx["attn_mask"])

    def runs_suffix(self, i: int) -> bool:
        """open_clip's plain causal block: self-attention through an unwrapped
        nn.MultiheadAttention with packed in-projection (a LoRA-wrapped one runs whole blocks)."""
        blk = self.model.transformer.resblocks[i]
        attn = getattr(blk, "attn", None)
        return (self.model.attn_mask is not None and not hasattr(blk, "ln_1_kv")
                and type(attn) is nn.MultiheadAttention and attn._qkv_same_embed_dim
                and attn.bias_k is None and not attn.add_zero_attn
                and all(hasattr(blk, n) for n in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2")))

    def text_block_kv(self, i: int, hidden: Tensor) -> Tensor:
        blk = self.model.transformer.resblocks[i]
        W = hidden.shape[-1]
        b = blk.attn.in_proj_bias
        return F.linear(blk.ln_1(hidden), blk.attn.in_proj_weight[W:], None if b is None else b[W:])

    def text_block_suffix(self, i: int, suffix: Tensor, kv_prefix: Tensor) -> Tensor:
        m = self.model
        blk = m.transformer.resblocks[i]
        attn = blk.attn
        N, S, W = suffix.shape
        P = kv_prefix.shape[1]
        H = attn.num_heads
        qkv = F.linear(blk.ln_1(suffix), attn.in_proj_weight, attn.in_proj_bias)
        q, kv = qkv[..., :W], torch.cat([kv_prefix, qkv[..., W:]], 1)
        k, v = kv[..., :W], kv[..., W:]

        def heads(x: Tensor) -> Tensor:
            return x.reshape(N, x.shape[1], H, W // H).transpose(1, 2)

        mask = m.attn_mask[P:P + S, :P + S].to(suffix.dtype)  # the suffix's rows of the causal mask
        o = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask)
        x = suffix + blk.ls_1(attn.out_proj(o.transpose(1, 2).reshape(N, S, W)))
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))

    def text_readout(self, hidden: Tensor, ctx: dict[str, Any]) -> Tensor:
        from open_clip.transformer import text_global_pool

        m = self.model
        x = m.ln_final(hidden)
        x = text_global_pool(x, ctx["input_ids"], m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        if m.text_projection is not None:
            x = m.text_projection(x) if isinstance(m.text_projection, nn.Linear) else x @ m.text_projection
        return self._normalize(x)


def declared_image_size(mp: dict) -> int | None:
    """The input size (px) the model of ``mp`` (params.yaml's ``model:`` section) will take, read
    from its config files alone, without its weights: a stage can refuse a mismatch before any
    work. None when the configs do not say (an OpenAI-layout checkpoint, a file not there yet):
    the loader then reports what is missing, and :meth:`VLModel.use_image_cache` checks again."""
    try:
        family = mp["family"]
        if family == "hf_clip":
            d = _hf_clip_dir(mp)
            size = json.loads((d / "config.json").read_text()).get("vision_config", {}).get("image_size", 224)
            return _hf_clip_preprocess(d, int(size))[0]
        if family == "open_clip":
            cfg, _ = resolve_open_clip_config(str(mp["name"]), mp.get("checkpoint"))
        elif family == "open_clip_hf":
            cfg = json.loads(Path(str(mp["name"])).read_text())
        else:
            return None
        if cfg is None:
            return None
        size = (split_config(cfg)[0].get("vision_cfg") or {}).get("image_size", 224)  # open_clip's default
        return int(size[0] if isinstance(size, (list, tuple)) else size)
    except (StageError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def load_open_clip(mp: dict, device: torch.device) -> OpenClipModel:
    import open_clip
    from open_clip.model import CLIP, build_model_from_openai_state_dict

    ckpt = Path(mp["checkpoint"])
    sd = read_state_dict(ckpt)
    cfg, cfg_path = resolve_open_clip_config(str(mp["name"]), ckpt)
    if cfg is None:
        if "text_projection" not in sd:
            raise StageError(f"{ckpt}: not an OpenAI-layout CLIP state dict (no 'text_projection')")
        # open_clip's OpenAI-layout builder infers the architecture but loads into fp16 params;
        # reload the full-precision weights afterwards so nothing is rounded.
        model = build_model_from_openai_state_dict(dict(sd), quick_gelu=True, cast_dtype=None).float()
        _load_weights(model, sd, ckpt)
        model_cfg, pre = {}, {}
    else:
        model_cfg, pre = split_config(cfg)
        if model_cfg.get("text_cfg", {}).get("hf_model_name"):
            raise StageError(f"{cfg_path or mp['name']}: has a HF text tower; use model.family: open_clip_hf")
        model = CLIP(**_constructor_kwargs(CLIP, model_cfg))
        _load_weights(model, sd, ckpt)
    del open_clip
    v = model.visual
    image_size = v.image_size[0] if isinstance(v.image_size, (tuple, list)) else v.image_size
    vl = OpenClipModel(
        model.to(device).eval(),
        image_size=int(image_size),
        mean=pre.get("mean", OPENAI_MEAN),
        std=pre.get("std", OPENAI_STD),
        device=device,
        config={"model_cfg": model_cfg, "preprocess_cfg": pre, "config_path": str(cfg_path) if cfg_path else None},
    )
    return vl


# ----------------------------------------------------------------------------- open_clip_hf
class OpenClipHFModel(VLModel):
    """open_clip ``CustomTextCLIP`` with a HuggingFace BERT text tower (BiomedCLIP layout)."""

    family = "open_clip_hf"
    lora_suffixes = ("query", "key", "value", "dense")

    def __init__(self, model: nn.Module, *, tokenizer, context_length: int, **kw):
        super().__init__(model, **kw)
        self._tokenizer = tokenizer
        self.context_length = int(context_length)

    @property
    def _hf(self) -> nn.Module:
        return self.model.text.transformer

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        enc = self._tokenizer(list(texts), padding="max_length", truncation=True,
                              max_length=self.context_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device),
                "attention_mask": enc["attention_mask"].to(self.device)}

    def encode_image(self, pixels: Tensor) -> Tensor:
        return self._normalize(self.model.encode_image(pixels))

    def patch_embeddings(self, pixels: Tensor) -> Tensor | None:
        return open_clip_patch_embeddings(self.model.visual, pixels)

    def encode_text(self, tokens: dict[str, Tensor]) -> Tensor:
        return self._normalize(self.model.encode_text(tokens["input_ids"]))

    def text_layers(self) -> list[nn.Module]:
        return list(self._hf.encoder.layer)

    def text_layer_prefix(self) -> str:
        return "text.transformer.encoder.layer"

    def text_module(self) -> nn.Module:
        return self.model.text

    def _pad_mask(self, ids: Tensor) -> Tensor:
        # exactly what open_clip's HFTextEncoder.forward uses
        return (ids != self.model.text.config.pad_token_id).long()

    def token_lengths(self, tokens: dict[str, Tensor]) -> Tensor:
        return self._pad_mask(tokens["input_ids"]).sum(-1)

    def text_embed(self, tokens: dict[str, Tensor]) -> Tensor:
        return self._hf.embeddings(input_ids=tokens["input_ids"])

    def text_context(self, tokens: dict[str, Tensor], hidden: Tensor) -> dict[str, Any]:
        from transformers.masking_utils import create_bidirectional_mask

        am = self._pad_mask(tokens["input_ids"])
        mask = create_bidirectional_mask(config=self._hf.config, inputs_embeds=hidden, attention_mask=am)
        return {"attn_mask": mask, "pad_mask": am}

    def text_block(self, i: int, hidden: Tensor, ctx: dict[str, Any]) -> Tensor:
        out = self._hf.encoder.layer[i](hidden, ctx["attn_mask"])
        return out[0] if isinstance(out, tuple) else out

    def text_readout(self, hidden: Tensor, ctx: dict[str, Any]) -> Tensor:
        from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

        pooler = getattr(self._hf, "pooler", None)
        out = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden, pooler_output=pooler(hidden) if pooler is not None else None)
        text = self.model.text
        return self._normalize(text.proj(text.pooler(out, ctx["pad_mask"])))


def _local_dir(value: str, base: Path, what: str, key: str, need_config: bool = True) -> Path:
    """A local directory named in a config: absolute, relative to the config's folder, or to CWD."""
    for cand in (Path(value), base / value, Path.cwd() / value):
        if cand.is_dir() and (not need_config or (cand / "config.json").is_file()):
            return cand
    missing = base / value / "config.json" if need_config else base / value
    raise StageError(f"{what} not found: {missing} ({key} = {value!r} must be a local directory; "
                     f"nothing is downloaded)")


def _hf_tokenizer(path: Path):
    from transformers import AutoTokenizer

    has = any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "vocab.json"))
    if not has:
        raise StageError(f"tokenizer not found: {path / 'tokenizer.json'} (nor vocab.txt / vocab.json)")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def load_open_clip_hf(mp: dict, device: torch.device) -> OpenClipHFModel:
    from open_clip.model import CustomTextCLIP

    ckpt = Path(mp["checkpoint"])
    cfg_path = Path(str(mp["name"]))
    if not cfg_path.is_file():
        raise MissingFileError(cfg_path, "model config")
    model_cfg, pre = split_config(json.loads(cfg_path.read_text()))
    text_cfg = dict(model_cfg.get("text_cfg") or {})
    if not text_cfg.get("hf_model_name"):
        raise StageError(f"{cfg_path}: text_cfg.hf_model_name missing (open_clip_hf needs a HF text tower)")
    base = cfg_path.parent
    hf_dir = _local_dir(text_cfg["hf_model_name"], base, "HF text config", "text_cfg.hf_model_name")
    tok_dir = _local_dir(text_cfg.get("hf_tokenizer_name") or str(hf_dir), base, "tokenizer",
                         "text_cfg.hf_tokenizer_name", need_config=False)
    text_cfg["hf_model_name"] = str(hf_dir)
    text_cfg["hf_model_pretrained"] = False  # config only; the weights come from the checkpoint
    text_cfg.pop("hf_tokenizer_name", None)
    model_cfg["text_cfg"] = text_cfg
    sd = read_state_dict(ckpt)
    tokenizer = _hf_tokenizer(tok_dir)
    model = CustomTextCLIP(**_constructor_kwargs(CustomTextCLIP, model_cfg))
    _load_weights(model, sd, ckpt)
    v = model.visual
    image_size = v.image_size[0] if isinstance(v.image_size, (tuple, list)) else v.image_size
    return OpenClipHFModel(
        model.to(device).eval(),
        tokenizer=tokenizer,
        context_length=int(text_cfg.get("context_length", 77)),
        image_size=int(image_size),
        mean=pre.get("mean", OPENAI_MEAN),
        std=pre.get("std", OPENAI_STD),
        device=device,
        config={"model_cfg": model_cfg, "preprocess_cfg": pre, "config_path": str(cfg_path)},
    )


# ----------------------------------------------------------------------------- hf_clip
class HFClipModel(VLModel):
    """HuggingFace ``CLIPModel`` (PubMedCLIP layout): causal text transformer + padding mask."""

    family = "hf_clip"
    lora_suffixes = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

    def __init__(self, model: nn.Module, *, tokenizer, context_length: int, **kw):
        super().__init__(model, **kw)
        self._tokenizer = tokenizer
        self.context_length = int(context_length)

    @property
    def _tm(self) -> nn.Module:
        return self.model.text_model

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        enc = self._tokenizer(list(texts), padding="max_length", truncation=True,
                              max_length=self.context_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device),
                "attention_mask": enc["attention_mask"].to(self.device)}

    @staticmethod
    def _features(out) -> Tensor:
        return out if torch.is_tensor(out) else out.pooler_output

    def encode_image(self, pixels: Tensor) -> Tensor:
        return self._normalize(self._features(self.model.get_image_features(pixel_values=pixels)))

    def patch_embeddings(self, pixels: Tensor) -> Tensor | None:
        """Final patch tokens through ``post_layernorm`` and ``visual_projection`` (the path of
        the class token to the image embedding)."""
        vm = self.model.vision_model
        x = vm(pixel_values=pixels).last_hidden_state[:, 1:]
        n = x.shape[1]
        g = int(round(n ** 0.5))
        if g * g != n:
            return None
        x = self.model.visual_projection(vm.post_layernorm(x))
        return x.reshape(x.shape[0], g, g, -1)

    def encode_text(self, tokens: dict[str, Tensor]) -> Tensor:
        out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"))
        return self._normalize(self._features(out))

    def text_layers(self) -> list[nn.Module]:
        return list(self._tm.encoder.layers)

    def text_layer_prefix(self) -> str:
        return "text_model.encoder.layers"

    def text_module(self) -> nn.Module:
        return self._tm

    def text_embed(self, tokens: dict[str, Tensor]) -> Tensor:
        return self._tm.embeddings(input_ids=tokens["input_ids"])

    def text_context(self, tokens: dict[str, Tensor], hidden: Tensor) -> dict[str, Any]:
        from transformers.masking_utils import create_causal_mask

        mask = create_causal_mask(config=self._tm.config, inputs_embeds=hidden,
                                  attention_mask=tokens.get("attention_mask"), past_key_values=None)
        # the pooling rule of CLIPTextTransformer (legacy argmax when eos_token_id == 2)
        return {"attn_mask": mask, "pool_idx": self.causal_readout_index(tokens)}

    def causal_readout_index(self, tokens: dict[str, Tensor]) -> Tensor | None:
        ids = tokens["input_ids"].to(torch.int)
        eos = self._tm.eos_token_id
        return ids.argmax(-1) if eos == 2 else (ids == eos).int().argmax(-1)

    def text_block(self, i: int, hidden: Tensor, ctx: dict[str, Any]) -> Tensor:
        out = self._tm.encoder.layers[i](hidden, ctx["attn_mask"], is_causal=True)
        return out[0] if isinstance(out, tuple) else out

    def text_readout(self, hidden: Tensor, ctx: dict[str, Any]) -> Tensor:
        x = self._tm.final_layer_norm(hidden)
        pooled = x[torch.arange(x.shape[0], device=x.device), ctx["pool_idx"]]
        return self._normalize(self.model.text_projection(pooled))


def _hf_clip_dir(mp: dict) -> Path:
    """The local ``CLIPModel`` directory of ``mp``: ``checkpoint`` when it is one, else ``name``."""
    return Path(mp["checkpoint"]) if Path(str(mp["checkpoint"])).is_dir() else Path(str(mp["name"]))


def _hf_clip_preprocess(d: Path, size: int) -> tuple[int, tuple | list, tuple | list]:
    """(input size, mean, std) of the ``CLIPModel`` directory ``d`` whose vision config says
    ``size``: ``preprocessor_config.json``'s crop size and normalisation where it has them."""
    mean, std = OPENAI_MEAN, OPENAI_STD
    pre_path = d / "preprocessor_config.json"
    if pre_path.is_file():
        pre = json.loads(pre_path.read_text())
        mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
        crop = pre.get("crop_size", size)
        size = int(crop.get("height", size) if isinstance(crop, dict) else crop)
    return size, mean, std


def load_hf_clip(mp: dict, device: torch.device) -> HFClipModel:
    from transformers import CLIPModel

    d = _hf_clip_dir(mp)
    if not (d / "config.json").is_file():
        raise MissingFileError(d / "config.json", "HF CLIP config")
    if not any((d / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise MissingFileError(d / "model.safetensors", "HF CLIP weights (model.safetensors / pytorch_model.bin)")
    tokenizer = _hf_tokenizer(d)
    model = CLIPModel.from_pretrained(str(d), local_files_only=True)
    model = model.float()
    size, mean, std = _hf_clip_preprocess(d, int(model.config.vision_config.image_size))
    return HFClipModel(
        model.to(device).eval(),
        tokenizer=tokenizer,
        context_length=int(model.config.text_config.max_position_embeddings),
        image_size=size,
        mean=mean,
        std=std,
        device=device,
        config={"model_dir": str(d)},
    )


LOADERS = {"open_clip": load_open_clip, "open_clip_hf": load_open_clip_hf, "hf_clip": load_hf_clip}
