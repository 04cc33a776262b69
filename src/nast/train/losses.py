"""Losses of the NAST trainer (tensors in, scalar tensor out; all embeddings L2-normalised).

* :func:`clip_loss` - the single-caption CLIP contrastive loss: image ``i`` against the true
  contextual caption ``i`` within the batch, symmetric cross-entropy (i->t and t->i). Off-diagonal
  pairs that are *not* negatives (the same image, or the very same caption text for another
  image, e.g. "No pleural effusion.") are masked out, so duplicates are never pushed apart.
* :func:`hard_negative_clip_loss` - NegCLIP-style: the polarity-flipped captions of the batch are
  appended as extra text columns of the image->text direction (extra negatives for every image).
* :func:`claim_loss` - the claim-caption loss: for each image, cross-entropy of its true caption
  against its minimal-edit foils (``[s(caption), s(foil_1..F)]``, target 0); padded foil slots are
  masked; rows without foils are left out of the mean.
* :func:`claim_image_loss` - the image direction of the claim loss (``train.lambda_image``): each
  true claim caption against the batch images whose cohort label of the claim's finding is the
  opposite one (cross-entropy over {own image} + those images, target = own image). The text is
  the same in every logit of a row, so a text-only preference ("the negated caption is usually
  true", "a severity word marks the true one") cannot lower this loss; only the image can.
* :func:`dpo_margins` / :func:`dpo_loss` - CheXalign's length-regularised DPO on (image, chosen,
  rejected) pairs against a frozen reference (methods ``dpo`` / ``nast-dpo``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG_INF = -1e4  # finite "minus infinity": keeps softmax gradients NaN-free in fp32


def clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor | float,
              not_negative: torch.Tensor | None = None) -> torch.Tensor:
    """img [B,D], txt [B,D]; not_negative [B,B] bool marks off-diagonal pairs to ignore."""
    logits = scale * img @ txt.T
    if not_negative is not None:
        mask = not_negative & ~torch.eye(len(img), dtype=torch.bool, device=img.device)
        logits = logits.masked_fill(mask, NEG_INF)
    target = torch.arange(len(img), device=img.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def hard_negative_clip_loss(img: torch.Tensor, txt: torch.Tensor, neg: torch.Tensor,
                            scale: torch.Tensor | float, not_negative: torch.Tensor | None = None,
                            neg_not_negative: torch.Tensor | None = None) -> torch.Tensor:
    """Like :func:`clip_loss`; neg [M,D] are extra negatives for the image->text direction.

    neg_not_negative [B,M] bool masks a negative whose text equals image i's own caption.
    """
    if neg.numel() == 0:
        return clip_loss(img, txt, scale, not_negative)
    b = len(img)
    logits = scale * img @ txt.T
    if not_negative is not None:
        mask = not_negative & ~torch.eye(b, dtype=torch.bool, device=img.device)
        logits = logits.masked_fill(mask, NEG_INF)
    extra = scale * img @ neg.T
    if neg_not_negative is not None:
        extra = extra.masked_fill(neg_not_negative, NEG_INF)
    target = torch.arange(b, device=img.device)
    i2t = F.cross_entropy(torch.cat([logits, extra], dim=1), target)
    t2i = F.cross_entropy(logits.T, target)
    return 0.5 * (i2t + t2i)


def claim_loss(img: torch.Tensor, cap: torch.Tensor, foils: torch.Tensor, foil_mask: torch.Tensor,
               scale: torch.Tensor | float) -> torch.Tensor:
    """img [B,D], cap [B,D], foils [B,F,D], foil_mask [B,F] bool (True = real foil)."""
    pos = (img * cap).sum(-1, keepdim=True)  # [B,1]
    neg = torch.einsum("bd,bfd->bf", img, foils)  # [B,F]
    logits = torch.cat([scale * pos, (scale * neg).masked_fill(~foil_mask, NEG_INF)], dim=1)
    has = foil_mask.any(dim=1)
    if not bool(has.any()):
        return img.new_zeros(())
    target = torch.zeros(int(has.sum()), dtype=torch.long, device=img.device)
    return F.cross_entropy(logits[has], target)


def claim_image_loss(cap: torch.Tensor, img: torch.Tensor, opposite: torch.Tensor,
                     scale: torch.Tensor | float) -> torch.Tensor:
    """cap [B,D] true claim captions, img [B,D] their images; opposite [B,B] bool: image j
    contradicts caption i (its label of caption i's finding is the other of positive/negative).
    Rows without any contradicting image are left out of the mean (0 when none has one)."""
    b = len(cap)
    keep = opposite & ~torch.eye(b, dtype=torch.bool, device=cap.device)
    has = keep.any(dim=1)
    if not bool(has.any()):
        return cap.new_zeros(())
    logits = (scale * cap @ img.T).masked_fill(~(keep | torch.eye(b, dtype=torch.bool, device=cap.device)), NEG_INF)
    target = torch.arange(b, device=cap.device)
    return F.cross_entropy(logits[has], target[has])


def grounding_loss(img: torch.Tensor, cf: torch.Tensor, ctrl: torch.Tensor, has_ctrl: torch.Tensor,
                   pos: torch.Tensor, neg: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """img/cf/ctrl [P,D] image embeddings (I, Ĩ, C), has_ctrl [P] bool, pos/neg [P,D] the "X" and
    "no X" text embeddings of each pair. Mean over pairs of
    ``softplus(-scale (s(I,X) - s(Ĩ,X))) + softplus(-scale (s(Ĩ,noX) - s(I,noX)))`` plus the mean
    over the pairs with a control of ``(scale (s(I,X) - s(C,X)))^2 + (scale (s(I,noX) - s(C,noX)))^2``."""
    d_pos = scale * ((img - cf) * pos).sum(-1)
    d_neg = scale * ((cf - img) * neg).sum(-1)
    loss = (F.softplus(-d_pos) + F.softplus(-d_neg)).mean()
    if bool(has_ctrl.any()):
        c_pos = scale * ((img - ctrl) * pos).sum(-1)[has_ctrl]
        c_neg = scale * ((img - ctrl) * neg).sum(-1)[has_ctrl]
        loss = loss + (c_pos.pow(2) + c_neg.pow(2)).mean()
    return loss


def dpo_margins(pol_w: torch.Tensor, pol_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor,
                len_w: torch.Tensor, len_l: torch.Tensor, beta: float, alpha: float) -> torch.Tensor:
    """Per pair ``z = beta * Delta + alpha * (|y_w| - |y_l|)`` with
    ``Delta = (s_theta(w) - s_ref(w)) - (s_theta(l) - s_ref(l))``; all arguments [P].

    ``s`` is the image-text similarity in the claim loss's units (``scale * cos``, scale =
    ``exp(logit_scale)`` clamped at 100); ``w`` / ``l`` the chosen / rejected (image, caption);
    ``|y|`` caption lengths in tokens of the model's tokenizer.

    **The length term, from CheXalign to caption tokens.** CheXalign (length-regularised DPO after
    Park et al. 2024) adds ``+ alpha (|y_w| - |y_l|)`` inside the sigmoid, ``|y|`` = the number of
    *generated* report tokens, the same tokens whose log-probabilities make up the policy's log
    ratio. A longer chosen response thus gets a free margin: its loss (and gradient) is smaller, so
    the policy gains less from making long answers likelier and verbosity is not rewarded. Here
    ``y`` is a caption scored by a contrastive encoder, so ``|y|`` counts the caption's tokens
    (``VLModel.token_lengths``; the start/end tokens cancel in the difference) and the sign is
    kept: a chosen caption longer than its foil (typically "no X" against "X") lowers the loss, a
    shorter one raises it. This counters the length shortcut the MCQ length bias measures (the
    longer, negated option wins), since the pairs whose winner is the longer caption push the
    model least. Unlike a log-likelihood, ``s`` does not grow with length, so ``alpha`` is a
    per-token margin in the same units as ``beta * Delta``. For image-side pairs (the same caption
    for the factual and the counterfactual image) ``|y_w| = |y_l|`` and the term is 0.
    """
    delta = (pol_w - ref_w) - (pol_l - ref_l)
    return beta * delta + alpha * (len_w - len_l).to(delta.dtype)


def dpo_loss(pol_w: torch.Tensor, pol_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor,
             len_w: torch.Tensor, len_l: torch.Tensor, beta: float, alpha: float) -> torch.Tensor:
    """Mean over pairs of ``-log sigmoid(z)`` (:func:`dpo_margins`); 0 without pairs."""
    if pol_w.numel() == 0:
        return pol_w.new_zeros(())
    return -F.logsigmoid(dpo_margins(pol_w, pol_l, ref_w, ref_l, len_w, len_l, beta, alpha)).mean()
