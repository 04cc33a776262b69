"""Causal tracing: batched == naive, full patching restores the source, skipping, aggregation."""

import numpy as np
import polars as pl
import pytest
import torch

from nast.trace.cte import (
    aggregate,
    block_write_states,
    common_length,
    cte_from_scores,
    patch_hidden,
    patched_scores,
    patched_scores_naive,
    per_layer_example_cte,
    position_masks,
    trace_pairs,
)

FAMILIES = ("open_clip", "open_clip_hf", "hf_clip")
SOURCES = ["a small effusion", "lungs are clear"]
TARGETS = ["no effusion", "no edema"]


def _img(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 32, generator=g), dim=-1)


def test_patch_hidden_rows():
    tgt = torch.zeros(2, 3, 4)
    src = torch.arange(2 * 3 * 4, dtype=torch.float).reshape(2, 3, 4) + 1
    mask = torch.tensor([[True, False, False], [False, True, True]])
    out = patch_hidden(tgt, src, mask)
    assert out.shape == (4, 3, 4)
    assert torch.equal(out[0, 0], src[0, 0]) and out[0, 1:].abs().sum() == 0  # example 0, patch 0
    assert out[3, 0].abs().sum() == 0 and torch.equal(out[3, 1:], src[1, 1:])  # example 1, patch 1


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_naive(tiny_models, family):
    vl = tiny_models[family]
    src, tgt, img = vl.tokenize(SOURCES), vl.tokenize(TARGETS), _img(2)
    fast = patched_scores(vl, src, tgt, img)
    slow = patched_scores_naive(vl, src, tgt, img)
    P = common_length(vl, src, tgt)
    assert fast[0].shape == (2, vl.n_text_layers + 1, P)
    for a, b in zip(fast, slow):
        assert float((a - b).abs().max()) <= 1e-5
    # a patch is not a no-op: something moves at some (layer, position)
    assert float((fast[0] - fast[2][:, None, None]).abs().max()) > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_all_positions_gives_the_source_score_at_every_layer(tiny_models, family):
    vl = tiny_models[family]
    # same token length -> same readout position and padding mask; only "a" vs "no" differs
    src, tgt = vl.tokenize(["there is a pleural effusion"]), vl.tokenize(["there is no pleural effusion"])
    assert torch.equal(vl.token_lengths(src), vl.token_lengths(tgt))
    P = common_length(vl, src, tgt)
    img = _img(1, seed=3)
    scores, s_src, s_tgt = patched_scores(vl, src, tgt, img, mask=torch.ones(1, P, dtype=torch.bool))
    assert abs(float(s_src - s_tgt)) > 1e-4
    torch.testing.assert_close(scores[0, :, 0], s_src.expand(vl.n_text_layers + 1), atol=1e-5, rtol=0)
    cte, _ = cte_from_scores(scores, s_src, s_tgt)
    torch.testing.assert_close(cte[0, :, 0], torch.ones(vl.n_text_layers + 1, dtype=cte.dtype), atol=1e-3, rtol=0)
    # and patching nothing leaves the target score
    none, _, _ = patched_scores(vl, src, tgt, img, mask=torch.zeros(1, P, dtype=torch.bool))
    torch.testing.assert_close(none[0, :, 0], s_tgt.expand(vl.n_text_layers + 1), atol=1e-5, rtol=0)


def test_small_d_examples_are_counted_not_divided(tiny_models):
    vl = tiny_models["open_clip"]
    images = torch.stack([vl.preprocess(__import__("PIL.Image").Image.new("L", (32, 32), c)) for c in (30, 200, 90)])
    # pair 1 has identical captions: d == 0 exactly
    sources = [SOURCES[0], "no pneumothorax", SOURCES[1]]
    targets = [TARGETS[0], "no pneumothorax", TARGETS[1]]
    res = trace_pairs(vl, images, sources, targets, min_abs_d=1e-6, batch_size=2)
    assert res["n_skipped_small_d"] == 1 and res["kept"] == [0, 2]
    assert res["d"][1] == 0.0
    assert np.isfinite(res["cte"]).all()
    none = trace_pairs(vl, images, sources, targets, min_abs_d=10.0, batch_size=2)
    assert none["n_skipped_small_d"] == 3 and none["cte"].shape[0] == 0
    table, weights, stability = aggregate(none["cte"], none["valid"], none["layers"], d=none["d"][none["kept"]],
                                          weighting="abs_d", n_boot=10)
    assert table.height == 0 and weights.height == vl.n_text_layers + 1
    assert (weights["alpha"] == 1.0).all() and stability["top_block_agreement"] is None


