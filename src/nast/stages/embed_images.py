"""``nast embed-images``: every image of the cohort (all splits) embedded once by the base model.

Writes the store of :mod:`nast.models.embeddings` (``--out``, the DAG's
``data/processed/image_embeddings/``): ``embeddings.npy`` (float32 [N, D]), ``index.parquet``
(image_path, sorted) and ``manifest.json`` (n, dim, the base model's fingerprint: sha256 of its
checkpoint and config files). ``nast train`` (unless ``train.train_vision``), ``nast evaluate``
(models whose vision tower is the base's) read it with ``--embeddings`` instead of re-embedding
the same images, and refuse it when the base model's files differ. Images are streamed through
a DataLoader (env ``NAST_IMAGE_WORKERS`` worker processes), in batches of 64 in path order: the
frozen tower's numbers within float tolerance (an image's batch-mates differ from those it has in
a stage's own batches; at most 1e-7 apart on the demo).

``--grounding`` embeds the grounding table's images (originals, counterfactuals, controls). The DAG
writes them into a second store (rule ``embed_images_grounding`` ->
``data/processed/grounding_embeddings``), read by ``nast evaluate-grounding`` and by the grounded
and preference methods' training, so that a change of the grounding table reruns neither the
cohort's store nor the trainings that do not read it. ``--image-cache`` reads the pre-resized
crops of ``nast cache-images`` instead of the JPEGs (the same pixels).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from nast.errors import StageError
from nast.models.image_cache import ARGUMENT_HELP

log = logging.getLogger(__name__)

#: the params.yaml keys this stage reads (nast.codedeps.declared_params): the base model, and the
#: CPU thread count of training (the same float sums as the embeddings training computes itself)
PARAMS_KEYS = ("model", "train.num_threads", "data.allow_empty")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cohort", default=None, help="cohort.parquet: its image_path column (every split)")
    parser.add_argument("--grounding", default=None,
                        help="grounding.parquet: embed its image_path, cf_path and ctrl_path images (the DAG's "
                             "second store, data/processed/grounding_embeddings, is this alone)")
    parser.add_argument("--base", default=None,
                        help="the base model: a checkpoint or a folder holding it (the DAG's declared input; "
                             "default: params model.checkpoint); its fingerprint is stored with the embeddings")
    parser.add_argument("--image-cache", default=None, help=ARGUMENT_HELP)
    parser.add_argument("--out", required=True, help="output folder, e.g. data/processed/image_embeddings")


def image_paths(cohort=None, grounding=None) -> list[str]:
    """Sorted unique image paths of the cohort and of the grounding table's three image columns."""
    paths = set(cohort["image_path"].drop_nulls().to_list()) if cohort is not None else set()
    if grounding is not None:
        for col in ("image_path", "cf_path", "ctrl_path"):
            if col in grounding.columns:
                paths.update(grounding[col].drop_nulls().to_list())
    return sorted(paths)


def run(args: argparse.Namespace, params: dict) -> int:
    import torch

    from nast import io, tracking
    from nast.models import base_params, load_model
    from nast.models import embeddings as E
    from nast.models.image_cache import open_cache

    if not (args.cohort or args.grounding):
        raise StageError("embed-images: give --cohort, --grounding or both (the tables whose images to embed)")
    torch.set_num_threads(int(params.train.num_threads))
    model = base_params(params.model, args.base)
    cohort = io.read_table(args.cohort, "cohort", params) if args.cohort else None
    if cohort is not None:
        io.require_columns(cohort, ("image_path",), args.cohort)
    grounding = io.read_table(args.grounding, "grounding table", params) if args.grounding else None
    paths = image_paths(cohort, grounding)
    fingerprint = E.base_fingerprint(model)
    t0 = time.perf_counter()
    vl = load_model(model, device=model["device"])
    vl.model.eval()
    vl.use_image_cache(open_cache(args.image_cache))
    emb = E.embed_paths(vl, paths)
    seconds = time.perf_counter() - t0
    manifest = E.write_store(args.out, paths, emb, fingerprint, {"family": vl.family})
    prefix = "embed_images" if cohort is not None else "embed_images_grounding"
    log.info("embedded %d images (dim %d) with %s in %.1f s -> %s", manifest["n"], manifest["dim"],
             model["checkpoint"], seconds, args.out)
    tracking.log_pipeline_artifacts(params, [Path(args.out) / E.MANIFEST],
                                    metrics={f"{prefix}_n": manifest["n"], f"{prefix}_dim": manifest["dim"],
                                             f"{prefix}_seconds": seconds})
    return 0


__all__ = ["add_arguments", "run"]
