"""``nast pretrain-base``: read the inputs, run the core (:mod:`nast.models.pretrain`, whose docstring
describes the outputs), write them, log to MLflow. The rule ``pretrain_base``
(workflow/rules/pretrain_base.smk) and the DVC stage of the same name run this module."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import polars as pl
import torch

from nast.config import params_file as _pf
from nast.errors import StageError
from nast.io import read_table, require_columns, write_json, write_text
from nast.models.pretrain import COLUMNS, Pretrainer, run_fingerprint, select_pairs

log = logging.getLogger(__name__)


#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("pretrain", "model", "data.allow_empty")



# ---------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cohort", required=True,
                        help="cohort.parquet (train split = training pairs, validate = curve)")
    parser.add_argument("--out", required=True,
                        help="output folder (checkpoint.pt, model_config.json, curve.csv, state/)")
    parser.add_argument("--stop-after-epoch", type=int, default=None, metavar="N",
                        help="stop after epoch N with the resume state saved (testing the resume path)")



def model_config(params: dict) -> dict:
    """The open_clip config JSON used for the demo model (params.model.name: JSON path or shipped name)."""
    from nast.models.families import package_config

    name = str(params.model.name)
    p = Path(name) if name.endswith(".json") else package_config(name)
    if not p.is_file():
        raise StageError(f"model config not found: {p} ({_pf()}: model.name)")
    return json.loads(p.read_text())



def run(args: argparse.Namespace, params: dict) -> int:
    """One run per output folder: a second run targeting the same --out stops at once (io.output_lock)."""
    from nast.io import output_lock

    with output_lock(args.out, "pretraining folder"):
        return _run(args, params)



def _run(args: argparse.Namespace, params: dict) -> int:
    from nast.models.families import split_config

    pp = params.pretrain
    if params.model.family != "open_clip":
        raise StageError(f"{_pf()}: model.family must be open_clip for pretrain-base (the demo model)")
    torch.set_num_threads(int(pp.num_threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    out = Path(args.out)
    cohort = read_table(args.cohort, "cohort", params)
    require_columns(cohort, COLUMNS, args.cohort)
    train, val = select_pairs(cohort, "train"), select_pairs(cohort, "validate")
    log.info("pretrain-base: %d train pairs, %d validate pairs", train.height, val.height)
    cfg = model_config(params)
    model_cfg, pre_cfg = split_config(cfg)
    fingerprint = run_fingerprint({"cfg": cfg, "pretrain": pp,
                                "train": train.select("dicom_id", "findings", "impression").rows(),
                                "val": val.select("dicom_id").rows()})
    trainer = Pretrainer(model_cfg, pre_cfg, train, val, pp, out)
    curve, finished = trainer.fit(fingerprint, args.stop_after_epoch)
    if not finished:
        log.info("stopped after epoch %d (--stop-after-epoch); rerun to continue", curve[-1]["epoch"])
        return 0
    ckpt = out / "checkpoint.pt"
    from nast.io import atomic_write

    with atomic_write(ckpt) as tmp:
        torch.save(trainer.model.state_dict(), tmp)
    write_json(cfg, out / "model_config.json")
    write_text(pl.DataFrame(curve).write_csv(float_precision=6), out / "curve.csv")
    if Path(params.model.checkpoint) != ckpt:
        log.warning("params.model.checkpoint is %s but the model was written to %s",
                    params.model.checkpoint, ckpt)
    log.info("wrote %s (final val_r5 %.3f)", ckpt, curve[-1]["val_r5"])
    return 0