def test_trace_pairs_batched_equals_naive_end_to_end(tiny_models):
    vl = tiny_models["hf_clip"]
    images = torch.stack([vl.preprocess(__import__("PIL.Image").Image.new("L", (32, 32), c)) for c in (10, 240)])
    a = trace_pairs(vl, images, SOURCES, TARGETS, min_abs_d=0.0, batch_size=1)
    b = trace_pairs(vl, images, SOURCES, TARGETS, min_abs_d=0.0, batch_size=2, naive=True)
    assert np.abs(a["cte"] - b["cte"]).max() <= 1e-3  # ratios of score differences
    assert np.array_equal(a["valid"], b["valid"])


def test_aggregate_means_and_minmax():
    # 2 examples, 3 layers, 3 positions; example 1 has only 2 real positions
    cte = np.array([
        [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 3.0]],
        [[0.0, 1.0, 0.0], [0.2, 0.4, 0.0], [0.0, 1.0, 0.0]],
    ])
    valid = np.array([[True, True, True], [True, True, False]])
    table, weights, _ = aggregate(cte, valid, [0, 1, 2])
    assert table.schema == {"layer": pl.Int16, "position": pl.Int16, "effect": pl.Float64, "n": pl.Int64}
    row = table.filter((pl.col("layer") == 2) & (pl.col("position") == 2)).row(0, named=True)
    assert row["effect"] == 3.0 and row["n"] == 1
    row = table.filter((pl.col("layer") == 0) & (pl.col("position") == 1)).row(0, named=True)
    assert row["effect"] == 0.5 and row["n"] == 2
    # per layer: mean over examples of the mean over real positions
    expected = np.array([(1 / 3 + 1 / 2) / 2, (0.5 + 0.3) / 2, (1.0 + 0.5) / 2])
    np.testing.assert_allclose(weights["cte"].to_numpy(), expected)
    np.testing.assert_allclose(weights["alpha"].to_numpy(),
                               (expected - expected.min()) / (expected.max() - expected.min()))
    assert weights["alpha"].min() == 0.0 and weights["alpha"].max() == 1.0


def test_abs_d_weighting_is_the_restored_share_of_the_total_difference():
    # per-example layer CTEs r_e(l) (one position each) and clean differences d_e
    r = np.array([[1.0, 0.2], [0.0, 0.6], [10.0, -10.0]])
    d = np.array([0.4, -0.2, 0.001])  # the last pair's ratio is huge because its d is tiny
    cte = r[:, :, None]
    valid = np.ones((3, 1), dtype=bool)
    _, uniform, _ = aggregate(cte, valid, [0, 1], d=d, weighting="uniform")
    _, weighted, _ = aggregate(cte, valid, [0, 1], d=d, weighting="abs_d")
    np.testing.assert_allclose(uniform["cte"].to_numpy(), r.mean(0))
    # sum_e |d_e| r_e(l) / sum_e |d_e|, i.e. sum_e sign(d_e) d*_e(l) / sum_e |d_e|
    np.testing.assert_allclose(weighted["cte"].to_numpy(), (np.abs(d)[:, None] * r).sum(0) / np.abs(d).sum())
    # the tiny-|d| pair decides the uniform ranking of the two layers, not the weighted one
    assert uniform["cte"][0] > uniform["cte"][1] and weighted["cte"][0] > weighted["cte"][1]
    r2 = r.copy()
    r2[2] = [-10.0, 10.0]
    _, u2, _ = aggregate(r2[:, :, None], valid, [0, 1], d=d, weighting="uniform")
    _, w2, _ = aggregate(r2[:, :, None], valid, [0, 1], d=d, weighting="abs_d")
    assert u2["cte"][0] < u2["cte"][1]  # flipped by one pair
    assert w2["cte"][0] > w2["cte"][1]  # not flipped
    with pytest.raises(ValueError, match="one clean difference"):
        aggregate(cte, valid, [0, 1], d=None, weighting="abs_d")


