"""The MedFocus box protocol, overlap figures and the input-to-image geometry, on maps whose
answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nast.grounding import protocol as P
from nast.models.base import grayscale_to_tensor


def blob_map(shape, box, value=1.0, noise=0.0, seed=0):
    m = np.random.default_rng(seed).random(shape) * noise
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] += value
    return m


def test_a_map_on_the_box_recovers_it():
    box = (20, 10, 40, 30)
    m = blob_map((64, 64), box, noise=0.01)
    boxes = P.map_boxes(m, quantile=0.85, min_area=16, top_k=10)
    assert boxes == [box]  # the 0.85 quantile keeps exactly the 400 box pixels (~9.8 % of 4096)
    s = P.score_map(m, box, quantile=0.85)
    assert s["iou"] == pytest.approx(1.0) and s["f1"] == pytest.approx(1.0) and s["pointing"] == 1.0


def test_overlap_figures_by_hand():
    pred = P.union_mask([(0, 0, 10, 10)], (20, 20))           # 100 px
    o = P.overlap(pred, (5, 0, 15, 10))                       # 50 px shared, union 150
    assert o["iou"] == pytest.approx(50 / 150)
    assert o["precision"] == pytest.approx(0.5) and o["recall"] == pytest.approx(0.5)
    assert o["f1"] == pytest.approx(0.5)
    assert P.overlap(pred, (12, 12, 20, 20))["iou"] == 0.0


def test_small_components_are_dropped_and_top_k_ranks_by_mean_score():
    m = np.zeros((50, 50))
    m[5:15, 5:15] = 0.6      # 100 px, lower score
    m[30:36, 30:36] = 1.0    # 36 px, highest score
    m[45:47, 45:47] = 0.9    # 4 px: under min_area
    boxes = P.map_boxes(m, quantile=0.9, min_area=16, top_k=10)
    assert boxes == [(30, 30, 36, 36), (5, 5, 15, 15)]
    assert P.map_boxes(m, quantile=0.9, min_area=16, top_k=1) == [(30, 30, 36, 36)]
    # 8-connectivity: two diagonal touching squares are one component
    d = np.zeros((30, 30))
    d[2:8, 2:8] = 1.0
    d[8:14, 8:14] = 1.0
    assert P.map_boxes(d, quantile=0.5, min_area=16) == [(2, 2, 14, 14)]


def test_constant_map_gives_no_box_and_pointing_uses_the_maximum():
    assert P.map_boxes(np.ones((10, 10))) == []
    m = np.zeros((10, 10))
    m[7, 2] = 5.0
    assert P.pointing_hit(m, (1, 6, 4, 9)) == 1.0 and P.pointing_hit(m, (3, 6, 5, 9)) == 0.0


@pytest.mark.parametrize("w,h", [(100, 50), (40, 90), (64, 64)])
def test_crop_region_matches_the_model_preprocessing(w, h):
    """A pixel marked in the image lands where map_to_image puts the input pixel it became."""
    size = 32
    x0, y0, x1, y1 = P.crop_region(w, h, size)
    assert x1 - x0 == pytest.approx(min(w, h), abs=1.0) and y1 - y0 == pytest.approx(min(w, h), abs=1.0)
    img = np.zeros((h, w), np.uint8)
    cx, cy = int((x0 + x1) / 2) + 3, int((y0 + y1) / 2) - 2
    img[cy - 2 : cy + 3, cx - 2 : cx + 3] = 255
    t = grayscale_to_tensor(Image.fromarray(img), size, (0.0,), (1.0,), channels=1)[0].numpy()
    back = P.map_to_image(t, w, h)
    y, x = np.unravel_index(np.argmax(back), back.shape)
    assert abs(x - cx) <= 2 and abs(y - cy) <= 2
    assert back.shape == (h, w)
