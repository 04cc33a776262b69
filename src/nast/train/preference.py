"""Preference pairs of the ``dpo`` / ``nast-dpo`` methods, built from the reference labels
(no human feedback), and their frozen reference scores.

Two kinds of pair ``(image_w, caption_w) > (image_l, caption_l)``:

* **text** (:func:`text_pairs`): per caption group (an image's true single claim or composite
  caption, :func:`nast.train.data.caption_groups` / :func:`~nast.train.data.composite_groups`),
  one pair per minimal-edit foil of a type in :data:`FOIL_TYPES`: the same image, chosen = the
  true caption, rejected = the foil. Groups without any such foil are counted
  (``groups_without_foil``), foils of other types too (``foils_other_type``), never dropped
  silently.
* **image** (:func:`image_pairs`): per counterfactual pair of the grounding table's train split
  (the image ``I`` and its finding-removed twin ``Ĩ``, as the ``grounded`` methods use them), two
  pairs with the same caption: for "X", ``I`` over ``Ĩ``; for "no X", ``Ĩ`` over ``I``. The texts
  are drawn once per pair (:func:`nast.grounding.texts.phrasing` seeded by ``train.seed``), so the
  reference scores are fixed. Rows without a counterfactual image are counted (``rows_without_cf``).

The reference ``s_ref`` is the base model: scores are computed once, without gradients, with the
LoRA adapters switched off (:func:`adapters_disabled`), before any checkpoint is loaded.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import polars as pl
import torch
from torch import nn

FOIL_TYPES = ("polarity", "laterality", "severity")

TEXT_SCHEMA = {"group": pl.Int64, "foil_index": pl.Int64, "image_path": pl.String, "chosen": pl.String,
               "rejected": pl.String, "foil_type": pl.String}
IMAGE_SCHEMA = {"pair": pl.Int64, "dicom_id": pl.String, "finding": pl.String, "box_index": pl.Int64,
                "caption": pl.String, "polarity": pl.String, "image_w": pl.String, "image_l": pl.String}


def text_pairs(groups: pl.DataFrame, foil_types: tuple[str, ...] = FOIL_TYPES) -> tuple[pl.DataFrame, dict[str, Any]]:
    """(pairs, counts). ``group`` = row of ``groups``, ``foil_index`` = position in its foils list.

    counts: ``groups``, ``groups_with_pairs``, ``groups_without_foil`` (no foil of an accepted
    type), ``foils`` (all foils), ``foils_other_type``, ``pairs`` and ``by_foil_type``; they
    reconcile: ``pairs + foils_other_type == foils`` and
    ``groups_with_pairs + groups_without_foil == groups``.
    """
    rows, other, n_foils, without = [], 0, 0, 0
    by_type: dict[str, int] = {}
    for g, r in enumerate(groups.iter_rows(named=True)):
        foils = r["foils"] or []
        kinds = r["foil_types"] or []
        made = 0
        for j, (f, t) in enumerate(zip(foils, kinds)):
            if f is None:
                continue  # a caption listed without a foil (null row of the long table)
            n_foils += 1
            if t not in foil_types:
                other += 1
                continue
            rows.append((g, j, r["image_path"], r["caption"], f, t))
            by_type[t] = by_type.get(t, 0) + 1
            made += 1
        without += made == 0
    pairs = pl.DataFrame(rows, schema=TEXT_SCHEMA, orient="row")
    counts = {"groups": groups.height, "groups_with_pairs": groups.height - without, "groups_without_foil": without,
              "foils": n_foils, "foils_other_type": other, "pairs": pairs.height, "by_foil_type": by_type}
    return pairs, counts


def image_pairs(ground: pl.DataFrame | None, seed: int | str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """(pairs, counts) from the train rows of the grounding table (``dicom_id, finding, box_index,
    image_path, cf_path``): two pairs per row with a counterfactual (``pair`` = the row's index
    among those), "X" (``polarity`` present: I over Ĩ) then "no X" (absent: Ĩ over I)."""
    from nast.grounding.texts import phrasing

    if ground is None or ground.height == 0:
        return pl.DataFrame(schema=IMAGE_SCHEMA), {"rows": 0, "rows_without_cf": 0, "pairs": 0}
    rows, missing, k = [], 0, 0
    for r in ground.iter_rows(named=True):
        if not r.get("cf_path"):
            missing += 1
            continue
        pos, neg = phrasing(r["dicom_id"], r["finding"], r["box_index"], seed)
        base = (k, r["dicom_id"], r["finding"], r["box_index"])
        rows.append((*base, pos, "present", r["image_path"], r["cf_path"]))
        rows.append((*base, neg, "absent", r["cf_path"], r["image_path"]))
        k += 1
    pairs = pl.DataFrame(rows, schema=IMAGE_SCHEMA, orient="row")
    return pairs, {"rows": ground.height, "rows_without_cf": missing, "pairs": pairs.height}


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Every PEFT adapter layer of ``model`` off (the base weights alone), restored afterwards."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    was = [m.disable_adapters for m in layers]
    try:
        for m in layers:
            m.enable_adapters(False)
        yield
    finally:
        for m, off in zip(layers, was):
            m.enable_adapters(not off)


def text_lengths(vl, texts: list[str], chunk: int = 512) -> torch.Tensor:
    """Caption lengths ``|y|`` in tokens of the model's tokenizer (``VLModel.token_lengths``), [N]."""
    from nast.models.data import tokens_on_device

    out = [vl.token_lengths(tokens_on_device(vl, texts[i : i + chunk])).cpu() for i in range(0, len(texts), chunk)]
    return torch.cat(out).long() if out else torch.zeros(0, dtype=torch.long)