def test_bootstrap_interval_and_block_stability():
    rng = np.random.default_rng(0)
    E = 200
    # layer 2 clearly highest, layers 1 and 3 indistinguishable
    r = np.column_stack([rng.normal(0.1, 0.05, E), rng.normal(0.2, 0.05, E), rng.normal(0.5, 0.05, E),
                         rng.normal(0.2, 0.05, E)])
    d = rng.uniform(0.1, 1.0, E)
    valid = np.ones((E, 1), dtype=bool)
    _, w, stab = aggregate(r[:, :, None], valid, [0, 1, 2, 3], d=d, weighting="abs_d", n_boot=200, seed=1)
    assert w.columns == ["layer", "cte", "cte_lo", "cte_hi", "alpha"]
    assert (w["cte_lo"] <= w["cte"]).all() and (w["cte"] <= w["cte_hi"]).all()
    assert (w["cte_hi"] - w["cte_lo"]).max() < 0.05
    assert stab["top_block_agreement"] == 1.0  # layer 2 always wins
    assert stab["bottom_block_agreement"] < 0.9  # layers 1 and 3 trade places
    # seeded: same numbers again
    _, w_again, stab_again = aggregate(r[:, :, None], valid, [0, 1, 2, 3], d=d, weighting="abs_d", n_boot=200, seed=1)
    assert w_again.equals(w) and stab_again == stab
    # no bootstrap: NaN bounds, no stability figure
    _, w0, stab0 = aggregate(r[:, :, None], valid, [0, 1, 2, 3], d=d, weighting="abs_d")
    assert w0["cte_lo"].is_nan().all() and stab0["top_block_agreement"] is None


# ----------------------------------------------------------------------------- unit: block
@pytest.mark.parametrize("family", FAMILIES)
def test_block_unit_batched_equals_naive(tiny_models, family):
    vl = tiny_models[family]
    src, tgt, img = vl.tokenize(SOURCES), vl.tokenize(TARGETS), _img(2, seed=5)
    P = common_length(vl, src, tgt)
    mask = position_masks(P, "block")
    assert mask.shape == (P + 1, P) and bool(mask[P].all())
    fast = patched_scores(vl, src, tgt, img, mask=mask, unit="block")
    slow = patched_scores_naive(vl, src, tgt, img, mask=mask, unit="block")
    for a, b in zip(fast, slow):
        assert float((a - b).abs().max()) <= 1e-5
    state = patched_scores(vl, src, tgt, img, mask=mask, unit="state")
    # layer 0 (the embeddings' write is the state) agrees; the blocks do not
    torch.testing.assert_close(fast[0][:, 0], state[0][:, 0], atol=1e-6, rtol=0)
    assert float((fast[0][:, 1:] - state[0][:, 1:]).abs().max()) > 1e-4


def test_block_write_states_restore_the_source_run_when_every_write_is_patched(tiny_models):
    vl = tiny_models["open_clip"]
    src, tgt = vl.tokenize(["there is a pleural effusion"]), vl.tokenize(["there is no pleural effusion"])
    P = common_length(vl, src, tgt)
    with torch.no_grad():
        s_states, _ = vl.text_states({k: v[:, :P] for k, v in src.items()})
        t_states, _ = vl.text_states({k: v[:, :P] for k, v in tgt.items()})
    w = block_write_states(s_states, t_states)
    assert torch.equal(w[0], s_states[0])
    # target input + source write of block l == source output when the inputs agree
    torch.testing.assert_close(w[1] - t_states[0] + s_states[0], s_states[1], atol=1e-6, rtol=0)
    # the write of the last block alone is not the whole source state (earlier writes stay the target's)
    assert float((w[-1] - s_states[-1]).abs().max()) > 1e-4


