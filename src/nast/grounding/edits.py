"""Image edits of the grounding benchmark (pure numpy over 8-bit grayscale arrays ``[H, W]``).

* :func:`inpaint_box` fills a box from its surroundings with scikit-image's biharmonic
  inpainting (``skimage.restoration.inpaint_biharmonic``), solved on a crop around the box (the
  box plus ``margin`` pixels) so a full-size radiograph costs what its box costs.
* :func:`paste_box` puts the box of another image (the demo's counterfactual twin) into the source.
* :func:`control_box` places a box of the same size inside the lung fields, off every annotated box.

Every edit returns a new array equal to the source outside the edited box(es): the counterfactual
changes only the region that the box says holds the finding, and nothing else (tests assert it).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (pixels, x1/y1 exclusive)


def _check(img: np.ndarray) -> None:
    if img.ndim != 2 or img.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit grayscale array [H, W], got {img.dtype} {img.shape}")


def inpaint_box(img: np.ndarray, boxes: Box | Sequence[Box], margin: int = 8, max_side: int = 128) -> np.ndarray:
    """``img`` with every box filled from its surroundings (biharmonic inpainting).

    The solve runs on the box plus ``margin`` pixels around it. A box longer than ``max_side``
    pixels is solved on that crop shrunk by the smallest integer factor that brings it to
    ``max_side`` (the margin grows by the same factor) and the fill is enlarged back (bilinear):
    the biharmonic fill is smooth, and a full-size radiograph's 1000-pixel box would otherwise be a
    million-unknown linear system. Pixels outside the boxes are never touched."""
    from skimage.restoration import inpaint_biharmonic
    from skimage.transform import resize

    _check(img)
    boxes = [boxes] if isinstance(boxes[0], (int, np.integer)) else list(boxes)
    out = img.copy()
    h, w = img.shape
    for x0, y0, x1, y1 in boxes:
        f = max(1, -(-max(x1 - x0, y1 - y0) // int(max_side)))
        m = margin * f
        cx0, cy0 = max(0, x0 - m), max(0, y0 - m)
        cx1, cy1 = min(w, x1 + m), min(h, y1 + m)
        crop = out[cy0:cy1, cx0:cx1].astype(np.float64) / 255.0
        mask = np.zeros(crop.shape, dtype=bool)
        mask[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0] = True
        if mask.all():  # the box is the whole image: nothing to inpaint from
            filled = np.full(crop.shape, float(crop[~mask].mean()) if (~mask).any() else float(crop.mean()))
        elif f == 1:
            filled = inpaint_biharmonic(crop, mask)
        else:
            small_shape = (-(-crop.shape[0] // f), -(-crop.shape[1] // f))
            small = resize(crop, small_shape, order=1, anti_aliasing=True, mode="edge")
            small_mask = resize(mask.astype(float), small_shape, order=0, anti_aliasing=False) > 0
            filled = resize(inpaint_biharmonic(small, small_mask), crop.shape, order=1, mode="edge")
        patch = np.clip(np.rint(filled * 255.0), 0, 255).astype(np.uint8)
        out[y0:y1, x0:x1] = patch[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
    return out


def paste_box(img: np.ndarray, other: np.ndarray, boxes: Box | Sequence[Box]) -> np.ndarray:
    """``img`` with the pixels of ``other`` inside every box (same-sized arrays)."""
    _check(img)
    _check(other)
    if img.shape != other.shape:
        raise ValueError(f"image sizes differ: {img.shape} vs {other.shape}")
    boxes = [boxes] if isinstance(boxes[0], (int, np.integer)) else list(boxes)
    out = img.copy()
    for x0, y0, x1, y1 in boxes:
        out[y0:y1, x0:x1] = other[y0:y1, x0:x1]
    return out


def overlaps(a: Box, b: Box) -> bool:
    """True when two boxes share at least one pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def row_seed(*parts) -> int:
    """A stable 64-bit seed from strings/ints (same on every machine and Python hash seed)."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def lung_field_rects(size: tuple[int, int], fields: Sequence[Sequence[float]]) -> list[Box]:
    """Lung-field rectangles in pixels from fractions ``[x0, y0, x1, y1]`` of width and height."""
    w, h = size
    return [(int(round(f[0] * w)), int(round(f[1] * h)), int(round(f[2] * w)), int(round(f[3] * h))) for f in fields]


def control_box(size: tuple[int, int], box: Box, avoid: Sequence[Box], fields: Sequence[Sequence[float]],
                seed: int, gap: int = 0) -> tuple[Box | None, str | None]:
    """A box of ``box``'s size for the background control, or (None, reason).

    Candidates lie on a grid (step = a quarter of the box's shorter side, at least 1 px) with the
    whole box inside the image, its centre inside a lung field (``fields``, fractions of the
    image) and at least ``gap`` pixels from every box of ``avoid`` (every annotated box of the
    image, the finding's own included; with ``gap`` = the inpainting margin, the control's
    inpainting never reads a finding's pixels). One is drawn with ``seed``: the same row gets the
    same control."""
    w, h = size
    bw, bh = box[2] - box[0], box[3] - box[1]
    if bw > w or bh > h:
        return None, "box larger than the image"
    step = max(1, min(bw, bh) // 4)
    rects = lung_field_rects(size, fields)
    xs = np.arange(0, w - bw + 1, step)
    ys = np.arange(0, h - bh + 1, step)
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    cx, cy = gx + bw / 2.0, gy + bh / 2.0
    ok = np.zeros(gx.shape, dtype=bool)
    for fx0, fy0, fx1, fy1 in rects:
        ok |= (cx >= fx0) & (cx < fx1) & (cy >= fy0) & (cy < fy1)
    for ax0, ay0, ax1, ay1 in avoid:
        ax0, ay0, ax1, ay1 = ax0 - gap, ay0 - gap, ax1 + gap, ay1 + gap
        ok &= ~((gx < ax1) & (ax0 < gx + bw) & (gy < ay1) & (ay0 < gy + bh))
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return None, "no lung-field position of this size off the annotated boxes"
    k = int(np.random.default_rng(seed).integers(idx.size))
    x0, y0 = int(gx[idx[k]]), int(gy[idx[k]])
    return (x0, y0, x0 + bw, y0 + bh), None
