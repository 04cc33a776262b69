"""The NAST trainer: LoRA (PEFT) on the text encoder with per-layer CTE gradient scaling.

Method
------
1. **Adapters.** LoRA adapters are injected with ``peft.inject_adapter_in_model`` on the modules
   named by ``VLModel.lora_target_modules`` (explicit full names, matched exactly - a bare suffix
   would also hit the vision tower). ``torch.nn.MultiheadAttention`` (open_clip native CLIP)
   does not call ``out_proj.forward`` - it reads ``out_proj.weight`` directly - so a LoRA on
   ``attn.out_proj`` would never receive a gradient. Such a target is re-targeted to its parent
   ``nn.MultiheadAttention``, which PEFT adapts as a whole (in_proj and out_proj, merged on the
   fly). Everything else is frozen (the vision tower too, unless ``train.train_vision``).
2. **Gradient scaling.** After every backward pass, the gradient of each trainable parameter of
   text block ``i`` is multiplied by ``alpha_{i+1} ** beta`` (``layer_weights.csv``: layer 0 =
   embeddings, block ``i`` = layer ``i+1``). ``beta = 0`` gives factor 1 everywhere (uniform
   LoRA, also for ``alpha = 0``). With ``nast.scale: lr`` the factor scales the block's learning
   rate instead (AdamW is invariant to a constant per-tensor gradient scale, so only lr scaling
   changes AdamW updates for 0 < alpha < 1; factor 0 freezes a block in both modes). With
   ``nast.normalize: mean`` the factors are divided by their mean over the blocks, so NAST
   spends the same total learning-rate budget as uniform LoRA, redistributed towards the
   high-CTE layers (without it, lr scaling with min-max alphas in [0, 1] also shrinks the
   budget, and NAST would partly be "uniform LoRA with a smaller learning rate").
3. **Loss.** ``clip_loss(image, its caption)`` within the batch + ``lambda_claim *
   claim_loss(true claim caption vs. its foils)``; the hard_negative baseline uses the NegCLIP
   loss instead (see :mod:`nast.train.losses`, :mod:`nast.train.methods`). The CLIP loss's
   caption is one report caption per image (``train.clip_caption: report``, the default: the
   impression plus a random subset of the findings sentences, redrawn every epoch, as in
   ``pretrain-base`` with ``caption: report``) or the claim caption itself (``claim``). Report
   captions keep the adapted encoder aligned with whole reports (retrieval) and carry the
   report's own negated sentences in context; claim captions alone drew the demo's retrieval
   R@5 from 0.36 to 0.12-0.24 and did not move the negated-MCQ accuracy. The claim captions are
   the single claims of ``contextual.parquet`` plus, with ``train.composite_claims`` > 0,
   composite claims built from them (:func:`nast.train.data.composite_groups`: several findings,
   present and absent, in one caption, against foils that flip one of them). The preference
   methods (``dpo``, ``nast-dpo``) replace the claim loss by ``lambda_claim`` x the
   length-regularised DPO loss over the batch's (image, caption > foil) pairs and ``batch_size``
   image-side pairs per step (:mod:`nast.train.preference`); the reference scores come from the
   base model (adapters off), once, before training or resuming.
4. **Determinism and resume.** Seeds from ``train.seed``; epoch ``e`` is shuffled with its own
   generator seeded by ``(seed, e)``. After every epoch ``OUT/state/epoch_NNN.pt`` holds the
   trainable weights, the optimizer state, the torch RNG states, the epoch and the curve so far
   (atomic write). A rerun with the same arguments resumes from the last complete epoch and
   reaches the same final weights and metrics as an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from nast.config import params_file as _pf
from nast.errors import StageError
from nast.models.adapters import (  # noqa: F401 - the adapter format, shared with the evaluation
    ADAPTER_CONFIG,
    ADAPTER_FILE,
    inject_lora,
    load_trainable_state,
    load_trained,
    pin_mha_base_weights,
    trainable_state,
)
from nast.models.data import tokens_on_device
from nast.models.embeddings import embed_paths, load_pixels
from nast.train import losses
from nast.train.data import not_negative_mask, opposite_mask
from nast.train.methods import MethodSpec

log = logging.getLogger(__name__)

STATE_DIR = "state"


# ----------------------------------------------------------------------------- layer weights
def read_layer_weights(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise StageError(f"layer weights not found: {path}")
    df = pl.read_csv(path)
    missing = [c for c in ("layer", "cte", "alpha") if c not in df.columns]
    if missing:
        raise StageError(f"{path}: missing column(s): {', '.join(repr(c) for c in missing)}")
    return df.select(pl.col("layer").cast(pl.Int64), pl.col("cte").cast(pl.Float64),
                     pl.col("alpha").cast(pl.Float64)).sort("layer")


def reversed_layer_weights(lw: pl.DataFrame) -> pl.DataFrame:
    """The control allocation for "does the CTE's choice of layers matter?": every column of the
    text blocks (layers >= 1) reversed over the blocks, so block ``i`` gets what the CTE gave block
    ``L - 1 - i``; layer 0 (the embeddings, never trained by the LoRA methods) is kept. The same
    multiset of factors, hence the same learning-rate budget, on the opposite layers."""
    blocks = lw.filter(pl.col("layer") >= 1).sort("layer")
    if blocks.height == 0:
        raise StageError("layer weights: no text-block rows (layer >= 1) to reverse")
    flipped = blocks.reverse().with_columns(blocks["layer"].alias("layer"))
    return pl.concat([lw.filter(pl.col("layer") < 1), flipped.select(lw.columns)]).sort("layer")


def layer_scales(lw: pl.DataFrame, n_layers: int, beta: float, source: str = "layer_weights.csv") -> list[float]:
    """Factor per text block ``i``: ``alpha_{i+1} ** beta`` (0 ** 0 = 1)."""
    alpha = dict(zip(lw["layer"].to_list(), lw["alpha"].to_list()))
    out = []
    for i in range(n_layers):
        a = alpha.get(i + 1)
        if a is None or a != a:
            raise StageError(f"{source}: no alpha for layer {i + 1} (text block {i}; model has {n_layers} blocks)")
        if a < 0:
            raise StageError(f"{source}: alpha of layer {i + 1} is negative ({a})")
        out.append(1.0 if beta == 0 else float(a) ** float(beta))
    return out


def normalize_scales(scales: list[float], how: str) -> list[float]:
    """``mean``: divide by the mean factor so the per-layer learning rates average ``train.lr``
    (NAST redistributes the update budget over layers instead of shrinking it); ``none``: as is."""
    if how == "none" or not scales:
        return list(scales)
    if how != "mean":
        raise StageError(f"{_pf()}: nast.normalize must be none or mean, got {how!r}")
    m = sum(scales) / len(scales)
    if m <= 0:
        raise StageError("layer weights: every alpha_l^beta is 0, nothing would be trained")
    return [s / m for s in scales]


def topk_blocks(lw: pl.DataFrame, k: int, n_layers: int) -> list[int]:
    """Block indices of the k layers (>= 1) with the highest CTE; ties -> lower layer first."""
    rows = [(c, layer) for layer, c in zip(lw["layer"].to_list(), lw["cte"].to_list()) if 1 <= layer <= n_layers]
    rows.sort(key=lambda t: (-t[0], t[1]))
    return sorted(layer - 1 for _c, layer in rows[:k])


# ------------------------------------------------------------------------------- adapters
def resolve_targets(model: nn.Module, names: list[str]) -> list[str]:
    """Check each target exists; re-target ``out_proj`` of an ``nn.MultiheadAttention`` to the MHA."""
    modules = dict(model.named_modules())
    out: list[str] = []
    for name in names:
        if name not in modules:
            raise StageError(f"LoRA target module not found in the model: {name}")
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if name.endswith(".out_proj") and isinstance(modules.get(parent), nn.MultiheadAttention):
            name = parent
        if name not in out:
            out.append(name)
    return out


def _vision_module(model: nn.Module) -> nn.Module:
    for attr in ("visual", "vision_model"):
        if hasattr(model, attr):
            return getattr(model, attr)
    raise StageError("train.train_vision: cannot find the vision tower (no .visual / .vision_model)")


def apply_method(vl, spec: MethodSpec, train_params: dict[str, Any], lw: pl.DataFrame | None) -> dict[str, Any]:
    """Make ``vl.model`` trainable as the method says; returns the adapter description."""
    model = vl.model
    for p in model.parameters():
        p.requires_grad_(False)
    info: dict[str, Any] = {"targets": [], "blocks": None}
    if spec.lora:
        blocks = None
        if spec.topk is not None:
            if lw is None:
                raise StageError("topk_layers needs --layer-weights (reports/cte/layer_weights.csv)")
            blocks = topk_blocks(lw, spec.topk, vl.n_text_layers)
        targets = resolve_targets(model, vl.lora_target_modules(blocks))
        if not targets:
            raise StageError(f"no LoRA target modules for family {vl.family!r}")
        inject_lora(model, targets, train_params)
        info.update(targets=targets, blocks=blocks)
    if spec.full_ft:
        for p in vl.text_module().parameters():
            p.requires_grad_(True)
    if spec.vision:
        for p in _vision_module(model).parameters():
            p.requires_grad_(True)
    return info


def adapted_modules(model: nn.Module) -> list[str]:
    """Names of modules that carry a LoRA adapter (PEFT LoraLayer).

    PEFT's MultiheadAttention adapter keeps an inner LoRA on ``base_layer.out_proj``; that one is
    part of the MHA adapter and not listed separately.
    """
    from peft.tuners.lora import LoraLayer

    return [n for n, m in model.named_modules() if isinstance(m, LoraLayer) and ".base_layer." not in f".{n}."]


def block_parameters(vl) -> dict[int, list[nn.Parameter]]:
    """Trainable parameters per text block index (identity based, family independent)."""
    return {i: [p for p in block.parameters() if p.requires_grad] for i, block in enumerate(vl.text_layers())}


def scale_gradients(groups: dict[int, list[nn.Parameter]], scales: list[float]) -> None:
    """In place: grad of every parameter of block i *= scales[i]."""
    for i, params in groups.items():
        s = scales[i]
        if s == 1.0:
            continue
        for p in params:
            if p.grad is not None:
                p.grad.mul_(s)


# ---------------------------------------------------------------------------------- loop
def _tokens(vl, texts: list[str]) -> dict:
    return tokens_on_device(vl, texts)


def _scale(vl) -> torch.Tensor:
    return vl.logit_scale.detach().exp().clamp(max=100.0)


def step_loss(vl, spec: MethodSpec, groups: pl.DataFrame, rows: list[int], img: torch.Tensor,
              clip_texts: list[str] | None = None,
              claim_labels: tuple[torch.Tensor, torch.Tensor] | None = None,
              dpo_text: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Loss of one batch (rows of the caption-group table; img = their image embeddings).

    ``clip_texts`` (one per row): the caption the CLIP loss pairs with each image (the study's
    report caption, ``train.clip_caption: report``); None pairs the image with its claim caption.
    The claim loss always scores the claim caption against its foils. ``claim_labels``
    (:func:`nast.train.data.claim_polarity_labels` of all groups) enables the image direction
    of the claim loss, weighted by ``spec.lambda_image``. ``dpo_text``
    (:func:`nast.train.preference.text_reference` of all groups) adds ``dpo_text_z``: the DPO
    margins (:func:`nast.train.losses.dpo_margins`) of the batch's caption-over-foil pairs.
    """
    sub = [groups.row(r, named=True) for r in rows]
    captions = [r["caption"] for r in sub]
    keys = [r["dicom_id"] for r in sub]
    max_f = max((len(r["foils"]) for r in sub), default=0)
    foil_texts, foil_kinds, mask = [], [], torch.zeros(len(sub), max_f, dtype=torch.bool)
    for i, r in enumerate(sub):
        for j, (f, t) in enumerate(zip(r["foils"], r["foil_types"])):
            foil_texts.append(f)
            foil_kinds.append(t)
            mask[i, j] = True
    emb = vl.encode_text_trimmed(_tokens(vl, captions + foil_texts))
    cap, foil_flat = emb[: len(sub)], emb[len(sub):]
    # what the CLIP loss pairs with each image; long report captions are encoded apart so the
    # short claims are not padded to the reports' length
    pos = vl.encode_text_trimmed(_tokens(vl, list(clip_texts))) if clip_texts is not None else cap
    scale = _scale(vl)
    nn_mask = not_negative_mask(keys, list(clip_texts) if clip_texts is not None else captions).to(img.device)
    if spec.hard_negative:
        pol = [k for k, t in enumerate(foil_kinds) if t == "polarity"]
        neg = foil_flat[pol] if pol else foil_flat[:0]
        pol_texts = [foil_texts[k] for k in pol]
        neg_mask = torch.tensor([[t == c for t in pol_texts] for c in captions], dtype=torch.bool,
                                device=img.device).reshape(len(sub), len(pol_texts))
        clip = losses.hard_negative_clip_loss(img, pos, neg, scale, nn_mask, neg_mask)
    else:
        clip = losses.clip_loss(img, pos, scale, nn_mask)
    foils = None
    if (spec.lambda_claim > 0 or dpo_text is not None) and max_f > 0:
        foils = cap.new_zeros(len(sub), max_f, cap.shape[-1])
        foils[mask] = foil_flat
    if spec.lambda_claim > 0 and foils is not None:
        claim = losses.claim_loss(img, cap, foils, mask.to(img.device), scale)
    else:
        claim = cap.new_zeros(())
    loss = clip + spec.lambda_claim * claim
    out = {"clip_loss": clip, "claim_loss": claim}
    if dpo_text is not None:
        r = torch.tensor(rows)
        if foils is None:
            out["dpo_text_z"] = cap.new_zeros(0)
        else:
            use = (dpo_text["use"][r, :max_f] & mask).to(img.device)
            pol_w = (scale * (img * cap).sum(-1))[:, None].expand(-1, max_f)
            pol_l = scale * torch.einsum("bd,bfd->bf", img, foils)
            ref_w = dpo_text["ref_w"][r].to(img.device)[:, None].expand(-1, max_f)
            len_w = dpo_text["len_w"][r].to(img.device)[:, None].expand(-1, max_f)
            out["dpo_text_z"] = losses.dpo_margins(
                pol_w[use], pol_l[use], ref_w[use], dpo_text["ref_l"][r, :max_f].to(img.device)[use],
                len_w[use], dpo_text["len_l"][r, :max_f].to(img.device)[use], spec.dpo_beta, spec.dpo_alpha)
    if spec.lambda_image > 0 and claim_labels is not None:
        fidx, labels = claim_labels
        r = torch.tensor(rows)
        opposite = opposite_mask(fidx[r], labels[r]).to(img.device)
        image_term = losses.claim_image_loss(cap, img, opposite, scale)
        loss = loss + spec.lambda_image * image_term
        out["claim_image_loss"] = image_term
    return {"loss": loss, **out}