def test_block_unit_per_layer_cte_is_the_whole_write_patch(tiny_models):
    vl = tiny_models["open_clip"]
    images = torch.stack([vl.preprocess(__import__("PIL.Image").Image.new("L", (32, 32), c)) for c in (30, 200)])
    res = trace_pairs(vl, images, SOURCES, TARGETS, min_abs_d=0.0, batch_size=2, unit="block")
    assert res["whole"].shape == (2, vl.n_text_layers + 1) and res["unit"] == "block"
    np.testing.assert_array_equal(per_layer_example_cte(res), res["whole"])
    # the single-position grid is that of the same unit; the whole write is a separate patch
    assert res["cte"].shape[:2] == (2, vl.n_text_layers + 1)
    state = trace_pairs(vl, images, SOURCES, TARGETS, min_abs_d=0.0, batch_size=2, unit="state")
    assert state["whole"] is None
    np.testing.assert_allclose(per_layer_example_cte(state),
                               (state["cte"] * state["valid"][:, None, :]).sum(-1) / state["valid"].sum(-1)[:, None])
    _, w, _ = aggregate(res["cte"], res["valid"], res["layers"], d=res["d"], weighting="uniform",
                        per_example=per_layer_example_cte(res))
    np.testing.assert_allclose(w["cte"].to_numpy(), res["whole"].mean(0))
    with pytest.raises(ValueError, match="trace unit"):
        trace_pairs(vl, images, SOURCES, TARGETS, min_abs_d=0.0, batch_size=2, unit="head")


def test_block_write_of_a_shared_causal_prefix_is_exactly_the_state_and_skipped(tiny_models):
    """Where both runs share a block's input (causal prefix "there is"), the write is the source state
    bit for bit, so those patches are recognised as no-ops; batched still equals naive (block unit,
    captions of different lengths, i.e. rows cut to different readout lengths)."""
    vl = tiny_models["open_clip"]
    srcs, tgts = ["there is a pleural effusion", "lungs are clear"], ["there is no pleural effusion here", "no edema"]
    src, tgt = vl.tokenize(srcs), vl.tokenize(tgts)
    P = common_length(vl, src, tgt)
    with torch.no_grad():
        s_states, _ = vl.text_states({k: v[:, :P] for k, v in src.items()})
        t_states, _ = vl.text_states({k: v[:, :P] for k, v in tgt.items()})
    w = block_write_states(s_states, t_states)
    for layer in range(1, len(w)):  # SOT + "there is" (3 positions) of pair 0 are shared
        assert torch.equal(w[layer][0, :3], t_states[layer][0, :3])
    img = _img(2, seed=3)
    mask = position_masks(P, "block")
    fast = patched_scores(vl, src, tgt, img, mask=mask, unit="block")
    slow = patched_scores_naive(vl, src, tgt, img, mask=mask, unit="block")
    for a, b in zip(fast, slow):
        assert float((a - b).abs().max()) <= 1e-5
    assert torch.equal(fast[0][0, 1:, :3], fast[2][0].expand(len(w) - 1, 3))  # skipped: the clean target score


def test_open_clip_block_on_a_suffix_equals_the_whole_block(tiny_models):
    """The causal tower's suffix block (cached keys/values of the positions before it) gives the
    whole block's output on those positions; the batched trace uses it for open_clip only."""
    vl = tiny_models["open_clip"]
    assert all(vl.runs_suffix(b) for b in range(vl.n_text_layers))
    assert not any(tiny_models[f].runs_suffix(0) for f in ("open_clip_hf", "hf_clip"))
    tokens = vl.tokenize(["there is a small left pleural effusion and no edema"])
    T = int(vl.token_lengths(tokens).max())
    tokens = {k: v[:, :T] for k, v in tokens.items()}
    states, ctx = vl.text_states(tokens)
    for b in range(vl.n_text_layers):
        whole = vl.text_block(b, states[b], ctx)
        for p in (0, 1, T // 2, T - 1):
            part = vl.text_block_suffix(b, states[b][:, p:], vl.text_block_kv(b, states[b])[:, :p])
            torch.testing.assert_close(part, whole[:, p:], rtol=0, atol=1e-6)


def test_batched_suffix_path_equals_the_whole_block_path(tiny_models, monkeypatch):
    """The same scores with the suffix schedule and with whole blocks (block unit: single
    positions and the all-positions patch)."""
    vl = tiny_models["open_clip"]
    src, tgt = vl.tokenize(SOURCES + ["mild cardiomegaly"]), vl.tokenize(TARGETS + ["no cardiomegaly"])
    img = _img(3)
    P = common_length(vl, src, tgt)
    mask = position_masks(P, "block")
    fast = patched_scores(vl, src, tgt, img, mask=mask, unit="block")
    monkeypatch.setattr(type(vl), "runs_suffix", lambda self, i: False)
    whole = patched_scores(vl, src, tgt, img, mask=mask, unit="block")
    for a, b in zip(fast, whole):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
