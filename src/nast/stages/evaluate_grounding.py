"""``nast evaluate-grounding``: read the inputs, run the core
(:mod:`nast.grounding.evaluate_grounding`, whose docstring describes the outputs), write them, log
to MLflow. The rule ``evaluate_grounding`` (workflow/rules/evaluate_grounding.smk) and the DVC stage
of the same name run this module."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from nast import io
from nast.errors import StageError
from nast.grounding.evaluate_grounding import TABLE_COLUMNS, evaluate
from nast.models.image_cache import ARGUMENT_HELP

log = logging.getLogger(__name__)


#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("grounding", "evaluate", "model", "data.allow_empty")



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, help="method name recorded in the JSON")
    parser.add_argument("--model-dir", required=True, help="folder written by nast train (models/M)")
    parser.add_argument("--base", default=None,
                        help="the base model: a checkpoint or a folder holding it (the DAG's declared input; "
                             "default: params model.checkpoint)")
    parser.add_argument("--embeddings", default=None,
                        help="the base model's image embeddings (nast embed-images --grounding): the pairs' "
                             "similarity scores read them when the model's vision tower is the base's "
                             "(the attribution maps need pixels)")
    parser.add_argument("--image-cache", default=None, help=ARGUMENT_HELP)
    parser.add_argument("--grounding", required=True, help="grounding.parquet (nast grounding-data)")
    parser.add_argument("--cf-dir", required=True, help="folder of its counterfactual/control PNGs")
    parser.add_argument("--out", required=True, help="output JSON, e.g. reports/grounding/M.json")
    parser.add_argument("--maps", required=True, help="output .npz of the example maps")



def write_npz(arrays: dict[str, np.ndarray], path: Path) -> None:
    """An ``.npz`` (readable by ``np.load``) with fixed zip timestamps: same arrays, same bytes
    (``np.savez`` stamps the current time); written atomically."""
    import io as _io
    import zipfile

    with io.atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in sorted(arrays):
            buf = _io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buf.getvalue())



def run(args: argparse.Namespace, params: dict) -> int:
    import torch

    from nast import tracking
    from nast.models import base_params, load_model
    from nast.models.adapters import load_trained

    cfg = params.grounding
    table = io.read_table(args.grounding, "grounding table", params)
    io.require_columns(table, TABLE_COLUMNS, args.grounding)
    if not Path(args.model_dir).is_dir():
        raise StageError(f"model folder not found: {args.model_dir}")
    if not Path(args.cf_dir).is_dir():
        raise StageError(f"counterfactual folder not found: {args.cf_dir}")
    params = params.replace(model=base_params(params.model, args.base))
    torch.manual_seed(int(params.evaluate.seed))
    torch.set_num_threads(int(cfg.num_threads))
    vl = load_model(params.model, device=params.model.device)
    load_trained(vl, args.model_dir)
    vl.model.eval()
    for p in vl.model.parameters():  # attributions need input gradients only
        p.requires_grad_(False)
    from nast.models.embeddings import store_for_model
    from nast.models.image_cache import open_cache

    store = store_for_model(args.embeddings, params.model, args.model_dir)
    vl.use_image_cache(open_cache(args.image_cache))
    result, examples = evaluate(vl, table, cfg, params.evaluate, store)
    result = {"method": args.method, **result}
    io.write_json(io.json_safe(result), args.out)
    write_npz(examples, Path(args.maps))
    log.info("%s: %d pairs: cf_pos %.3f cf_neg %.3f ctrl_pos %.3f ctrl_neg %.3f loc_iou %.3f pointing %.3f "
             "kept %d -> %s",
             args.method, result["n_pairs"], result["cf_pos_acc"], result["cf_neg_acc"], result["ctrl_pos_acc"],
             result["ctrl_neg_acc"], result["loc_iou"], result["pointing_game"], result["n_kept"], args.out)
    flat = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name, e in result["attribution"].items():
        for k in ("iou", "f1"):
            if isinstance(e.get(k), (int, float)):
                flat[f"attr_{name}_{k}"] = e[k]
    tracking.log_method(params, args.method, stage="evaluate_grounding", inputs=[args.grounding],
                        final_metrics={f"grounding_{k}" if not k.startswith(("cf_", "ctrl_", "loc_", "n_", "pointing"))
                                       else k: v for k, v in flat.items()},
                        artifacts=[args.out], artifact_dir="grounding")
    return 0