def _latest_checkpoint(state_dir: Path) -> Path | None:
    cks = sorted(state_dir.glob("epoch_*.pt"))
    return cks[-1] if cks else None


def _atomic_torch_save(obj: Any, path: Path) -> None:
    from nast.io import atomic_write

    with atomic_write(path) as tmp:  # unique temp name: two writers never share one
        torch.save(obj, tmp)


def train(
    vl,
    spec: MethodSpec,
    groups: pl.DataFrame,
    train_params: dict[str, Any],
    scales: list[float],
    scale_mode: str,
    out_dir: str | Path,
    validate: Callable[[], dict[str, float]] | None = None,
    stop_after_epoch: int | None = None,
    fingerprint: str = "",
    report_captions: Callable[[list[str]], Any] | None = None,
    claim_labels: tuple[torch.Tensor, torch.Tensor] | None = None,
    ground: pl.DataFrame | None = None,
    embeddings=None,
    grounding_embeddings=None,
) -> tuple[list[dict[str, float]], bool]:
    """Run (or resume) training. Returns (curve rows, finished). Writes OUT/state/ checkpoints.

    ``report_captions(paths)`` gives the :class:`nast.models.data.ReportCaptions` of the images
    ``paths`` (sorted unique image paths of the groups); with it the CLIP loss pairs each image
    with a report caption drawn per epoch (generator seeded by ``(seed, epoch)``), else with
    its claim caption.

    A checkpoint is resumed only when its ``fingerprint`` (method, params, inputs) matches; a
    stale one from different settings is discarded with a warning.

    ``ground`` (the train rows of the grounding table: ``dicom_id, finding, box_index,
    image_path, cf_path, ctrl_path``) with ``spec.lambda_ground`` > 0 adds the counterfactual
    grounding loss: every step also scores ``batch_size`` pairs (a per-epoch permutation, cycled)
    with "X" / "no X" texts drawn anew each epoch (:func:`nast.grounding.texts.phrasing` seeded
    by ``(seed, epoch)``).

    With ``spec.lambda_dpo`` > 0 (``dpo``, ``nast-dpo``) the claim term is the length-regularised
    DPO loss over the preference pairs (:mod:`nast.train.preference`): the batch's caption-over-foil
    pairs plus, with ``ground``, ``batch_size`` image-side pairs per step (a per-epoch permutation,
    cycled); its reference scores are computed here, once, from the base model (adapters off).

    Images are streamed (:mod:`nast.models.embeddings`): with the vision tower frozen each unique
    image is embedded once, in batches, before the first epoch -- or read from ``embeddings`` (an
    :class:`nast.models.embeddings.EmbeddingStore` of the same base model, ``nast embed-images``),
    which must then hold every training image; the grounding images come from
    ``grounding_embeddings`` (the store of the grounding table's images) when it holds them all,
    else from ``embeddings`` when that does, else are embedded here; with ``train.train_vision``
    every step loads its batch's pixels and both stores must be None.
    """
    out_dir = Path(out_dir)
    state_dir = out_dir / STATE_DIR
    seed = int(train_params["seed"])
    epochs = int(train_params["epochs"])
    bs = int(train_params["batch_size"])
    torch.manual_seed(seed)

    if groups.height == 0:
        raise StageError("no training examples: the contextual table has no rows in split 'train'")
    blocks = block_parameters(vl)
    in_block = {id(p) for ps in blocks.values() for p in ps}
    trainable = [p for p in vl.model.parameters() if p.requires_grad]
    if not trainable:
        raise StageError(f"method {spec.name}: nothing to train")
    # a trained vision tower has its own learning rate (train.vision_lr: all its parameters train)
    in_vision = {id(p) for p in _vision_module(vl.model).parameters()} if spec.vision else set()
    vision = [{"params": [p for p in trainable if id(p) in in_vision], "lr": spec.vision_lr}] if spec.vision else []
    if scale_mode == "lr":
        pg = [{"params": ps, "lr": spec.lr * scales[i]} for i, ps in blocks.items() if ps]
        rest = [p for p in trainable if id(p) not in in_block and id(p) not in in_vision]
        if rest:
            pg.append({"params": rest, "lr": spec.lr})
    else:
        pg = [{"params": [p for p in trainable if id(p) not in in_vision], "lr": spec.lr}]
    opt = torch.optim.AdamW(pg + vision, lr=spec.lr, weight_decay=0.0)

    # images: streamed; embedded once (or read from the store) when the vision tower is frozen
    paths = groups["image_path"].to_list()
    train_vision = spec.vision
    if train_vision and (embeddings is not None or grounding_embeddings is not None):
        raise StageError(f"train.train_vision: {spec.name} trains the vision tower on pixels: cached image "
                         "embeddings (--embeddings) cannot be used")
    uniq_paths = sorted(set(paths))
    path_idx = {p: i for i, p in enumerate(uniq_paths)}
    row_img = torch.tensor([path_idx[p] for p in paths])
    reports = report_captions(uniq_paths) if report_captions is not None else None

    def frozen_embeddings(ps: list[str], what: str, required: bool = True, stores=(embeddings,)) -> torch.Tensor:
        """[len(ps), D] base-tower embeddings: from the first of ``stores`` that holds them all
        (``required``: the first store must), else embedded here in streamed batches."""
        for store in stores:
            if store is not None and (required or all(p in store.row for p in ps)):
                return store.lookup(ps, vl.device)
        with torch.no_grad():
            return embed_paths(vl, ps, what=what)

    def pixels_of(ps: list[str], what: str = "image") -> torch.Tensor:
        return load_pixels(vl, ps, what).to(vl.device, non_blocking=True)

    if not train_vision:
        vl.model.eval()
        img_all = frozen_embeddings(uniq_paths, "image")

    use_ground = spec.lambda_ground > 0
    use_dpo = spec.lambda_dpo > 0
    if use_ground and (ground is None or ground.height == 0):
        raise StageError(f"method {spec.name}: no counterfactual pairs in the train split of the grounding table")
    if use_ground or (use_dpo and ground is not None and ground.height > 0):
        g_paths = sorted({p for c in ("image_path", "cf_path", "ctrl_path") for p in ground[c].to_list() if p})
        g_idx = {p: i for i, p in enumerate(g_paths)}
        g_img = torch.tensor([g_idx[p] for p in ground["image_path"]])
        g_cf = torch.tensor([g_idx[p] if p else g_idx[i] for p, i in zip(ground["cf_path"], ground["image_path"])])
        g_has = torch.tensor([p is not None for p in ground["ctrl_path"]])
        g_ctrl = torch.tensor([g_idx[p] if p else g_idx[i] for p, i in zip(ground["ctrl_path"], ground["image_path"])])
        g_keys = list(ground.select("dicom_id", "finding", "box_index").iter_rows())
        if not train_vision:
            g_emb = frozen_embeddings(g_paths, "grounding image", required=False,
                                      stores=(grounding_embeddings, embeddings))

    dpo_text = dpo_img = None
    d_pairs = None
    if use_dpo:
        from nast.train import preference

        t_pairs, t_counts = preference.text_pairs(groups)
        d_pairs, i_counts = preference.image_pairs(ground if ground is not None and ground.height else None, seed)
        log.info("%s: %d text preference pairs (%s; %d of %d groups without a polarity/laterality/severity foil, "
                 "%d foils of other types), %d image-side pairs (%d grounding rows, %d without a counterfactual)",
                 spec.name, t_counts["pairs"],
                 ", ".join(f"{k} {v}" for k, v in sorted(t_counts["by_foil_type"].items())),
                 t_counts["groups_without_foil"], t_counts["groups"], t_counts["foils_other_type"],
                 i_counts["pairs"], i_counts["rows"], i_counts["rows_without_cf"])
        if t_counts["pairs"] + i_counts["pairs"] == 0:
            raise StageError(f"method {spec.name}: no preference pairs (no foils, no counterfactuals)")
        was_training = vl.model.training
        vl.model.eval()
        with preference.adapters_disabled(vl.model), torch.no_grad():
            ref_img = img_all if not train_vision else embed_paths(vl, uniq_paths)
            dpo_text = preference.text_reference(vl, groups, t_pairs, ref_img[row_img], _scale(vl))
            if d_pairs.height:
                ref_g = g_emb if not train_vision else embed_paths(vl, g_paths, what="grounding image")
                dpo_img = preference.image_reference(vl, d_pairs, {p: ref_g[i] for p, i in g_idx.items()}, _scale(vl))
                dpo_img["w"] = torch.tensor([g_idx[p] for p in d_pairs["image_w"]])
                dpo_img["l"] = torch.tensor([g_idx[p] for p in d_pairs["image_l"]])
                dpo_img["texts"] = d_pairs["caption"].to_list()
        vl.model.train(was_training)

    def dpo_image_z(step: int, dperm: torch.Tensor) -> torch.Tensor:
        """DPO margins of step ``step``'s image-side pairs (``batch_size`` of them, cycling ``dperm``)."""
        m = len(dperm)
        idx = dperm[torch.arange(step * bs, step * bs + min(bs, m)) % m]
        t = vl.encode_text_trimmed(_tokens(vl, [dpo_img["texts"][i] for i in idx.tolist()]))
        sc = _scale(vl)
        pol_w = sc * (ground_embeddings(dpo_img["w"][idx]) * t).sum(-1)
        pol_l = sc * (ground_embeddings(dpo_img["l"][idx]) * t).sum(-1)
        lens = dpo_img["len"][idx].to(t.device)
        return losses.dpo_margins(pol_w, pol_l, dpo_img["ref_w"][idx].to(t.device), dpo_img["ref_l"][idx].to(t.device),
                                  lens, lens, spec.dpo_beta, spec.dpo_alpha)

    def ground_embeddings(rows: torch.Tensor) -> torch.Tensor:
        if train_vision:
            return vl.encode_image(pixels_of([g_paths[i] for i in rows.tolist()], "grounding image"))
        return g_emb[rows]

    def ground_term(step: int, gperm: torch.Tensor, texts: list[tuple[str, str]]) -> torch.Tensor:
        """The grounding loss of step ``step``'s pairs (``batch_size`` of them, cycling ``gperm``)."""
        m = len(gperm)
        idx = gperm[torch.arange(step * bs, step * bs + min(bs, m)) % m].tolist()
        t = vl.encode_text_trimmed(_tokens(vl, [texts[i][0] for i in idx] + [texts[i][1] for i in idx]))
        rows = torch.tensor(idx)
        return losses.grounding_loss(ground_embeddings(g_img[rows]), ground_embeddings(g_cf[rows]),
                                     ground_embeddings(g_ctrl[rows]), g_has[rows].to(vl.device),
                                     t[: len(idx)], t[len(idx):], _scale(vl))

    curve: list[dict[str, float]] = []
    start = 1
    ck = _latest_checkpoint(state_dir)
    state = torch.load(ck, map_location="cpu", weights_only=False) if ck is not None else None
    if state is not None and state.get("fingerprint", "") != fingerprint:
        log.warning("%s: %s was written with other settings or inputs; starting afresh", spec.name, ck)
        for old in state_dir.glob("epoch_*.pt"):
            old.unlink()
        state = None
    if state is not None:
        load_trainable_state(vl.model, state["trainable"], str(ck))
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        curve = list(state["curve"])
        start = int(state["epoch"]) + 1
        log.info("%s: resuming from %s (epoch %d of %d)", spec.name, ck, start - 1, epochs)

    n = groups.height
    for epoch in range(start, epochs + 1):
        vl.model.train()
        if not train_vision:
            vl.model.eval()  # no dropout/BN drift in the frozen parts; LoRA dropout obeys its own module
            for m in vl.text_layers():
                m.train()
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        perm = torch.randperm(n, generator=gen).tolist()
        sums = {"loss": 0.0, "clip_loss": 0.0, "claim_loss": 0.0}
        if spec.lambda_image > 0 and claim_labels is not None:
            sums["claim_image_loss"] = 0.0
        if use_ground:
            from nast.grounding.texts import phrasing

            sums["ground_loss"] = 0.0
            g_gen = torch.Generator().manual_seed(seed * 100003 + epoch + 7919)
            gperm = torch.randperm(len(g_keys), generator=g_gen)
            g_texts = [phrasing(d, f, k, f"{seed}:{epoch}") for d, f, k in g_keys]
        if use_dpo:
            sums["dpo_loss"] = 0.0
            sums["dpo_text_loss"] = 0.0
            if dpo_img is not None:
                sums["dpo_image_loss"] = 0.0
                d_gen = torch.Generator().manual_seed(seed * 100003 + epoch + 104729)
                dperm = torch.randperm(len(dpo_img["texts"]), generator=d_gen)
        steps = 0
        epoch_caps = reports.captions(np.random.default_rng([seed, epoch])) if reports is not None else None
        for b in range(0, n, bs):
            rows = perm[b : b + bs]
            if len(rows) < 2:
                continue
            if train_vision:
                img = vl.encode_image(pixels_of([uniq_paths[i] for i in row_img[rows].tolist()]))
            else:
                img = img_all[row_img[rows]]
            texts = [epoch_caps[i] for i in row_img[rows].tolist()] if epoch_caps is not None else None
            out = step_loss(vl, spec, groups, rows, img, texts, claim_labels, dpo_text)
            if use_dpo:
                z_t = out.pop("dpo_text_z")
                z_i = dpo_image_z(steps, dperm) if dpo_img is not None else z_t[:0]
                z = torch.cat([z_t, z_i])
                out["dpo_loss"] = -F.logsigmoid(z).mean() if z.numel() else z.new_zeros(())
                out["dpo_text_loss"] = -F.logsigmoid(z_t).mean() if z_t.numel() else z_t.new_zeros(())
                if dpo_img is not None:
                    out["dpo_image_loss"] = -F.logsigmoid(z_i).mean()
                out["loss"] = out["loss"] + spec.lambda_dpo * out["dpo_loss"]
            if use_ground:
                out["ground_loss"] = ground_term(steps, gperm, g_texts)
                out["loss"] = out["loss"] + spec.lambda_ground * out["ground_loss"]
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            if scale_mode == "grad":
                scale_gradients(blocks, scales)
            opt.step()
            for k in sums:
                sums[k] += float(out[k].detach())
            steps += 1
        row = {"epoch": epoch, **{k: v / max(steps, 1) for k, v in sums.items()}}
        if validate is not None:
            row.update(validate())
        curve.append(row)
        _atomic_torch_save(
            {"epoch": epoch, "trainable": trainable_state(vl.model), "optimizer": opt.state_dict(),
             "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
             "curve": curve, "method": spec.name, "fingerprint": fingerprint},
            state_dir / f"epoch_{epoch:03d}.pt",
        )
        for old in state_dir.glob("epoch_*.pt"):
            if old.name != f"epoch_{epoch:03d}.pt":
                old.unlink()
        log.info("%s: epoch %d/%d loss %.4f (clip %.4f, claim %.4f)%s", spec.name, epoch, epochs,
                 row["loss"], row["clip_loss"], row["claim_loss"],
                 "".join(f", {k} {v:.3f}" for k, v in row.items() if k.startswith("val_") and not math.isnan(v)))
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < epochs:
            log.warning("%s: stopping after epoch %d (requested); rerun to resume", spec.name, epoch)
            return curve, False
    return curve, True


def copy_file(src: str | Path, dst: str | Path) -> None:
    from nast.io import atomic_write

    with atomic_write(dst) as tmp:
        shutil.copyfile(src, tmp)
