"""Causal tracing effects (CTE) of the text encoder: where does a CLIP text tower carry negation?

Method
------
A probing pair is one image with two captions that make the same statement about it: the
*affirmative* text of the correct MCQ option and its *negated* counterpart. One caption is the
**source** run, the other the **target** run (``trace.direction``: ``caption`` = the affirmative
run's states are patched into the negated run; ``foil`` = the reverse). With ``s(img, t)`` the
cosine similarity of the L2-normalised image and text embeddings,

    d          = s(img, source) - s(img, target)                  the clean score difference
    d*(l, p)   = s(img, target with h_l[p] <- source h_l[p]) - s(img, target)
    CTE(l, p)  = d*(l, p) / d

i.e. the share of the clean difference that is restored by copying ONE hidden state -- layer
``l`` (0 = embeddings output, l >= 1 = output of text block l-1), position ``p`` -- from the source
run into the target run (activation patching / causal tracing as in ROME and TransformerLens's
``patching.py``). In the notation of docs/DESIGN_NOTES.md the source is the "caption" c and the target the
"foil" f, so ``d = s(img, c) - s(img, f)``. Everything except the patched hidden state belongs to
the target run: its token ids, attention/padding mask and readout position (EOT / CLS / mean).

What is patched (``trace.unit``):

* ``state`` -- the hidden state ``h_l[p]`` itself, as above (the original definition, docs/DESIGN_NOTES.md).
* ``block`` (default) -- the *write* of text block ``l-1`` into the residual stream: the patched
  state is ``h_tgt[l-1][p] + (h_src[l][p] - h_src[l-1][p])`` (:func:`block_write_states`), i.e.
  the target's block input plus what the block wrote in the source run. Layer 0 is the embedding
  output either way.

Why two units. A hidden state carries everything the layers below wrote into it. To first order
the single-position effects of a layer add up to the effect of patching *all* positions of that
layer, which for captions sharing the readout context is the whole source run (``d* = d``). So
``sum_p CTE(l, p) ~ 1`` at *every* layer and the per-layer mean over positions is about ``1/P``
everywhere: the state unit's per-layer CTE differs between layers only by second-order terms and
sampling noise, and min-max normalisation stretches that noise into alpha (on the demo base the
sums were 0.74, 0.69, 0.64, 0.62 for the four blocks, ``benchmarks/cte_stability.py``). A block's
write, restored at all positions at once, is the share of the clean difference that *this* block
computes; it differs between blocks and is the per-layer CTE of the ``block`` unit (``whole`` in
:func:`trace_pairs`). The heatmap shows the single-position patches of either unit.

Both captions are tokenised, padded to a common length and **index-aligned**: position p of one is
compared with position p of the other, whatever token sits there. Positions beyond the longer
caption of a pair are padding in both and are not counted. Patching all positions at layer l
gives ``d* = d`` exactly (CTE = 1) whenever the two runs share the readout context, e.g. captions
of equal token length (a test checks it for every layer and family).

Aggregation. ``effect(l, p)`` = mean CTE over the examples where p is a real position (``n`` of
them). Per example, ``r_e(l)`` = the mean of its CTE over its real positions (``state``) or the
CTE of its whole-write patch (``block``, :func:`per_layer_example_cte`). The per-layer
``cte_l`` averages ``r_e(l)`` over the examples (``trace.example_weighting``):

* ``uniform`` (default): the plain mean of the per-example ratios ``d*/d``;
* ``abs_d``: weighted by the clean ``|d_e|``, i.e. ``sum_e sign(d_e) d*_e(l) / sum_e |d_e|`` --
  the share of the total clean difference that the patches restore (causal tracing's "average
  indirect effect", normalised once instead of per example). A pair with a small ``|d|`` has a
  ratio with a huge variance; this weighting takes that away, at the price of letting the pairs
  with a large ``|d|`` decide.

``cte_lo``/``cte_hi`` are percentile-bootstrap 95 % intervals over the examples
(``trace.bootstrap`` resamples, seeded). ``alpha_l = (cte_l - min) / (max - min)`` over the L+1
layers (all 1 when the range is 0). Min-max normalisation stretches *any* difference to the full
[0, 1] range, so read alpha next to the intervals: :func:`alpha_stability` gives the share of
bootstrap resamples that keep the same highest- and lowest-CTE text block, and
``benchmarks/cte_stability.py`` compares the two weightings on the same traced pairs. Pairs with
``|d| < trace.min_abs_d`` would divide by ~0: they are skipped and counted, never divided.

Batching (why it is fast). The naive algorithm runs the whole text encoder once per (l, p): (L+1)*P
forwards per example (:func:`patched_scores_naive`, hooks on the library's own forward, kept as
the reference). :func:`patched_scores` runs the two clean passes once through the family's
text-layer decomposition (:meth:`VLModel.text_states`) and caches all L+1 hidden states; for each
layer l it builds the patched states of all positions of all examples of a batch with one tensor
op (:func:`patch_hidden`, the single generic patching function) and runs only blocks l..L-1 --
with the target's masks -- on that batch: sum_l (L - l) block calls per batch of examples instead
of (L+1)*P*L batch-1 calls, on sequences trimmed to the longest real caption instead of the full
context. Patches that provably cannot change the score (padding in both captions, positions after
a causal readout, or identical source and target states, e.g. a shared causal prefix) are not
run: their score is the clean target score (:func:`_active_patches`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import polars as pl
import torch
from torch import Tensor

from nast.models.base import VLModel

#: patched rows per forward call (bounds memory for wide models)
MAX_ROWS = 2048

# ----------------------------------------------------------------------------- the patch op


def patch_hidden(target: Tensor, source: Tensor, mask: Tensor,
                 rows: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """The one patching function.

    target, source: ``[E, T, W]`` hidden states of the target / source run at one layer.
    mask: ``[K, T]`` bool; patch k replaces the positions ``mask[k]`` of the target with the source.
    rows: optional ``(e_idx [N], k_idx [N])`` -- build only these (example, patch) combinations.
    Returns ``[N, T, W]``; by default N = E * K and row ``e * K + k`` = example e under patch k.
    """
    E, K = target.shape[0], mask.shape[0]
    if rows is None:
        dev = target.device
        rows = (torch.arange(E, device=dev).repeat_interleave(K), torch.arange(K, device=dev).repeat(E))
    e_idx, k_idx = rows
    return torch.where(mask[k_idx][:, :, None], source[e_idx], target[e_idx])


def _active_patches(vl: VLModel, src_state: Tensor, tgt_state: Tensor, mask: Tensor, n_real: Tensor,
                    readout: Tensor | None) -> Tensor:
    """``[E, K]`` bool: patches that can change the target's score at this layer.

    A patch is a provable no-op (its score is exactly the clean target score) when every patched
    position p is (a) padding in both captions (p >= n_real: padding never reaches the readout in
    any family -- masked keys, or after the causal readout position), (b) after the readout
    position of a causal tower, or (c) holds identical states in both runs (e.g. a shared prefix
    of a causal tower, or the same token at layer 0). Only active patches are computed.
    """
    E, T, _ = tgt_state.shape
    pos = torch.arange(T, device=tgt_state.device)
    can = pos[None, :] < n_real[:, None]  # [E, T]
    if readout is not None:
        can &= pos[None, :] <= readout[:, None]
    can &= (src_state != tgt_state).any(-1)
    return (mask[None, :, :] & can[:, None, :]).any(-1)  # [E, K]


def single_position_masks(T: int, device=None) -> Tensor:
    """``[T, T]`` identity: patch k patches position k only (the CTE grid)."""
    return torch.eye(T, dtype=torch.bool, device=device)


def _trim(tokens: dict[str, Tensor], T: int) -> dict[str, Tensor]:
    return {k: v[:, :T] for k, v in tokens.items()}


def common_length(vl: VLModel, *token_sets: dict[str, Tensor]) -> int:
    """Longest real caption (incl. special tokens) over all rows of all token sets."""
    return int(max(int(vl.token_lengths(t).max()) for t in token_sets))


UNITS = ("block", "state")


def block_write_states(src_states: list[Tensor], tgt_states: list[Tensor]) -> list[Tensor]:
    """Source states for patching block *writes* instead of hidden states (``trace.unit: block``).

    Layer 0 is the embedding output (its write is the state itself). For l >= 1 the patched state
    is the target's input of block l-1 plus the source's write of that block,
    ``h_tgt[l-1] + (h_src[l] - h_src[l-1])``: the block's contribution to the residual stream is
    restored, everything it reads stays the target's. Patching it at all positions asks "how much
    of the clean difference does block l-1 write?"; unlike a hidden state (which also carries
    everything earlier layers wrote), this differs from block to block.

    Where a position's block input is identical in both runs (a shared causal prefix, the start
    token) the write is the source's own state ``h_src[l]`` -- the same value without the rounding
    of ``a + (b - a)``, so :func:`_active_patches` sees that the patch cannot change the score.
    """
    out = [src_states[0]]
    for i in range(1, len(src_states)):
        same_input = (src_states[i - 1] == tgt_states[i - 1]).all(-1, keepdim=True)
        out.append(torch.where(same_input, src_states[i], tgt_states[i - 1] + (src_states[i] - src_states[i - 1])))
    return out


def position_masks(T: int, unit: str, device=None) -> Tensor:
    """Patches traced per layer: the ``T`` single positions; in ``block`` mode one more row that
    patches all positions at once (the per-layer CTE of that unit, :func:`per_layer_example_cte`)."""
    eye = single_position_masks(T, device=device)
    if unit == "state":
        return eye
    return torch.cat([eye, torch.ones(1, T, dtype=torch.bool, device=device)])


#: causal towers: the traced rows are grouped into this many bands of first patched position; a
#: band runs the positions from its first patched one on (more bands: fewer positions, more calls)
SUFFIX_BANDS = 6


# ----------------------------------------------------------------------------- batched
def _row_chunks(e_all: Tensor, k_all: Tensor, need: Tensor, max_rows: int = MAX_ROWS):
    """Split the active (example, patch) rows into forward batches of at most ``max_rows`` rows.

    ``need[e]``: positions example e's runs need. Rows are ordered by it (stable) and each chunk
    is cut to its longest row; a chunk ends where the next length would pad its rows by more than
    a quarter, so short captions are not run at the length of the longest one. Yields
    ``(e_idx, k_idx, T)``.
    """
    if e_all.numel() == 0:
        return
    T_rows = need[e_all]
    order = torch.argsort(T_rows, stable=True)
    e_all, k_all, T_rows = e_all[order], k_all[order], T_rows[order].tolist()
    start = 0
    for r in range(1, len(T_rows) + 1):
        if r == len(T_rows) or r - start >= max_rows or T_rows[r] * 3 > T_rows[start] * 4:
            yield e_all[start:r], k_all[start:r], int(T_rows[r - 1])
            start = r


@torch.no_grad()
def patched_scores(
    vl: VLModel,
    src_tokens: dict[str, Tensor],
    tgt_tokens: dict[str, Tensor],
    img_emb: Tensor,
    mask: Tensor | None = None,
    layers: list[int] | None = None,
    unit: str = "state",
) -> tuple[Tensor, Tensor, Tensor]:
    """Scores of all patched runs, batched over examples, patches and reusing the clean cache.

    src_tokens, tgt_tokens: tokenised captions ``[E, T_ctx]`` (any padding; trimmed here to the
    common real length P). img_emb: ``[E, D]`` L2-normalised image embeddings.
    mask: ``[K, P]`` bool patches (default: the P single positions). layers: default 0..L.

    unit: what is patched at layer l -- ``state`` (the hidden state) or ``block`` (the write of
    text block l-1, :func:`block_write_states`).

    Returns ``(scores [E, n_layers, K], s_source [E], s_target [E])`` with
    ``scores[e, i, k] = s(img_e, target_e with layer layers[i] patched by mask[k] from source_e)``.
    """
    P = common_length(vl, src_tokens, tgt_tokens)
    src, tgt = _trim(src_tokens, P), _trim(tgt_tokens, P)
    if mask is None:
        mask = single_position_masks(P, device=img_emb.device)
    if mask.shape[1] != P:
        raise ValueError(f"mask has {mask.shape[1]} positions, the captions {P}")
    L = vl.n_text_layers
    layers = list(range(L + 1)) if layers is None else list(layers)
    src_states, src_ctx = vl.text_states(src)
    tgt_states, tgt_ctx = vl.text_states(tgt)
    s_src = (vl.text_readout(src_states[-1], src_ctx) * img_emb).sum(-1)
    if unit == "block":
        src_states = block_write_states(src_states, tgt_states)
    elif unit != "state":
        raise ValueError(f"trace unit must be one of {UNITS}, got {unit!r}")
    s_tgt = (vl.text_readout(tgt_states[-1], tgt_ctx) * img_emb).sum(-1)
    E, K = img_emb.shape[0], mask.shape[0]
    n_real = torch.maximum(vl.token_lengths(src), vl.token_lengths(tgt))
    readout = vl.causal_readout_index(tgt)
    # every patch starts as "no effect" (= the clean target score); active ones are computed
    out = s_tgt[:, None, None].expand(E, len(layers), K).clone()
    # a causal tower reads position readout[e]: the positions after it never reach the score, so
    # example e's patched runs need only its first readout[e] + 1 positions (the rest of P is cut)
    need = readout + 1 if readout is not None else torch.full((E,), P, dtype=torch.long, device=img_emb.device)
    if readout is not None and all(vl.runs_suffix(b) for b in range(L)):
        _suffix_schedule(vl, out, layers, src_states, tgt_states, tgt, img_emb, mask, n_real, readout, need)
        return out, s_src, s_tgt
    for i, layer in enumerate(layers):
        active = _active_patches(vl, src_states[layer], tgt_states[layer], mask, n_real, readout)
        e_all, k_all = active.nonzero(as_tuple=True)
        for e_idx, k_idx, T in _row_chunks(e_all, k_all, need):
            h = patch_hidden(tgt_states[layer][:, :T], src_states[layer][:, :T], mask[:, :T],
                             rows=(e_idx, k_idx))  # [N, T, W]
            rows = {k: v[e_idx, :T] for k, v in tgt.items()}
            ctx = vl.text_context(rows, h)
            for b in range(layer, L):
                h = vl.text_block(b, h, ctx)
            z = vl.text_readout(h, ctx)  # [N, D]
            out[e_idx, i, k_idx] = (z * img_emb[e_idx]).sum(-1)
    return out, s_src, s_tgt


def _suffix_schedule(vl: VLModel, out: Tensor, layers: list[int], src_states: list[Tensor],
                     tgt_states: list[Tensor], tgt: dict[str, Tensor], img_emb: Tensor, mask: Tensor,
                     n_real: Tensor, readout: Tensor, need: Tensor) -> None:
    """:func:`patched_scores` for a causal tower whose blocks run on a suffix (fills ``out``).

    A patch whose first patched position is ``p`` leaves positions ``< p`` of the target clean at
    every later layer (no position reads a later one), so a row runs only positions ``p..`` and
    attends to the clean target's cached keys and values before ``p``. Rows are grouped by ``p``
    (one group per first position, across all layers) and by length (:func:`_row_chunks`); a
    group makes one pass over the blocks, each row joining at the block its patch is applied to.
    The same numbers as the whole-block path up to float rounding (tests/trace/test_cte.py).
    """
    L = vl.n_text_layers
    first = mask.to(torch.int8).argmax(1)  # [K] first patched position of each patch
    kv = [vl.text_block_kv(b, tgt_states[b]) for b in range(L)]  # clean keys/values per block
    rows_e, rows_k, rows_i = [], [], []
    for i, layer in enumerate(layers):
        active = _active_patches(vl, src_states[layer], tgt_states[layer], mask, n_real, readout)
        e_all, k_all = active.nonzero(as_tuple=True)
        rows_e.append(e_all)
        rows_k.append(k_all)
        rows_i.append(torch.full_like(e_all, i))
    e_all, k_all, i_all = torch.cat(rows_e), torch.cat(rows_k), torch.cat(rows_i)
    if e_all.numel() == 0:
        return
    layer_of = torch.tensor(layers, dtype=torch.long, device=e_all.device)
    start_all = first[k_all]
    width = max(1, -(-int(need.max()) // SUFFIX_BANDS))
    band = start_all // width
    for v in torch.unique(band).tolist():
        sel = (band == v).nonzero(as_tuple=True)[0]
        for _, r_idx, T in _row_chunks(e_all[sel], sel, need):  # rows of similar length together
            p = int(start_all[r_idx].min())  # the band's rows run from its first patched position
            e_idx, k_idx, i_idx = e_all[r_idx], k_all[r_idx], i_all[r_idx]
            lay = layer_of[i_idx]
            order = torch.argsort(lay, stable=True)  # rows join the pass in layer order
            e_idx, k_idx, i_idx, lay = e_idx[order], k_idx[order], i_idx[order], lay[order]
            h = None
            n_in = 0
            for b in range(int(lay[0]), L + 1):
                n_new = int((lay == b).sum())
                if n_new:
                    j = slice(n_in, n_in + n_new)
                    hp = patch_hidden(tgt_states[b][:, :T], src_states[b][:, :T], mask[:, :T],
                                      rows=(e_idx[j], k_idx[j]))[:, p:]
                    h = hp if h is None else torch.cat([h, hp])
                    n_in += n_new
                if b < L:
                    h = vl.text_block_suffix(b, h, kv[b][e_idx[:n_in], :p])
            rows = {k: v[e_idx, :T] for k, v in tgt.items()}
            full = torch.cat([tgt_states[L][e_idx, :p], h], 1)
            z = vl.text_readout(full, vl.text_context(rows, full))  # [N, D]
            out[e_idx, i_idx, k_idx] = (z * img_emb[e_idx]).sum(-1)


# ----------------------------------------------------------------------------- naive reference
def _layer_hooks(vl: VLModel, layer: int, fn: Callable[[Tensor], Tensor]):
    """Register a hook that maps the hidden state of ``layer`` (0 = input of block 0) through fn."""
    blocks = vl.text_layers()
    if layer == 0:
        def pre(module, args, kwargs):
            if args:
                return (fn(args[0]), *args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = fn(kwargs["hidden_states"])
            return args, kwargs

        return blocks[0].register_forward_pre_hook(pre, with_kwargs=True)

    def post(module, args, output):
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    return blocks[layer - 1].register_forward_hook(post)


@torch.no_grad()
def patched_scores_naive(
    vl: VLModel,
    src_tokens: dict[str, Tensor],
    tgt_tokens: dict[str, Tensor],
    img_emb: Tensor,
    mask: Tensor | None = None,
    layers: list[int] | None = None,
    unit: str = "state",
) -> tuple[Tensor, Tensor, Tensor]:
    """Reference implementation of :func:`patched_scores`: one full forward of the library's own
    ``encode_text`` (full context, batch 1) per (example, layer, patch), with forward hooks on the
    text blocks recording the clean source and target states and overwriting the target's
    (``unit: block``: with the target's block input plus the source's block write). Same
    signature/result.
    """
    if unit not in UNITS:
        raise ValueError(f"trace unit must be one of {UNITS}, got {unit!r}")
    P = common_length(vl, src_tokens, tgt_tokens)
    if mask is None:
        mask = single_position_masks(P, device=img_emb.device)
    L = vl.n_text_layers
    layers = list(range(L + 1)) if layers is None else list(layers)
    E, K = img_emb.shape[0], mask.shape[0]
    dev = img_emb.device  # same device as patched_scores' results
    out = torch.empty(E, len(layers), K, device=dev)
    s_src, s_tgt = torch.empty(E, device=dev), torch.empty(E, device=dev)
    for e in range(E):
        src = {k: v[e:e + 1] for k, v in src_tokens.items()}
        tgt = {k: v[e:e + 1] for k, v in tgt_tokens.items()}
        caches: dict[str, dict[int, Tensor]] = {"src": {}, "tgt": {}}
        all_layers = list(range(L + 1))
        for run, toks in (("src", src), ("tgt", tgt)):
            handles = []
            for layer in all_layers:
                def record(h, layer=layer, run=run):
                    caches[run][layer] = h.detach().clone()
                    return h

                handles.append(_layer_hooks(vl, layer, record))
            score = (vl.encode_text(toks)[0] * img_emb[e]).sum()
            for hd in handles:
                hd.remove()
            if run == "src":
                s_src[e] = score
            else:
                s_tgt[e] = score
        cache = caches["src"]
        if unit == "block":
            cache = dict(enumerate(block_write_states([caches["src"][layer] for layer in all_layers],
                                                      [caches["tgt"][layer] for layer in all_layers])))
        for i, layer in enumerate(layers):
            for k in range(K):
                pos = mask[k].nonzero().flatten()

                def overwrite(h, layer=layer, pos=pos):
                    h = h.clone()
                    h[:, pos] = cache[layer][:, pos]
                    return h

                hd = _layer_hooks(vl, layer, overwrite)
                try:
                    out[e, i, k] = (vl.encode_text(tgt)[0] * img_emb[e]).sum()
                finally:
                    hd.remove()
    return out, s_src, s_tgt


# ----------------------------------------------------------------------------- CTE + aggregation
def cte_from_scores(scores: Tensor, s_src: Tensor, s_tgt: Tensor) -> tuple[Tensor, Tensor]:
    """``(CTE [E, n_layers, K], d [E])`` with CTE = (scores - s_tgt) / (s_src - s_tgt)."""
    d = s_src - s_tgt
    return (scores - s_tgt[:, None, None]) / d[:, None, None], d


WEIGHTINGS = ("abs_d", "uniform")


def per_example_layer_cte(cte: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``[E, n_layers]``: each example's mean CTE over its real positions (``r_e(l)``)."""
    return (cte * valid[:, None, :]).sum(-1) / np.maximum(valid.sum(-1), 1)[:, None]


