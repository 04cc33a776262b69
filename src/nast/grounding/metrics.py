"""Counterfactual grounding metrics from similarity scores (pure numpy).

For a pair (I, Ĩ) of finding X (Ĩ = I with X removed) and its background control C (the same kind
of edit elsewhere), with ``s`` the cosine similarity of image and text:

* ``cf_pos_acc``  = P[s(I, "X")     > s(Ĩ, "X")]      the finding's name fits the image that has it
* ``cf_neg_acc``  = P[s(Ĩ, "no X")  > s(I, "no X")]   its negation fits the image without it
* ``ctrl_pos_acc`` = P[s(I, "X")    > s(C, "X")]      the same comparisons on the control:
* ``ctrl_neg_acc`` = P[s(C, "no X") > s(I, "no X")]   an edit that removes nothing

* ``cf_pref_acc`` = P[s(I, "X") - s(I, "no X") > s(Ĩ, "X") - s(Ĩ, "no X")]: the preference for "X"
  over "no X" falls when X is removed (``ctrl_pref_acc``: the same against the control). An edit
  that moves the image's similarity to *every* short finding text alike (on the demo's base model,
  removing a finding raises s(·, "X") and s(·, "no X") together) pushes ``cf_pos_acc`` down and
  ``cf_neg_acc`` up by the same amount; the preference cancels that common shift.

A tie counts one half, so a model that ignores the image (s(I, ·) = s(Ĩ, ·) exactly) scores 0.5
on all four by construction, whatever its text prior: these are the figures the caption text cannot
win. A grounded model scores well above 0.5 on the ``cf_`` pair and near 0.5 on the controls.

``verified`` (MedFocus's filter) keeps a pair when the model prefers "X" over "no X" on I, the
preference flips on Ĩ, and it does not flip on C.
"""

from __future__ import annotations

import numpy as np


def compare(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 where a > b, 0.5 where a == b, 0 where a < b (NaN where either is NaN)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))
    return np.where(np.isnan(a) | np.isnan(b), np.nan, out)


def pair_hits(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The six per-pair hit arrays from the six score arrays ``{img,cf,ctrl}_{pos,neg}``
    (control scores NaN where a pair has no control)."""
    return {
        "cf_pos": compare(s["img_pos"], s["cf_pos"]),
        "cf_neg": compare(s["cf_neg"], s["img_neg"]),
        "ctrl_pos": compare(s["img_pos"], s["ctrl_pos"]),
        "ctrl_neg": compare(s["ctrl_neg"], s["img_neg"]),
        "cf_pref": compare(s["img_pos"] - s["img_neg"], s["cf_pos"] - s["cf_neg"]),
        "ctrl_pref": compare(s["img_pos"] - s["img_neg"], s["ctrl_pos"] - s["ctrl_neg"]),
    }


def verified(s: dict[str, np.ndarray]) -> np.ndarray:
    """Pairs whose counterfactual proves the region matters and whose control does not move."""
    with np.errstate(invalid="ignore"):
        prefers = s["img_pos"] > s["img_neg"]
        flips = s["cf_pos"] < s["cf_neg"]
        stays = s["ctrl_pos"] > s["ctrl_neg"]  # False where there is no control (NaN)
    return prefers & flips & stays


def encode_half_hits(hits: np.ndarray) -> str:
    """Per-pair hits (0, 0.5, 1; NaN = no control) as a string of 0 / h / 1 / - (order kept)."""
    table = {0.0: "0", 0.5: "h", 1.0: "1"}
    return "".join("-" if np.isnan(h) else table[float(h)] for h in np.asarray(hits, dtype=float))


def decode_half_hits(text: str) -> np.ndarray:
    table = {"0": 0.0, "h": 0.5, "1": 1.0, "-": np.nan}
    if set(text) - set(table):
        raise ValueError("pair hits must be a string of 0, h, 1 and -")
    return np.array([table[c] for c in text], dtype=float)