def encode_texts(vl, texts: list[str], chunk: int = 256) -> torch.Tensor:
    from nast.models.data import tokens_on_device

    return torch.cat([vl.encode_text_trimmed(tokens_on_device(vl, texts[i : i + chunk]))
                      for i in range(0, len(texts), chunk)])


@torch.no_grad()
def text_reference(vl, groups: pl.DataFrame, pairs: pl.DataFrame, img_of_group: torch.Tensor,
                   scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per caption group, padded to the most foils of a group: ``use [G,F]`` (foil j of group g is
    a pair), ``ref_w [G]`` / ``ref_l [G,F]`` (``scale * cos`` of the base model), ``len_w [G]`` /
    ``len_l [G,F]``. ``img_of_group [G,D]``: the reference image embeddings. Call it with the
    adapters off (:func:`adapters_disabled`)."""
    g_n = groups.height
    f_n = max((len(f or []) for f in groups["foils"].to_list()), default=0)
    use = torch.zeros(g_n, f_n, dtype=torch.bool)
    ref_w, len_w = torch.zeros(g_n), torch.zeros(g_n, dtype=torch.long)
    ref_l, len_l = torch.zeros(g_n, f_n), torch.zeros(g_n, f_n, dtype=torch.long)
    if pairs.height == 0:
        return {"use": use, "ref_w": ref_w, "ref_l": ref_l, "len_w": len_w, "len_l": len_l}
    gi = torch.tensor(pairs["group"].to_list())
    fj = torch.tensor(pairs["foil_index"].to_list())
    use[gi, fj] = True
    caps = groups["caption"].to_list()
    rej = pairs["rejected"].to_list()
    texts = list(dict.fromkeys(caps + rej))
    at = {t: i for i, t in enumerate(texts)}
    emb = encode_texts(vl, texts).cpu()
    lens = text_lengths(vl, texts)
    ci = torch.tensor([at[c] for c in caps])
    ri = torch.tensor([at[t] for t in rej])
    img = img_of_group.cpu()
    s = float(scale)
    ref_w = s * (img * emb[ci]).sum(-1)
    len_w = lens[ci]
    ref_l[gi, fj] = s * (img[gi] * emb[ri]).sum(-1)
    len_l[gi, fj] = lens[ri]
    return {"use": use, "ref_w": ref_w, "ref_l": ref_l, "len_w": len_w, "len_l": len_l}


@torch.no_grad()
def image_reference(vl, pairs: pl.DataFrame, emb_of: dict[str, torch.Tensor], scale: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
    """``ref_w [P]`` / ``ref_l [P]`` of the image pairs (``emb_of``: image path -> reference
    embedding) and the caption lengths ``len [P]`` (equal for both sides)."""
    if pairs.height == 0:
        return {"ref_w": torch.zeros(0), "ref_l": torch.zeros(0), "len": torch.zeros(0, dtype=torch.long)}
    caps = pairs["caption"].to_list()
    texts = list(dict.fromkeys(caps))
    at = {t: i for i, t in enumerate(texts)}
    t = encode_texts(vl, texts).cpu()[torch.tensor([at[c] for c in caps])]
    w = torch.stack([emb_of[p] for p in pairs["image_w"].to_list()]).cpu()
    lo = torch.stack([emb_of[p] for p in pairs["image_l"].to_list()]).cpu()
    s = float(scale)
    return {"ref_w": s * (w * t).sum(-1), "ref_l": s * (lo * t).sum(-1),
            "len": text_lengths(vl, texts)[torch.tensor([at[c] for c in caps])]}