def layer_cte(per_example: np.ndarray, d: np.ndarray | None, weighting: str) -> np.ndarray:
    """``[n_layers]`` per-layer CTE from ``r_e(l)`` ``[E, n_layers]`` (see the module docstring).

    ``abs_d`` needs the clean differences ``d`` ``[E]``; ``uniform`` ignores them.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"example weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if per_example.shape[0] == 0:
        return np.full(per_example.shape[1], np.nan)
    if weighting == "uniform":
        return per_example.mean(0)
    if d is None or len(d) != per_example.shape[0]:
        raise ValueError("abs_d weighting needs one clean difference d per example")
    w = np.abs(np.asarray(d, dtype=float))
    if w.sum() == 0:
        return per_example.mean(0)
    return (w[:, None] * per_example).sum(0) / w.sum()


def minmax_alpha(per_layer: np.ndarray) -> np.ndarray:
    """``alpha_l = (cte_l - min) / (max - min)`` (all 1 when the range is 0 or undefined)."""
    per_layer = np.asarray(per_layer, dtype=float)
    if per_layer.size == 0 or not np.isfinite(per_layer).any():
        return np.ones(per_layer.size)
    lo, hi = np.nanmin(per_layer), np.nanmax(per_layer)
    return (per_layer - lo) / (hi - lo) if hi > lo else np.ones(per_layer.size)


def bootstrap_layer_cte(per_example: np.ndarray, d: np.ndarray | None, weighting: str, n_boot: int,
                        seed: int) -> np.ndarray:
    """``[n_boot, n_layers]`` per-layer CTEs of examples resampled with replacement (seeded)."""
    E, nl = per_example.shape
    if n_boot <= 0 or E == 0:
        return np.empty((0, nl))
    rng = np.random.default_rng(seed)
    d = None if d is None else np.asarray(d, dtype=float)
    out = np.empty((n_boot, nl))
    for b in range(n_boot):
        idx = rng.integers(0, E, size=E)
        out[b] = layer_cte(per_example[idx], None if d is None else d[idx], weighting)
    return out


def alpha_stability(per_layer: np.ndarray, boots: np.ndarray, layers: list[int]) -> dict[str, float | None]:
    """How much of the block ranking survives resampling the probing pairs.

    ``top_block_agreement`` / ``bottom_block_agreement``: share of bootstrap resamples whose
    highest / lowest-CTE text block (layer >= 1, the blocks NAST trains) is the full sample's.
    Values near 1 mean the layer weights are a property of the model, values near 1/L that they
    are sampling noise (then trace more pairs, ``trace.max_examples``, before trusting alpha).
    """
    blocks = [i for i, layer in enumerate(layers) if layer >= 1]
    if boots.shape[0] == 0 or len(blocks) < 2:
        return {"top_block_agreement": None, "bottom_block_agreement": None}
    full = np.asarray(per_layer)[blocks]
    sub = boots[:, blocks]
    return {"top_block_agreement": float(np.mean(sub.argmax(1) == full.argmax())),
            "bottom_block_agreement": float(np.mean(sub.argmin(1) == full.argmin()))}


def per_layer_example_cte(res: dict) -> np.ndarray:
    """``[E, n_layers]`` per-example layer CTE ``r_e(l)`` of a :func:`trace_pairs` result:
    ``unit: state`` -- the mean over the example's real positions of the single-position CTEs;
    ``unit: block`` -- the CTE of restoring the block's whole write (all positions at once)."""
    if res.get("unit", "state") == "block":
        return res["whole"]
    return per_example_layer_cte(res["cte"], res["valid"])


