import math

import torch

from nast.train import losses


def test_claim_loss_hand_computed():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cap = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    foils = torch.tensor([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False], [True, False]])  # second slot is padding
    got = losses.claim_loss(img, cap, foils, mask, 1.0)
    want = -math.log(math.e / (math.e + 1.0))  # [1, 0] vs target 0, both rows
    assert abs(float(got) - want) < 1e-6
    none = losses.claim_loss(img, cap, foils, torch.zeros(2, 2, dtype=torch.bool), 1.0)
    assert float(none) == 0.0


def test_clip_loss_masks_duplicates():
    img = torch.eye(3)
    txt = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])  # caption 0 and 1 identical
    plain = losses.clip_loss(img, txt, 10.0)
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True
    masked = losses.clip_loss(img, txt, 10.0, mask)
    assert float(masked) < float(plain)
    # perfect alignment with masks -> only the t2i/i2t of row 1 (txt orthogonal to its image) is wrong
    assert float(masked) > 0


def test_hard_negatives_increase_loss():
    img = torch.eye(2)
    txt = torch.eye(2)
    neg = torch.tensor([[0.9, 0.1]])
    base = losses.clip_loss(img, txt, 5.0)
    hard = losses.hard_negative_clip_loss(img, txt, neg, 5.0)
    assert float(hard) > float(base)
    same = losses.hard_negative_clip_loss(img, txt, neg, 5.0, neg_not_negative=torch.ones(2, 1, dtype=torch.bool))
    assert abs(float(same) - float(base)) < 1e-4
