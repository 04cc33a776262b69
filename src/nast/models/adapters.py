"""The trained-adapter format, shared by training and every stage that loads a trained method.

A method folder ``models/<method>/`` holds ``adapter.pt`` (the trainable parameters: LoRA weights,
or the whole text tower for full_ft, or also the vision tower with its BatchNorm statistics under
``train.train_vision``) and ``adapter_config.json`` (the adapted module names and the
LoRA settings); zero_shot writes only its manifest. :func:`load_trained` applies one to a freshly
loaded base model. Here, below both nast.train and nast.evaluate, so neither imports the other's
internals for it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nast.errors import StageError

ADAPTER_FILE = "adapter.pt"
ADAPTER_CONFIG = "adapter_config.json"


def inject_lora(model: nn.Module, targets: list[str], train_params: dict[str, Any]) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    regex = "^(?:" + "|".join(re.escape(t) for t in targets) + ")$"
    cfg = LoraConfig(r=int(train_params["lora_r"]), lora_alpha=float(train_params["lora_alpha"]),
                     lora_dropout=float(train_params["lora_dropout"]), target_modules=regex, bias="none")
    inject_adapter_in_model(cfg, model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    pin_mha_base_weights(model)
    return model


def pin_mha_base_weights(model: nn.Module) -> int:
    """Keep the frozen base weights of PEFT-adapted ``nn.MultiheadAttention`` bit-exact.

    PEFT adapts an MHA by merging the LoRA delta into ``in_proj_weight`` / ``out_proj.weight``
    before the forward and subtracting it afterwards; ``(W + d) - d`` is not ``W`` in floating
    point, so the frozen base drifts a little with every forward (and the drift is in no
    checkpoint). A forward hook restores the pristine base weights after every call, which makes
    training, resuming and evaluation exactly reproducible. Returns the number of MHAs pinned.
    """
    from peft.tuners.lora.layer import MultiheadAttention as LoraMHA

    n = 0
    for module in model.modules():
        if isinstance(module, LoraMHA) and not getattr(module, "_nast_pinned", False):
            base = module.get_base_layer()
            clean_in = base.in_proj_weight.detach().clone()
            clean_out = base.out_proj.get_base_layer().weight.detach().clone()

            def restore(mod, _inputs, _output, clean_in=clean_in, clean_out=clean_out):
                b = mod.get_base_layer()
                with torch.no_grad():
                    b.in_proj_weight.data.copy_(clean_in)
                    b.out_proj.get_base_layer().weight.data.copy_(clean_out)

            module.register_forward_hook(restore)
            module._nast_pinned = True
            n += 1
    return n


def _trained_buffers(model: nn.Module):
    """(name, buffer) of the persistent buffers of every module with a trainable parameter of its
    own: a trained BatchNorm's running statistics (``train.train_vision`` on a ResNet tower) move
    with its weights and belong with them."""
    for mname, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            for bname, buf in module.named_buffers(recurse=False):
                if buf is not None and bname not in module._non_persistent_buffers_set:
                    yield (f"{mname}.{bname}" if mname else bname), buf


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters and the buffers that train with them (:func:`_trained_buffers`)."""
    state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    state.update((n, b.detach().cpu().clone()) for n, b in _trained_buffers(model))
    return state


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` (:func:`trainable_state`: parameters and buffers) into ``model``."""
    tensors = {**dict(model.named_buffers()), **dict(model.named_parameters())}
    missing = [n for n in state if n not in tensors]
    if missing:
        raise StageError(f"{source}: parameters not in the model: {missing[:3]}")
    with torch.no_grad():
        for n, t in state.items():
            tensors[n].copy_(t.to(tensors[n].device, tensors[n].dtype))


def load_trained(vl, model_dir: str | Path, train_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply a trained method from ``model_dir`` to a freshly loaded base ``vl`` (in place).

    Returns the adapter config (``{"trained": False}`` for zero_shot).
    """
    import json

    model_dir = Path(model_dir)
    cfg_path = model_dir / ADAPTER_CONFIG
    manifest = model_dir / "manifest.json"
    if not cfg_path.is_file():
        if manifest.is_file() and not json.loads(manifest.read_text()).get("trained", True):
            return {"trained": False}
        raise StageError(f"trained model not found: {cfg_path}")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("targets"):
        inject_lora(vl.model, cfg["targets"], cfg["lora"])
    weights = model_dir / ADAPTER_FILE
    if not weights.is_file():
        raise StageError(f"adapter weights not found: {weights}")
    load_trainable_state(vl.model, torch.load(weights, map_location="cpu", weights_only=True), str(weights))
    vl.model.eval()
    return cfg