def aggregate(cte: np.ndarray, valid: np.ndarray, layers: list[int], d: np.ndarray | None = None,
              weighting: str = "uniform", n_boot: int = 0, seed: int = 0,
              per_example: np.ndarray | None = None,
              ) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float | None]]:
    """Pure aggregation of per-example CTE grids.

    cte: ``[E, n_layers, P]`` float; valid: ``[E, P]`` bool (real positions of each example);
    d: ``[E]`` clean differences (needed by ``weighting="abs_d"``); n_boot/seed: bootstrap of
    the per-layer interval (0 = no interval, NaN bounds); per_example: ``[E, n_layers]``
    ``r_e(l)`` to aggregate (default: the mean of ``cte`` over each example's real positions;
    ``trace.unit: block`` passes the whole-write CTEs, :func:`per_layer_example_cte`).
    Returns the ``cte.parquet`` table (layer, position, effect, n), ``layer_weights``
    (layer, cte, cte_lo, cte_hi, alpha) and :func:`alpha_stability` of the bootstrap -- see the
    module docstring for the definitions.
    """
    E, nl, P = cte.shape
    n = valid.sum(0)  # [P]
    rows = {"layer": [], "position": [], "effect": [], "n": []}
    for i, layer in enumerate(layers):
        for p in range(P):
            if n[p] == 0:
                continue
            rows["layer"].append(layer)
            rows["position"].append(p)
            rows["effect"].append(float(cte[valid[:, p], i, p].mean()))
            rows["n"].append(int(n[p]))
    table = pl.DataFrame(rows, schema={"layer": pl.Int16, "position": pl.Int16, "effect": pl.Float64, "n": pl.Int64})
    if per_example is None:
        per_example = per_example_layer_cte(cte, valid)
    per_layer = layer_cte(per_example, d, weighting)
    boots = bootstrap_layer_cte(per_example, d, weighting, n_boot, seed)
    if boots.shape[0]:
        lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    else:
        lo = hi = np.full(nl, np.nan)
    weights = pl.DataFrame(
        {"layer": layers, "cte": per_layer.astype(float), "cte_lo": lo.astype(float), "cte_hi": hi.astype(float),
         "alpha": minmax_alpha(per_layer).astype(float)},
        schema={"layer": pl.Int64, "cte": pl.Float64, "cte_lo": pl.Float64, "cte_hi": pl.Float64, "alpha": pl.Float64})
    return table.sort("layer", "position"), weights, alpha_stability(per_layer, boots, layers)


