r"""Relevance maps of the image-text score ``s(I, t) = <f(I), t>`` over the model input.

``f`` is the model's L2-normalised image embedding, ``t`` a fixed L2-normalised text embedding
(one per example), so every map explains the very cosine similarity the metrics compare. Maps
are ``[B, S, S]`` over the preprocessed input (channels summed; the three channels of a CXR are
copies); :func:`nast.grounding.protocol.map_to_image` brings them to the image as read.

Methods (Captum for the three model-agnostic ones; none hand-written):

``occlusion``
    ``captum.attr.Occlusion``: a square window of ``S / occlusion_cells`` pixels moved in steps of
    its own size (``occlusion_cells``\ :sup:`2` forward passes), replaced by the image's mean;
    attribution = the drop of the score.
``random_masks``
    RISE-style random masks through ``captum.attr.Lime``: the input is cut into a
    ``mask_cells x mask_cells`` grid, ``n_masks`` random on/off masks (each cell kept with
    probability 0.5, Captum's default sampling; off cells = the image's mean) are scored, and a
    linear regression of the score on the cells (uniform sample weights) gives each cell's
    effect. RISE itself sums the masks weighted by the score; with independent p = 0.5 cells the
    regression coefficient is the same quantity up to an affine map, which the protocol's min-max
    scaling removes.
``integrated_gradients``
    ``captum.attr.IntegratedGradients`` from a black image (0 before normalisation),
    ``ig_steps`` steps (Gauss-Legendre, Captum's default).
``patch_similarity``
    the model's own map where its architecture has one
    (:meth:`nast.models.base.VLModel.patch_embeddings`): the cosine of every spatial image token
    with the text; None for a model without one.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

METHODS = ("occlusion", "random_masks", "integrated_gradients", "patch_similarity")


class _Score(torch.nn.Module):
    """``pixels [B, C, S, S], text [B, D] -> s [B]`` for Captum (which needs a callable)."""

    def __init__(self, vl):
        super().__init__()
        self.vl = vl

    def forward(self, pixels: Tensor, text: Tensor) -> Tensor:
        return (self.vl.encode_image(pixels) * text).sum(-1)


def _mean_baseline(pixels: Tensor) -> Tensor:
    return pixels.mean(dim=(1, 2, 3), keepdim=True).expand_as(pixels).contiguous()


def occlusion(vl, pixels: Tensor, text: Tensor, cells: int = 8, batch: int = 64) -> Tensor:
    from captum.attr import Occlusion

    c, s = pixels.shape[1], pixels.shape[-1]
    win = max(1, s // int(cells))
    stride = win
    attr = Occlusion(_Score(vl)).attribute(
        pixels, sliding_window_shapes=(c, win, win), strides=(c, stride, stride),
        baselines=_mean_baseline(pixels), additional_forward_args=(text,), perturbations_per_eval=batch)
    return attr.sum(1)


def grid_mask(size: int, cells: int, channels: int) -> Tensor:
    """``[1, C, S, S]`` feature ids of a ``cells x cells`` grid (the same id on every channel)."""
    idx = (torch.arange(size) * int(cells) // size).clamp(max=int(cells) - 1)
    ids = idx[:, None] * int(cells) + idx[None, :]
    return ids[None, None].expand(1, channels, size, size).contiguous()


def random_masks(vl, pixels: Tensor, text: Tensor, cells: int = 8, n_masks: int = 128, seed: int = 0,
                 batch: int = 64) -> Tensor:
    from captum._utils.models.linear_model import SkLearnLinearRegression
    from captum.attr import Lime

    c, s = pixels.shape[1], pixels.shape[-1]
    lime = Lime(_Score(vl), interpretable_model=SkLearnLinearRegression(),
                similarity_func=lambda *args, **kwargs: 1.0)
    mask = grid_mask(s, cells, c).to(pixels.device)
    out = []
    for i in range(pixels.shape[0]):
        torch.manual_seed(int(seed) + i)  # Captum samples the masks with torch's global generator
        x = pixels[i : i + 1]
        a = lime.attribute(x, baselines=_mean_baseline(x), target=None, additional_forward_args=(text[i : i + 1],),
                           feature_mask=mask, n_samples=int(n_masks), perturbations_per_eval=batch,
                           return_input_shape=True)
        out.append(a.sum(1))
    return torch.cat(out)


def integrated_gradients(vl, pixels: Tensor, text: Tensor, steps: int = 16, batch: int = 64) -> Tensor:
    from captum.attr import IntegratedGradients

    mean = torch.tensor(vl.mean[: pixels.shape[1]], device=pixels.device).view(1, -1, 1, 1)
    std = torch.tensor(vl.std[: pixels.shape[1]], device=pixels.device).view(1, -1, 1, 1)
    black = ((0.0 - mean) / std).expand_as(pixels).contiguous()
    with torch.enable_grad():
        attr = IntegratedGradients(_Score(vl)).attribute(
            pixels, baselines=black, additional_forward_args=(text,), n_steps=int(steps),
            internal_batch_size=max(int(batch), pixels.shape[0]))
    return attr.detach().sum(1)


def patch_similarity(vl, pixels: Tensor, text: Tensor) -> Tensor | None:
    tokens = vl.patch_embeddings(pixels)  # [B, h, w, D] or None
    if tokens is None:
        return None
    sim = (F.normalize(tokens, dim=-1) * text[:, None, None, :]).sum(-1)  # [B, h, w]
    s = pixels.shape[-1]
    return F.interpolate(sim[:, None], size=(s, s), mode="bilinear", align_corners=False)[:, 0]


def attribute(method: str, vl, pixels: Tensor, text: Tensor, cfg: dict, seed: int = 0) -> Tensor | None:
    """The ``[B, S, S]`` map of ``method`` (None: the model has no map of that kind)."""
    fns: dict[str, Callable[[], Tensor | None]] = {
        "occlusion": lambda: occlusion(vl, pixels, text, cfg["occlusion_cells"]),
        "random_masks": lambda: random_masks(vl, pixels, text, cfg["mask_cells"], cfg["n_masks"], seed),
        "integrated_gradients": lambda: integrated_gradients(vl, pixels, text, cfg["ig_steps"]),
        "patch_similarity": lambda: patch_similarity(vl, pixels, text),
    }
    if method not in fns:
        raise ValueError(f"unknown attribution method {method!r} (choose from {', '.join(METHODS)})")
    with torch.no_grad() if method in ("occlusion", "random_masks", "patch_similarity") else torch.enable_grad():
        out = fns[method]()
    return None if out is None else out.detach().float()
