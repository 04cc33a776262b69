"""NAST and its baselines as parameter sets of one trainer.

=============== ======== =============================== ======= ============ ===================
method          trains   what is trainable               beta    loss          notes
=============== ======== =============================== ======= ============ ===================
zero_shot       no       nothing                         -       -             base model as is
lora_uniform    yes      LoRA on all text blocks         0       CLIP + λ claim uniform LoRA
nast            yes      LoRA on all text blocks         β       CLIP + λ claim lr (or grads) × α_l^β
nast-beta{B}    yes      as nast                         B       CLIP + λ claim the β sweep
full_ft         yes      the whole text tower (no LoRA)  0       CLIP + λ claim lr = train.full_ft_lr
hard_negative   yes      LoRA on all text blocks         0       NegCLIP       polarity foils as extra
                                                                               negatives, λ = 0
topk_layers     yes      LoRA on the top-k CTE blocks    0       CLIP + λ claim k = train.topk_layers
grounded        yes      LoRA on all text blocks         0       + λ_g ground  counterfactual pairs
nast-grounded   yes      LoRA on all text blocks         β       + λ_g ground  nast + the same term
dpo             yes      LoRA on all text blocks         0       CLIP + λ DPO  preference pairs vs.
                                                                               the frozen base
nast-dpo        yes      LoRA on all text blocks         β       CLIP + λ DPO  nast + the same term
=============== ======== =============================== ======= ============ ===================

The vision tower is frozen unless ``train.train_vision`` says otherwise: ``true`` trains it (all
its parameters, at ``train.vision_lr``) in every trained method, a list of method names
in those methods only (``make demo-full``: ``[grounded, nast-grounded]``, whose grounding loss
can only move the image side through it); the beta sweep counts as ``nast``.

β = 0 gives α_l^0 = 1 for every layer (including α_l = 0), i.e. exactly uniform LoRA.
``train.lambda_image`` (default 0) adds the image direction of the claim loss
(:func:`nast.train.losses.claim_image_loss`) to every method that trains the claim loss.
``grounded`` / ``nast-grounded`` add ``train.lambda_ground`` x the counterfactual grounding loss
(:func:`nast.train.losses.grounding_loss`) over the train split of the grounding table.
``dpo`` / ``nast-dpo`` replace the claim loss by ``train.lambda_claim`` x the length-regularised
DPO loss (:func:`nast.train.losses.dpo_loss`, ``train.dpo_beta``, ``train.dpo_alpha``) on the
preference pairs of :mod:`nast.train.preference` (true claim or composite caption over its
polarity / laterality / severity foil; with ``--grounding`` also factual over counterfactual image
for "X" and the reverse for "no X"), scored against the frozen base model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from nast.config import params_file as _pf
from nast.errors import StageError

METHODS = ("zero_shot", "lora_uniform", "nast", "full_ft", "hard_negative", "topk_layers", "grounded",
           "nast-grounded", "dpo", "nast-dpo")
#: the methods that train on the grounding table's counterfactual pairs
GROUNDED = ("grounded", "nast-grounded")
#: the preference (DPO) methods; they read the grounding table's pairs too, where there is one
DPO = ("dpo", "nast-dpo")


@dataclass(frozen=True)
class MethodSpec:
    name: str                 # recorded method name (e.g. "nast-beta0.5")
    base: str                 # one of METHODS
    train: bool = True
    lora: bool = True
    full_ft: bool = False
    beta: float = 0.0
    hard_negative: bool = False
    topk: int | None = None
    lambda_claim: float = 1.0
    lambda_image: float = 0.0  # image direction of the claim loss (train.lambda_image)
    lambda_ground: float = 0.0  # counterfactual grounding loss (train.lambda_ground; grounded methods only)
    lambda_dpo: float = 0.0  # preference loss weight (train.lambda_claim; dpo methods only, claim loss off)
    dpo_beta: float = 0.0  # train.dpo_beta
    dpo_alpha: float = 0.0  # train.dpo_alpha
    lr: float = 5e-4
    vision: bool = False  # the vision tower trains too (train.train_vision names this method, or is true)
    vision_lr: float = 0.0  # its learning rate (train.vision_lr) where it trains

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trains_vision(method: str, train_params: dict[str, Any]) -> bool:
    """Does ``method`` (a METHODS name; the beta sweep is ``nast``) train the vision tower?
    ``train.train_vision``: true = every trained method, false = none, a list = the methods named."""
    tv = train_params["train_vision"]
    if method == "zero_shot":
        return False
    if isinstance(tv, bool):
        return tv
    return method in tv


def resolve_method(method: str, params: dict[str, Any], beta: str | float | None = None) -> MethodSpec:
    """The trainer settings of a method. ``beta`` (the --beta flag, as typed) only applies to nast."""
    spec = _resolve(method, params, beta)
    if not (spec.train and trains_vision(method, params["train"])):
        return spec
    return replace(spec, vision=True, vision_lr=float(params["train"]["vision_lr"]))


def _resolve(method: str, params: dict[str, Any], beta: str | float | None) -> MethodSpec:
    if method not in METHODS:
        raise StageError(f"{_pf()} / --method: unknown method {method!r} (choose from {', '.join(METHODS)})")
    tp = params["train"]
    lam = float(tp["lambda_claim"])
    lam_img = float(tp["lambda_image"])
    lr = float(tp["lr"])
    if beta is not None and method != "nast":
        raise StageError(f"--beta applies to --method nast only (got --method {method})")
    if method == "zero_shot":
        return MethodSpec(name=method, base=method, train=False, lora=False, lambda_claim=0.0, lr=0.0)
    if method == "lora_uniform":
        return MethodSpec(name=method, base=method, beta=0.0, lambda_claim=lam, lambda_image=lam_img, lr=lr)
    if method == "nast":
        if beta is None:
            return MethodSpec(name="nast", base=method, beta=float(params["nast"]["beta"]), lambda_claim=lam,
                              lambda_image=lam_img, lr=lr)
        try:
            b = float(beta)
        except ValueError:
            raise StageError(f"--beta: not a number: {beta!r}") from None
        if b < 0:
            raise StageError(f"--beta: must be >= 0, got {beta}")
        return MethodSpec(name=f"nast-beta{beta}", base=method, beta=b, lambda_claim=lam, lambda_image=lam_img, lr=lr)
    if method == "grounded":
        return MethodSpec(name=method, base=method, beta=0.0, lambda_claim=lam, lambda_image=lam_img,
                          lambda_ground=float(tp["lambda_ground"]), lr=lr)
    if method == "nast-grounded":
        return MethodSpec(name=method, base=method, beta=float(params["nast"]["beta"]), lambda_claim=lam,
                          lambda_image=lam_img, lambda_ground=float(tp["lambda_ground"]), lr=lr)
    if method in DPO:
        return MethodSpec(name=method, base=method, beta=0.0 if method == "dpo" else float(params["nast"]["beta"]),
                          lambda_claim=0.0, lambda_image=lam_img, lambda_dpo=lam, dpo_beta=float(tp["dpo_beta"]),
                          dpo_alpha=float(tp["dpo_alpha"]), lr=lr)
    if method == "full_ft":
        return MethodSpec(name=method, base=method, lora=False, full_ft=True, lambda_claim=lam,
                          lambda_image=lam_img, lr=float(tp["full_ft_lr"]))
    if method == "hard_negative":
        return MethodSpec(name=method, base=method, hard_negative=True, lambda_claim=0.0, lr=lr)
    # topk_layers
    return MethodSpec(name=method, base=method, topk=int(tp["topk_layers"]), lambda_claim=lam, lambda_image=lam_img,
                      lr=lr)