def trace_pairs(
    vl: VLModel,
    images: Tensor,
    sources: list[str],
    targets: list[str],
    *,
    min_abs_d: float,
    batch_size: int,
    naive: bool = False,
    unit: str = "state",
    log: Callable[[str], None] | None = None,
) -> dict:
    """Trace a list of pairs. images: ``[E, C, H, W]`` preprocessed; sources/targets: captions.

    Returns dict with ``cte`` [E_kept, L+1, P_max] (single-position patches; 0 beyond an example's
    positions), ``valid`` [E_kept, P_max], ``d`` [E] (all pairs), ``kept`` indices,
    ``n_skipped_small_d``, ``layers``, ``unit`` and ``whole`` [E_kept, L+1]: the CTE of patching
    all positions of the layer at once (``unit: block`` only, else None).
    """
    if unit not in UNITS:
        raise ValueError(f"trace unit must be one of {UNITS}, got {unit!r}")
    L = vl.n_text_layers
    layers = list(range(L + 1))
    E = len(sources)
    fn = patched_scores_naive if naive else patched_scores
    grids, valids, ds, kept, wholes = [], [], [], [], []
    skipped = 0
    for b0 in range(0, E, batch_size):
        b1 = min(E, b0 + batch_size)
        with torch.no_grad():
            img = vl.encode_image(images[b0:b1].to(vl.device))  # once per example
        src = vl.tokenize(sources[b0:b1])
        tgt = vl.tokenize(targets[b0:b1])
        P = common_length(vl, src, tgt)
        scores, s_src, s_tgt = fn(vl, src, tgt, img, mask=position_masks(P, unit, device=img.device), unit=unit)
        cte, d = cte_from_scores(scores.cpu(), s_src.cpu(), s_tgt.cpu())
        whole = cte[:, :, P] if unit == "block" else None
        cte = cte[:, :, :P]
        n_real = torch.maximum(vl.token_lengths(src), vl.token_lengths(tgt)).cpu()
        for j in range(b1 - b0):
            ds.append(float(d[j]))
            if abs(float(d[j])) < min_abs_d:
                skipped += 1
                continue
            kept.append(b0 + j)
            grids.append(cte[j].double().numpy())
            if whole is not None:
                wholes.append(whole[j].double().numpy())
            valids.append(np.arange(cte.shape[-1]) < int(n_real[j]))
        if log:
            log(f"traced {b1}/{E} pairs ({skipped} skipped, |d| < {min_abs_d})")
    P = max((g.shape[-1] for g in grids), default=0)
    grid = np.full((len(grids), L + 1, P), np.nan)
    valid = np.zeros((len(grids), P), dtype=bool)
    for i, (g, v) in enumerate(zip(grids, valids)):
        grid[i, :, : g.shape[-1]] = g
        valid[i, : v.shape[0]] = v
    grid = np.where(valid[:, None, :], grid, 0.0)
    whole = (np.stack(wholes) if wholes else np.empty((0, L + 1))) if unit == "block" else None
    return {"cte": grid, "valid": valid, "d": np.array(ds), "kept": kept, "n_skipped_small_d": skipped,
            "layers": layers, "unit": unit, "whole": whole}
