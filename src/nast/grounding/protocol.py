"""Relevance map -> boxes -> overlap with the ground-truth box (pure numpy + scikit-image).

The box protocol is MedFocus's: min-max scale the map, keep the pixels at or above its 0.9
quantile (and above the minimum: in a sparse map the quantile can be the minimum itself), split them
into 8-connected components (``skimage.measure.label``, connectivity 2),
drop components under 16 pixels, keep the 10 with the highest mean score (ties: larger first)
and take their bounding boxes. The prediction is the *union* of those boxes; against the
ground-truth box it gets pixel-level IoU, precision, recall and F1. The pointing game hits when
the map's maximum lies inside the ground-truth box. Everything is computed in pixels of the image
as read (maps are brought there by :func:`map_to_image`), so ``min_area`` is in image pixels.
"""

from __future__ import annotations

import math

import numpy as np

Box = tuple[int, int, int, int]


def crop_region(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """The part of a ``width x height`` image (x0, y0, x1, y1, float pixels) that the model sees
    after :func:`nast.models.base.grayscale_to_tensor`: shorter side resized to ``size``
    (torchvision's rule: the longer side becomes ``int(size * long / short)``), then a centred
    ``size x size`` crop (torchvision's offsets: ``int(round((resized - size) / 2))``)."""
    if width <= height:
        rw, rh = size, int(size * height / width)
    else:
        rw, rh = int(size * width / height), size
    left, top = int(round((rw - size) / 2.0)), int(round((rh - size) / 2.0))
    sx, sy = rw / width, rh / height
    return left / sx, top / sy, (left + size) / sx, (top + size) / sy


def map_to_image(m: np.ndarray, width: int, height: int) -> np.ndarray:
    """A ``[S, S]`` map over the model input -> ``[height, width]`` over the image as read
    (bilinear); pixels outside the model's crop get the map's minimum (no evidence there)."""
    from skimage.transform import resize

    m = np.asarray(m, dtype=np.float64)
    x0, y0, x1, y1 = crop_region(width, height, m.shape[1])
    ix0, iy0 = max(0, int(math.floor(x0 + 0.5))), max(0, int(math.floor(y0 + 0.5)))
    ix1, iy1 = min(width, int(math.floor(x1 + 0.5))), min(height, int(math.floor(y1 + 0.5)))
    out = np.full((height, width), float(m.min()) if m.size else 0.0)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0:iy1, ix0:ix1] = resize(m, (iy1 - iy0, ix1 - ix0), order=1, mode="edge", anti_aliasing=False)
    return out


def map_boxes(m: np.ndarray, quantile: float = 0.9, min_area: int = 16, top_k: int = 10) -> list[Box]:
    """Boxes of the map's strongest regions by the protocol above (empty for a constant map)."""
    from skimage.measure import label, regionprops

    m = np.asarray(m, dtype=np.float64)
    lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return []
    s = (m - lo) / (hi - lo)
    mask = (s >= np.quantile(s, quantile)) & (s > 0)  # the minimum itself is no evidence (ties of a sparse map)
    regions = [r for r in regionprops(label(mask, connectivity=2), intensity_image=s) if r.area >= min_area]
    regions.sort(key=lambda r: (-float(r.intensity_mean), -int(r.area), r.bbox))
    return [(int(r.bbox[1]), int(r.bbox[0]), int(r.bbox[3]), int(r.bbox[2])) for r in regions[:top_k]]


def union_mask(boxes: list[Box], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def overlap(pred: np.ndarray, gt: Box) -> dict[str, float]:
    """Pixel IoU / precision / recall / F1 of a predicted mask against a ground-truth box."""
    truth = union_mask([gt], pred.shape)
    inter = float(np.logical_and(pred, truth).sum())
    n_pred, n_true = float(pred.sum()), float(truth.sum())
    union = n_pred + n_true - inter
    precision = inter / n_pred if n_pred else 0.0
    recall = inter / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"iou": inter / union if union else 0.0, "precision": precision, "recall": recall, "f1": f1}


def pointing_hit(m: np.ndarray, gt: Box) -> float:
    """1.0 when the map's maximum (first in row-major order) lies inside the box, else 0.0."""
    y, x = np.unravel_index(int(np.nanargmax(m)), m.shape)
    return float(gt[0] <= x < gt[2] and gt[1] <= y < gt[3])


def score_map(m: np.ndarray, gt: Box, quantile: float = 0.9, min_area: int = 16, top_k: int = 10) -> dict[str, float]:
    """The protocol's figures for one map over the image (IoU, precision, recall, F1, pointing)."""
    boxes = map_boxes(m, quantile, min_area, top_k)
    out = overlap(union_mask(boxes, m.shape), gt)
    out["pointing"] = pointing_hit(m, gt)
    out["n_boxes"] = float(len(boxes))
    return out
