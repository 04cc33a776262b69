"""One model interface over three CLIP families: ``load_model(model_params, device) -> VLModel``.

``model_params`` is the ``model:`` section of params.yaml (``family``, ``name``, ``checkpoint``,
``device``). Weights, configs and tokenizers come from local paths only; a missing one raises
:class:`nast.errors.StageError` naming the file. See :mod:`nast.models.families` for the layouts
and :mod:`nast.models.base` for grayscale preprocessing and the text-layer decomposition used by
causal tracing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nast.config import params_file as _pf
from nast.config import with_values
from nast.errors import StageError
from nast.models.base import VLModel, resolve_device

FAMILIES = ("open_clip", "open_clip_hf", "hf_clip")

__all__ = ["FAMILIES", "VLModel", "base_params", "load_model", "resolve_device"]


def base_params(model_params: dict[str, Any], base: str | None) -> dict[str, Any]:
    """``model_params`` with the checkpoint a stage's ``--base`` names (the DAG's declared input).

    ``base`` is a checkpoint file or a folder holding one (the demo's ``models/base``: the file
    named like ``model.checkpoint``'s, else ``checkpoint.pt``); None keeps ``model.checkpoint``.
    A missing path is a :class:`StageError` naming it.
    """
    if not base:
        return model_params
    path = Path(base)
    if path.is_dir():
        named = Path(str(model_params["checkpoint"] or "checkpoint.pt")).name
        path = path / named if (path / named).is_file() else path / "checkpoint.pt"
    if not path.is_file():
        raise StageError(f"base model not found: {path} (--base {base})")
    return with_values(model_params, checkpoint=str(path))


def load_model(model_params: dict[str, Any], device: str | torch.device | None = None) -> VLModel:
    """Build the model of ``model_params['family']`` from local files, in eval mode on ``device``.

    ``device`` defaults to ``model_params['device']`` (``auto`` = cuda when available).
    """
    from nast.models.families import LOADERS

    family = model_params["family"]
    if family not in LOADERS:
        raise StageError(f"{_pf()}: model.family: unknown family {family!r} (choose from {', '.join(FAMILIES)})")
    for key in ("name", "checkpoint"):
        if not model_params[key]:
            raise StageError(f"{_pf()}: model.{key} is missing")
    dev = resolve_device(device if device is not None else model_params["device"])
    return LOADERS[family](model_params, dev)
