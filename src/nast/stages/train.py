"""``nast train``: train NAST or a baseline and write ``models/<method>/``.

Output folder (``--out``)::

    manifest.json        method, trained (bool), seed, epochs, base model params, files
    adapter.pt           state dict of the trained parameters (LoRA A/B, or the text tower for full_ft)
    adapter_config.json  method spec, LoRA targets (after re-targeting) and config, layer scales
    layer_weights.csv    copy of the CTE layer weights used
    params_used.json     the params sections that matter (data.source, model, train, nast) + seed
    curve.csv            epoch, loss, clip_loss, claim_loss, val_mcq_negated_acc, val_mcq_affirmative_acc, val_claim_acc
    state/epoch_NNN.pt   the last complete epoch (weights, optimizer, RNG states, curve) for resume

``zero_shot`` trains nothing and writes only manifest.json + params_used.json (the base reference).
A killed run resumes when rerun with the same arguments. ``--stop-after-epoch N`` (or env
``NAST_STOP_AFTER_EPOCH``) stops after epoch N without writing the final files (exit code 3);
it exists to test resuming.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import polars as pl

from nast import io
from nast.errors import StageError
from nast.models.image_cache import ARGUMENT_HELP
from nast.train.methods import METHODS, resolve_method

log = logging.getLogger(__name__)

#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("train", "model", "data.allow_empty")
#: read besides PARAMS_KEYS by the methods that scale LoRA per layer by alpha_l^beta; the beta sweep
#: (--beta on the command line, key "sweep") reads all but nast.beta
PARAMS_KEYS_BY_METHOD = {
    "nast": ("nast.beta", "nast.scale", "nast.normalize"),
    "nast-grounded": ("nast.beta", "nast.scale", "nast.normalize"),
    "nast-dpo": ("nast.beta", "nast.scale", "nast.normalize"),
    "sweep": ("nast.scale", "nast.normalize"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=METHODS, help="method to train")
    parser.add_argument("--beta", default=None,
                        help="nast only: exponent beta of alpha_l^beta (overrides params nast.beta; "
                             "the method is recorded as nast-beta{BETA})")
    parser.add_argument("--cohort", required=True,
                        help="cohort.parquet (report captions of the CLIP loss; hashed into the tracking params "
                             "and the resume fingerprint)")
    parser.add_argument("--benchmark", required=True, help="benchmark.parquet (validate split -> per-epoch val MCQ)")
    parser.add_argument("--contextual", required=True, help="contextual.parquet (train split -> training pairs)")
    parser.add_argument("--layer-weights", default=None,
                        help="reports/cte/layer_weights.csv (layer, cte, alpha); "
                             "required by nast (beta > 0) and topk_layers")
    parser.add_argument("--grounding", default=None,
                        help="grounding.parquet (nast grounding-data): its train-split counterfactual pairs; "
                             "required by the grounded methods (grounded, nast-grounded); optional for the "
                             "preference methods (dpo, nast-dpo: image-side pairs), read by no other")
    parser.add_argument("--base", default=None,
                        help="the base model: a checkpoint or a folder holding it (the DAG's declared input; "
                             "default: params model.checkpoint)")
    parser.add_argument("--embeddings", default=None,
                        help="the base model's image embeddings (nast embed-images, data/processed/image_embeddings); "
                             "read instead of embedding the images, unless train.train_vision (needs pixels)")
    parser.add_argument("--image-cache", default=None, help=ARGUMENT_HELP)
    parser.add_argument("--grounding-embeddings", default=None,
                        help="the base model's embeddings of the grounding table's images (nast embed-images "
                             "--grounding, data/processed/grounding_embeddings); read with --grounding")
    parser.add_argument("--out", required=True, help="output model folder, e.g. models/nast")
    parser.add_argument("--stop-after-epoch", type=int, default=None,
                        help="testing: stop after this epoch as if killed (exit 3); rerun to resume")


def keys_method(method: str, beta: str | None) -> str:
    """The PARAMS_KEYS_BY_METHOD key of a run: "sweep" when --beta is given, else the method."""
    return "sweep" if beta is not None else method


def params_used(params: dict, seed: int, method: str | None = None) -> dict:
    """The params the method's weights depend on: model, train and (only for the per-layer scaled
    methods) the nast keys it declares (PARAMS_KEYS_BY_METHOD), plus the seed."""
    nast_keys = PARAMS_KEYS_BY_METHOD.get(method or "", ())
    nast = {k.split(".", 1)[1]: params.nast[k.split(".", 1)[1]] for k in nast_keys}
    return {"model": params.model, "train": params.train, **({"nast": nast} if nast else {}), "seed": seed}


def run(args: argparse.Namespace, params: dict) -> int:
    """One run per output folder: a second run targeting the same --out stops at once (io.output_lock)."""
    from nast.io import output_lock
    from nast.models import base_params

    params = params.replace(model=base_params(params.model, args.base))
    with output_lock(args.out, "training folder"):
        return _run(args, params)


def _run(args: argparse.Namespace, params: dict) -> int:
    import torch

    # fixed thread count: float sums (and so the weights) must not depend on the runner's env
    torch.set_num_threads(int(params.train.num_threads))

    from nast import tracking
    from nast.evaluate.scoring import validation_metrics
    from nast.models import load_model
    from nast.train import trainer
    from nast.train.data import benchmark_split, caption_groups, composite_groups

    spec = resolve_method(args.method, params, args.beta)
    out = Path(args.out)
    tp = params.train
    seed = int(tp.seed)
    stop = args.stop_after_epoch
    if stop is None and os.environ.get("NAST_STOP_AFTER_EPOCH"):
        stop = int(os.environ["NAST_STOP_AFTER_EPOCH"])
    inputs = ([args.cohort, args.benchmark, args.contextual] + ([args.layer_weights] if args.layer_weights else [])
              + ([args.grounding] if args.grounding and (spec.lambda_ground > 0 or spec.lambda_dpo > 0) else []))

    manifest = {"method": spec.name, "base_method": spec.base, "trained": spec.train, "seed": seed,
                "epochs": int(tp.epochs) if spec.train else 0, "vision_trained": spec.vision, "base": params.model}
    if not spec.train:
        io.write_json(params_used(params, seed, keys_method(args.method, args.beta)), out / "params_used.json")
        io.write_json({**manifest, "files": ["params_used.json"]}, out / "manifest.json")
        log.info("%s: no training; wrote the base reference to %s", spec.name, out)
        tracking.log_method(params, spec.name, stage="train", inputs=inputs, artifacts=[out / "manifest.json"])
        return 0

    for p in (args.contextual, args.benchmark, args.cohort):
        if not Path(p).is_file():
            raise StageError(f"input not found: {p}")
    contextual = io.read_table(args.contextual, "contextual table", params)
    benchmark = io.read_table(args.benchmark, "benchmark", params)
    groups = caption_groups(contextual, "train", source=args.contextual)
    n_single = groups.height
    if int(tp.composite_claims) > 0:
        extra = composite_groups(groups, int(tp.composite_claims), int(tp.composite_parts), seed)
        groups = pl.concat([groups, extra], how="diagonal").sort(["dicom_id", "caption"])
    benchmark_split(benchmark, "validate", source=args.benchmark)  # structural check only
    lw = trainer.read_layer_weights(args.layer_weights) if args.layer_weights else None
    needs_lw = (spec.beta != 0) or spec.topk is not None
    if needs_lw and lw is None:
        raise StageError(f"--method {args.method} needs --layer-weights (reports/cte/layer_weights.csv)")

    torch.manual_seed(seed)
    vl = load_model(params.model, device=params.model.device)
    info = trainer.apply_method(vl, spec, tp, lw)
    n_layers = vl.n_text_layers
    scales = (trainer.layer_scales(lw, n_layers, spec.beta, source=str(args.layer_weights))
              if lw is not None and spec.beta != 0 else [1.0] * n_layers)
    if spec.beta != 0:
        scales = trainer.normalize_scales(scales, str(params.nast.normalize))
    # uniform methods: all scales 1, so the mode changes nothing; it is read only where it matters
    scale_mode = str(params.nast.scale) if spec.beta != 0 else "lr"
    log.info("%s: %d caption groups (train; %d single claims + %d composite), %d trainable tensors, "
             "adapters on %d modules, layer scales %s",
             spec.name, groups.height, n_single, groups.height - n_single,
             sum(1 for p in vl.model.parameters() if p.requires_grad), len(info["targets"]),
             ", ".join(f"{s:.3g}" for s in scales))

    fingerprint = tracking.params_hash({"spec": spec.to_dict(), "train": tp, "model": params.model,
                                        "scales": scales, "scale_mode": scale_mode,
                                        "inputs": tracking.data_hash(inputs)})
    clip_caption = tp.clip_caption
    cohort = io.read_table(args.cohort, "cohort", params) if clip_caption == "report" else None

    def report_captions(paths: list[str]):
        from nast.models.data import ReportCaptions

        io.require_columns(cohort, ("image_path", "findings", "impression"), args.cohort)
        rows = cohort.select("image_path", "findings", "impression").unique("image_path", keep="first")
        by_path = {r[0]: (r[1], r[2]) for r in rows.iter_rows()}
        missing = [p for p in paths if p not in by_path]
        if missing:
            raise StageError(f"{args.cohort}: no report for {len(missing)} training image(s), e.g. {missing[0]} "
                             "(train.clip_caption: report needs the cohort the contextual table was built from)")
        return ReportCaptions(vl, [by_path[p][0] for p in paths], [by_path[p][1] for p in paths], "report")

    ground = None
    if spec.lambda_dpo > 0 and not args.grounding:
        log.warning("%s: no --grounding: text preference pairs only (no image-side pairs)", spec.name)
    if spec.lambda_ground > 0 or (spec.lambda_dpo > 0 and args.grounding):
        from nast.grounding.texts import PAIR_COLUMNS

        if not args.grounding:
            raise StageError(f"--method {args.method} needs --grounding (data/processed/grounding.parquet)")
        gt = io.read_table(args.grounding, "grounding table", params)
        io.require_columns(gt, PAIR_COLUMNS, args.grounding)
        ground = gt.filter(pl.col("split") == "train").sort("dicom_id", "finding", "box_index")
        log.info("%s: %d counterfactual pairs (train split, %d with a control) for the grounding / DPO loss",
                 spec.name, ground.height, ground["ctrl_path"].is_not_null().sum())

    claim_labels = None
    if spec.lambda_image > 0:
        from nast.train.data import claim_polarity_labels

        if cohort is None:
            cohort = io.read_table(args.cohort, "cohort", params)
        claim_labels = claim_polarity_labels(groups, cohort, source=args.cohort)

    from nast.models.embeddings import open_store
    from nast.models.image_cache import open_cache

    store = None if spec.vision else open_store(args.embeddings, params.model)
    gstore = None if spec.vision or ground is None else open_store(args.grounding_embeddings, params.model)
    vl.use_image_cache(open_cache(args.image_cache))
    curve, finished = trainer.train(
        vl, spec, groups, tp, scales, scale_mode, out,
        validate=lambda: validation_metrics(vl, benchmark, contextual, "validate", store),
        stop_after_epoch=stop, fingerprint=fingerprint,
        report_captions=report_captions if clip_caption == "report" else None,
        claim_labels=claim_labels, ground=ground, embeddings=store, grounding_embeddings=gstore,
    )
    if not finished:
        return 3

    with io.atomic_write(out / trainer.ADAPTER_FILE) as tmp:
        torch.save(trainer.trainable_state(vl.model), tmp)
    io.write_json({"method": spec.name, "spec": spec.to_dict(), "family": vl.family,
                   "targets": info["targets"], "blocks": info["blocks"],
                   "lora": {k: tp[k] for k in ("lora_r", "lora_alpha", "lora_dropout")},
                   "adapted_modules": trainer.adapted_modules(vl.model),
                   "layer_scales": scales, "scale_mode": scale_mode, "trained": True},
                  out / trainer.ADAPTER_CONFIG)
    files = [trainer.ADAPTER_FILE, trainer.ADAPTER_CONFIG, "params_used.json", "curve.csv"]
    if args.layer_weights:
        trainer.copy_file(args.layer_weights, out / "layer_weights.csv")
        files.append("layer_weights.csv")
    io.write_text(pl.DataFrame(curve).write_csv(float_precision=6), out / "curve.csv")
    io.write_json(params_used(params, seed, keys_method(args.method, args.beta)), out / "params_used.json")
    # same precision as curve.csv: the last float digits depend on the CPU thread count
    final = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in (curve[-1] if curve else {}).items()}
    io.write_json({**manifest, "files": files, "final": final}, out / "manifest.json")
    log.info("%s: wrote %s", spec.name, out)
    tracking.log_method(
        params, spec.name, stage="train", inputs=inputs,
        step_metrics=[(int(r["epoch"]), {f"train_{k}" if not k.startswith("val_") else k: v
                                          for k, v in r.items() if k != "epoch"}) for r in curve],
        artifacts=[out / f for f in files if f != "params_used.json"] + [out / "params_used.json"],
        artifact_dir="model",
    )
    return 0


__all__ = ["add_arguments", "run"]
