"""Pure evaluation metrics (numpy arrays in, numbers / dicts out). No model, no disk.

Definitions (the ones reported in ``reports/eval/{method}.json``):

MCQ
    A question has four option texts; the model picks ``argmax_o cos(image, option_o)``.
    Accuracy = share of questions whose pick is the correct letter. The *gap* is
    ``affirmative accuracy - negated accuracy`` on the same questions (paired), so a positive gap
    means the model is worse on negated wording ("negation blindness").
    Ties are broken towards the first option (numpy ``argmax``), never towards the correct one.

Bootstrap CIs
    Percentile bootstrap over questions (resampled with replacement, ``n`` resamples, fixed seed).
    The gap CI resamples the *same* question indices for both sets (paired bootstrap).

Paired comparisons between methods
    Every method answers the same test questions, so two methods are compared question by
    question: ``diff = mean(hits_a) - mean(hits_b)`` with a paired percentile bootstrap (the same
    resampled question indices for both). The eval JSON keeps each method's per-question hits as a
    0/1 string in question order (``mcq_hits``) with a digest of that order, never the question
    ids or texts; :func:`paired_difference` refuses hits of different question sets.

Contextual claims
    A *caption group* is one true caption for one image together with all its minimal-edit foils.
    ``claim_acc`` = share of groups where the true caption scores strictly higher than **every**
    foil (group-level, strict). ``claim_acc_by_foil_type[t]`` = the same, restricted to the foils
    of type ``t`` (groups without a foil of that type do not count for ``t``).
    ``claim_pair_acc`` = share of (caption, foil) pairs with ``s(caption) > s(foil)``.

Retrieval
    Item ``i`` of the image set matches item ``i`` of the text set (one image per study, report =
    findings + impression); items with the *identical* report text count as correct too. The rank
    is pessimistic on ties: ``rank = #{j not correct : s_ij >= best correct score}``; R@k = share
    with ``rank < k``. So a model that scores everything equally gets R@k = 0, not 1.

AUROC
    Per finding, the score ``cos(img, "{finding}") - cos(img, "no {finding}")`` against the cohort
    label (1 = positive vs 0 = negative; uncertain and not-mentioned are excluded). A finding with
    only one class present gets no value (omitted). Computed with scikit-learn.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

LETTERS = ("A", "B", "C", "D")


def mcq_correct(scores: np.ndarray, correct: Sequence[int]) -> np.ndarray:
    """Per question: True when argmax over options equals the correct option index.

    scores: [N, n_options] similarities; correct: [N] option indices.
    """
    scores = np.asarray(scores, dtype=float)
    correct = np.asarray(correct, dtype=int)
    if scores.ndim != 2 or scores.shape[0] != correct.shape[0]:
        raise ValueError(f"scores {scores.shape} and correct {correct.shape} do not align")
    return scores.argmax(axis=1) == correct


def length_bias(hits: np.ndarray, lengths: np.ndarray, correct: Sequence[int]) -> dict:
    """Accuracy by how long the correct option is among the four (CheXalign's length concern).

    ``lengths`` [N, 4]: token counts of the options; the correct option's rank is the number of
    options strictly shorter than it (0 = shortest, ties share the lower rank). ``longest_acc`` /
    ``shortest_acc``: accuracy on the questions whose correct option is strictly the longest /
    strictly the shortest (ties count for neither); ``length_controlled_acc``: the mean of the
    per-rank accuracies over the ranks that occur, so a model that merely prefers long (or short)
    options gains nothing from how often the correct option happens to be long.
    """
    hits = np.asarray(hits, dtype=bool)
    if hits.size == 0:
        return {"longest_acc": float("nan"), "n_longest": 0, "shortest_acc": float("nan"), "n_shortest": 0,
                "by_rank": {}, "n_by_rank": {}, "length_controlled_acc": float("nan")}
    lengths = np.asarray(lengths, dtype=float).reshape(len(hits), -1)
    correct = np.asarray(correct, dtype=int)
    rows = np.arange(len(hits))
    own = lengths[rows, correct]
    other = np.ones(lengths.shape, dtype=bool)
    other[rows, correct] = False
    rank = (lengths < own[:, None]).sum(axis=1)
    longest = own > np.where(other, lengths, -np.inf).max(axis=1, initial=-np.inf)
    shortest = own < np.where(other, lengths, np.inf).min(axis=1, initial=np.inf)
    by_rank = {str(int(r)): accuracy(hits[rank == r]) for r in sorted(set(rank.tolist()))}
    return {
        "longest_acc": accuracy(hits[longest]), "n_longest": int(longest.sum()),
        "shortest_acc": accuracy(hits[shortest]), "n_shortest": int(shortest.sum()),
        "by_rank": by_rank, "n_by_rank": {str(int(r)): int((rank == r).sum()) for r in sorted(set(rank.tolist()))},
        "length_controlled_acc": float(np.mean(list(by_rank.values()))) if by_rank else float("nan"),
    }


def accuracy(hits: np.ndarray) -> float:
    hits = np.asarray(hits, dtype=bool)
    return float(hits.mean()) if hits.size else float("nan")


def bootstrap_ci(
    hits: np.ndarray, n_boot: int, seed: int, paired_with: np.ndarray | None = None
) -> tuple[float, float]:
    """Percentile 95 % CI of ``mean(hits)`` (or of ``mean(hits) - mean(paired_with)``, paired).

    With ``n_boot == 0`` or no data the interval is ``(nan, nan)``.
    """
    hits = np.asarray(hits, dtype=float)
    if n_boot <= 0 or hits.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, hits.size, size=(n_boot, hits.size))
    stat = hits[idx].mean(axis=1)
    if paired_with is not None:
        other = np.asarray(paired_with, dtype=float)
        if other.shape != hits.shape:
            raise ValueError("paired bootstrap needs arrays of equal length")
        stat = stat - other[idx].mean(axis=1)
    lo, hi = np.percentile(stat, [2.5, 97.5])
    return (float(lo), float(hi))


def encode_hits(hits: np.ndarray) -> str:
    """Per-question hits as a compact 0/1 string (question order kept)."""
    return "".join("1" if h else "0" for h in np.asarray(hits, dtype=bool))


def decode_hits(text: str) -> np.ndarray:
    if set(text) - {"0", "1"}:
        raise ValueError("hits must be a string of 0 and 1")
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")


def question_digest(ids: Iterable) -> str:
    """Digest of the ordered question ids (tells whether two hit strings are the same questions)."""
    import hashlib

    return hashlib.sha256("\n".join(str(i) for i in ids).encode()).hexdigest()[:16]


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """``(mean(a) - mean(b), lo, hi)``: paired percentile-bootstrap 95 % CI over questions.

    a, b: per-question values (hits, or per-question gaps ``aff - neg``) of the same questions.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired difference needs the same questions ({a.shape} vs {b.shape})")
    lo, hi = bootstrap_ci(a, n_boot, seed, paired_with=b)
    return (float(a.mean() - b.mean()) if a.size else float("nan"), lo, hi)


def compare_hits(hits: dict, ref: dict, n_boot: int, seed: int) -> dict[str, float] | None:
    """One method's ``mcq_hits`` against a reference's, question by question.

    Returns ``negated_diff`` (negated accuracy minus the reference's) and ``gap_diff`` (gap minus
    the reference's; negative = the smaller gap), each with ``_lo``/``_hi`` from
    :func:`paired_difference`, and ``n_mcq``; None when the two were scored on other questions.
    """
    if not hits or not ref or hits["questions"] != ref["questions"]:
        return None
    neg, aff = decode_hits(hits["negated"]), decode_hits(hits["affirmative"])
    r_neg, r_aff = decode_hits(ref["negated"]), decode_hits(ref["affirmative"])
    nd = paired_difference(neg, r_neg, n_boot, seed)
    gd = paired_difference(aff.astype(float) - neg, r_aff.astype(float) - r_neg, n_boot, seed)
    return {"negated_diff": nd[0], "negated_diff_lo": nd[1], "negated_diff_hi": nd[2],
            "gap_diff": gd[0], "gap_diff_lo": gd[1], "gap_diff_hi": gd[2], "n_mcq": int(neg.size)}


def grouped_accuracy(hits: np.ndarray, keys: Iterable) -> dict[str, float]:
    """Accuracy per key (keys may be scalars or, per row, an iterable of keys)."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for hit, key in zip(np.asarray(hits, dtype=bool), keys):
        ks = key if isinstance(key, (list, tuple, set, np.ndarray)) else [key]
        for k in ks:
            sums[str(k)][0] += int(hit)
            sums[str(k)][1] += 1
    return {k: v[0] / v[1] for k, v in sorted(sums.items())}


def claim_accuracy(
    caption_scores: np.ndarray, foil_scores: np.ndarray, group: Sequence, foil_types: Sequence[str]
) -> dict:
    """Contextual-claim metrics over (caption, foil) pairs.

    caption_scores[i] / foil_scores[i]: similarity of the image with the true caption / the foil of
    pair ``i``; ``group[i]`` identifies the caption group (image + true caption); ``foil_types[i]``
    its foil type. Returns claim_acc, claim_pair_acc, claim_acc_by_foil_type, n_claim_groups,
    n_claim_pairs.
    """
    cap = np.asarray(caption_scores, dtype=float)
    foil = np.asarray(foil_scores, dtype=float)
    win = cap > foil
    by_group: dict = defaultdict(list)
    by_type_group: dict = defaultdict(list)
    for w, g, t in zip(win, group, foil_types):
        by_group[g].append(bool(w))
        by_type_group[(t, g)].append(bool(w))
    type_hits: dict[str, list[bool]] = defaultdict(list)
    for (t, _g), ws in by_type_group.items():
        type_hits[str(t)].append(all(ws))
    group_hits = [all(ws) for ws in by_group.values()]
    return {
        "claim_acc": accuracy(np.array(group_hits, dtype=bool)),
        "claim_pair_acc": accuracy(win),
        "claim_acc_by_foil_type": {t: accuracy(np.array(h)) for t, h in sorted(type_hits.items())},
        "n_claim_groups": len(group_hits),
        "n_claim_pairs": int(win.size),
    }


def recall_at_k(sim: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                positives: np.ndarray | None = None) -> dict[int, float]:
    """R@k for a square similarity matrix whose diagonal holds the true matches.

    ``positives`` [N,N] bool optionally marks further correct items per query (e.g. another study
    with the identical report text); the diagonal is always positive. The rank of a query is the
    number of non-positive items scoring ``>=`` its best positive (ties count against the model).
    """
    sim = np.asarray(sim, dtype=float)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"retrieval needs a square similarity matrix, got {sim.shape}")
    n = sim.shape[0]
    if n == 0:
        return {k: float("nan") for k in ks}
    pos = np.eye(n, dtype=bool) if positives is None else (np.asarray(positives, dtype=bool) | np.eye(n, dtype=bool))
    best = np.where(pos, sim, -np.inf).max(axis=1, keepdims=True)
    rank = ((sim >= best) & ~pos).sum(axis=1)
    return {k: float((rank < k).mean()) for k in ks}


def retrieval_metrics(sim_i2t: np.ndarray, positives: np.ndarray | None = None) -> dict[str, float]:
    """i2t and t2i R@1/5/10 from an [N images, N texts] matrix (diagonal = true pairs)."""
    sim = np.asarray(sim_i2t, dtype=float)
    i2t = recall_at_k(sim, positives=positives)
    t2i = recall_at_k(sim.T, positives=None if positives is None else np.asarray(positives).T)
    out = {f"i2t_r{k}": v for k, v in i2t.items()}
    out.update({f"t2i_r{k}": v for k, v in t2i.items()})
    return out


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC of scores for labels in {0, 1}; None when only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=int)
    if labels.size == 0 or len(set(labels.tolist())) < 2:
        return None
    return float(roc_auc_score(labels, np.asarray(scores, dtype=float)))


def n_negated_in_option(option_labels: Sequence[int]) -> int:
    """How many conditions an option states as absent (label 0 -> a negated phrase)."""
    return int(sum(1 for v in option_labels if v == 0))
