"""``nast cache-images``: the pre-resized image cache (:mod:`nast.models.image_cache`, whose
docstring describes the layout): every cohort image, per split, and with ``--grounding`` the
grounding table's counterfactual and control images (the DAG leaves them out: they are few, and
a change of the grounding table would otherwise rerun every stage that reads pixels), decoded
once into uint8 grayscale crops at ``data.image_cache_size`` pixels (refused before any work when
the model's config files declare another input size). The rule ``cache_images``
(workflow/rules/cache_images.smk) and the DVC stage of the same name run this module when
``data.image_cache_size`` is set; the pixel-reading stages then take ``--image-cache``. A rerun
after a kill keeps the finished shards.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from nast.errors import StageError

log = logging.getLogger(__name__)

#: the params.yaml keys this stage reads (nast.codedeps.declared_params)
#: (model.*: its config files say the input size, checked before any image is decoded)
PARAMS_KEYS = ("data.image_cache_size", "data.allow_empty", "model.family", "model.name", "model.checkpoint")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cohort", required=True, help="cohort.parquet: its image_path and split columns")
    parser.add_argument("--grounding", default=None,
                        help="optional grounding.parquet: also cache its cf_path and ctrl_path images")
    parser.add_argument("--out", required=True, help="output folder, e.g. data/processed/image_cache")


def paths_by_split(cohort, grounding=None) -> dict[str, list[str]]:
    """{split: sorted unique image paths}: the cohort's, and the grounding table's counterfactuals
    and controls that are not cohort images under ``grounding``."""
    from nast.models.image_cache import GROUNDING_SPLIT

    out: dict[str, set[str]] = {}
    for split, path in cohort.select("split", "image_path").drop_nulls().iter_rows():
        out.setdefault(str(split), set()).add(path)
    if GROUNDING_SPLIT in out:
        raise StageError(f"cohort: a split named {GROUNDING_SPLIT!r} clashes with the cache's grounding images")
    if grounding is not None:
        cohort_paths = set().union(*out.values()) if out else set()
        extra = {p for c in ("cf_path", "ctrl_path") if c in grounding.columns
                 for p in grounding[c].drop_nulls().to_list()} - cohort_paths
        if extra:
            out[GROUNDING_SPLIT] = extra
    return {k: sorted(v) for k, v in out.items()}


def run(args: argparse.Namespace, params: dict) -> int:
    from nast import io, tracking
    from nast.config import params_file
    from nast.models import image_cache as C

    size = params.data.image_cache_size
    if size is None:
        raise StageError(f"{params_file()}: data.image_cache_size is null: no image cache to write "
                         "(set it to the base model's input size)")
    from nast.models.families import declared_image_size

    want = declared_image_size({k: params.model[k] for k in ("family", "name", "checkpoint")})
    if want is not None and want != int(size):
        raise StageError(f"{params_file()}: data.image_cache_size is {size} but the model (model.name "
                         f"{params.model['name']!r}) takes {want} px: set data.image_cache_size: {want}, "
                         "or null for no cache")
    cohort = io.read_table(args.cohort, "cohort", params)
    io.require_columns(cohort, ("image_path", "split"), args.cohort)
    grounding = io.read_table(args.grounding, "grounding table", params) if args.grounding else None
    by_split = paths_by_split(cohort, grounding)
    t0 = time.perf_counter()
    manifest = C.write_cache(args.out, by_split, int(size))
    seconds = time.perf_counter() - t0
    n_in = sum(len(v) for v in by_split.values())
    if manifest["n"] != n_in:  # counts reconcile: every image is in the cache once
        raise StageError(f"cache-images: {n_in} images in, {manifest['n']} cached")
    log.info("cache-images: %d images (%s) at %d px in %.1f s -> %s", manifest["n"],
             ", ".join(f"{k} {v}" for k, v in manifest["n_by_split"].items()), size, seconds, args.out)
    tracking.log_pipeline_artifacts(params, [Path(args.out) / C.MANIFEST],
                                    metrics={"cache_images_n": manifest["n"], "cache_images_seconds": seconds,
                                             "cache_images_shards_kept": manifest["shards_kept"]})
    return 0


__all__ = ["add_arguments", "run"]
