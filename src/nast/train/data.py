"""Training/validation data for the NAST trainer, built from the pipeline tables (pure polars).

The training unit is a **caption group**: one image, one true contextual caption, and that
caption's minimal-edit foils (with their foil types), taken from ``contextual.parquet``
(one row per (caption, foil)). Only the requested split is used (the trainer uses ``train``;
per-epoch validation uses ``validate``). Groups are sorted by (dicom_id, caption) so the same
tables always give the same order; shuffling is done by the trainer with a seeded generator.
:func:`composite_groups` adds training groups whose caption joins several of an image's claims
("right pleural effusion, without pneumothorax or edema") and whose foils flip one of them.
"""

from __future__ import annotations

import random

import polars as pl
import torch

from nast.errors import StageError
from nast.io import BENCHMARK_COLUMNS, CONTEXTUAL_COLUMNS, require_columns  # noqa: F401 - re-exported
from nast.text.contextual import PHRASES
from nast.text.templates import ABSENCE_CUES, join_list, surface_forms


def caption_groups(contextual: pl.DataFrame, split: str, source: str = "contextual.parquet") -> pl.DataFrame:
    """One row per (image, true caption): dicom_id, image_path, caption, foils list, foil_types list."""
    require_columns(contextual, CONTEXTUAL_COLUMNS, source)
    df = contextual.filter(pl.col("split") == split).sort(["dicom_id", "caption", "foil_type", "foil"])
    aggs = [pl.col("foil"), pl.col("foil_type")]
    if "finding" in df.columns:
        aggs.append(pl.col("finding").first())
    return (
        df.group_by(["dicom_id", "image_path", "caption"], maintain_order=True)
        .agg(*aggs)
        .rename({"foil": "foils", "foil_type": "foil_types"})
        .sort(["dicom_id", "caption"])
    )


#: Negation cues of composite claim captions (:data:`nast.text.templates.ABSENCE_CUES`).
COMPOSITE_CUES: tuple[str, ...] = ABSENCE_CUES
#: How a composite claim caption joins its parts: ``{P}`` = the present parts joined with "and",
#: ``{N}`` = the absent parts joined with "or", ``{c}`` = the negation cue (one per caption and foils).
COMPOSITE_PATTERNS: dict[str, tuple[str, ...]] = {
    "mixed": ("{P}, {c} {N}", "{P}; {c} {N}", "{P}. {c} {N}", "{c} {N}. {P}"),
    "absent": ("{c} {N}",),
    "present": ("{P}",),
}


def render_composite(nouns: list[str], present: list[bool], pattern: dict[str, str]) -> str:
    """One composite caption: ``nouns`` = one noun phrase per claim, in order; ``present`` = which
    of them are asserted (the others go under the negation cue); ``pattern`` = the chosen skeleton
    per case and the cue (key ``cue``, default "no")."""
    pos = [n for n, on in zip(nouns, present) if on]
    neg = [n for n, on in zip(nouns, present) if not on]
    case = "mixed" if pos and neg else "present" if pos else "absent"
    return pattern[case].format(P=join_list(pos, "and"), N=join_list(neg, "or"), c=pattern.get("cue", "no"))


def claim_parts(groups: pl.DataFrame) -> pl.DataFrame:
    """Per single-claim caption group with a "no X" / "X" polarity pair: dicom_id, image_path,
    finding, ``present`` (the true caption asserts the finding) and ``noun`` (X: the negated form
    without its leading "no ", so a present part carries no severity word - the polarity foils of
    the contextual stage drop it, and a severity word would tell the true caption from its foils
    by the text alone)."""
    rows = []
    for r in groups.iter_rows(named=True):
        pol = [f for f, t in zip(r["foils"], r["foil_types"]) if t == "polarity"]
        if not pol:
            continue
        cap, foil = r["caption"], pol[0]
        present = not cap.startswith("no ")
        negated, asserted = (foil, cap) if present else (cap, foil)
        if not negated.startswith("no ") or asserted.startswith("no "):
            continue  # not a "no X" / "X" pair: no composite part
        rows.append((r["dicom_id"], r["image_path"], r.get("finding"), present, negated[3:]))
    return pl.DataFrame(rows, schema={"dicom_id": pl.String, "image_path": pl.String, "finding": pl.String,
                                      "present": pl.Boolean, "noun": pl.String}, orient="row")


def _reword(noun: str, finding: str, rng: random.Random) -> str:
    """The claim's noun with its finding named by one phrasing of the clinical phrase table
    (``nast/text/data/phrases.csv``, the vocabulary the reports use: "pleural scarring" for
    "pleural thickening", "widened mediastinum" for "enlarged cardiomediastinum"); the
    laterality and zone words stay. A noun without the contextual stage's phrase is kept."""
    canonical = PHRASES.get(finding)
    if canonical is None or canonical not in noun:
        return noun
    forms = tuple(dict.fromkeys((canonical, *surface_forms().get(finding, ()))))
    return noun.replace(canonical, rng.choice(forms), 1)


def composite_groups(groups: pl.DataFrame, per_image: int, max_parts: int, seed: int) -> pl.DataFrame:
    """Composite claim groups (``train.composite_claims``) from an image's single claims.

    A radiograph is described by several findings at once, each present or absent ("moderate
    right pleural effusion, no pneumothorax or lung lesion"); single claims never make the text
    encoder keep apart *which* finding a negation scopes over. Per image, ``per_image`` times: draw
    ``min(max_parts, available)`` (at least 2) of its claims with distinct findings, join their
    nouns (each finding named by one phrasing of the phrase table, :func:`_reword`) by their truth
    (:data:`COMPOSITE_PATTERNS`: present ones bare, absent ones under one negation cue of
    :data:`COMPOSITE_CUES`), and take as foils the
    same caption with **one** part's polarity flipped (one foil per part, ``foil_type`` polarity),
    i.e. minimal edits that contradict exactly one claim of the report. Seeded per (seed, image,
    draw), so the same tables and seed give the same groups. Columns as :func:`caption_groups`
    (``finding`` is null: a composite has several)."""
    schema = {"dicom_id": pl.String, "image_path": pl.String, "caption": pl.String,
              "foils": pl.List(pl.String), "foil_types": pl.List(pl.String), "finding": pl.String}
    if per_image <= 0:
        return pl.DataFrame(schema=schema)
    out = []
    for (dicom_id, image_path), sub in claim_parts(groups).group_by(["dicom_id", "image_path"], maintain_order=True):
        by_finding: dict[str, tuple[bool, str]] = {}
        for f, present, noun in sub.select("finding", "present", "noun").iter_rows():
            by_finding.setdefault(f if f is not None else noun, (present, noun))
        keys = sorted(by_finding)
        if len(keys) < 2:
            continue
        seen: set[str] = set()
        for draw in range(per_image):
            rng = random.Random(f"{seed}:{dicom_id}:{draw}")
            chosen = rng.sample(keys, min(max_parts, len(keys)))
            pattern = {case: rng.choice(opts) for case, opts in COMPOSITE_PATTERNS.items()}
            pattern["cue"] = rng.choice(COMPOSITE_CUES)
            facts = [by_finding[k] for k in chosen]
            forms = [_reword(noun, k, rng) for k, (_, noun) in zip(chosen, facts)]
            truth = [present for present, _ in facts]
            caption = render_composite(forms, truth, pattern)
            if caption in seen:
                continue
            seen.add(caption)
            foils = [render_composite(forms, [t if j != i else not t for j, t in enumerate(truth)], pattern)
                     for i in range(len(truth))]
            out.append((dicom_id, image_path, caption, foils, ["polarity"] * len(foils), None))
    return pl.DataFrame(out, schema=schema, orient="row").sort(["dicom_id", "caption"])


def claim_polarity_labels(groups: pl.DataFrame, cohort: pl.DataFrame, source: str = "cohort.parquet"
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """For the image direction of the claim loss: ``(finding_idx [G], image_labels [G, F])``.

    Per caption group: the index of its finding
    among the cohort's finding columns, and the label vector (1 / 0, or -1 for uncertain and not
    mentioned) of the group's image. ``opposite(i, j)`` in a batch is then
    ``image_labels[j, finding_idx[i]] == 1 - image_labels[i, finding_idx[i]]`` with both in {0, 1}.
    Groups whose finding is not a cohort column get index -1 (never contradicted).
    """
    require_columns(groups, ("image_path", "finding"), "caption groups")
    require_columns(cohort, ("image_path",), source)
    findings = sorted({f for f in groups["finding"].to_list() if f is not None and f in cohort.columns})
    idx = {f: i for i, f in enumerate(findings)}
    rows = cohort.select("image_path", *findings).unique("image_path", keep="first")
    by_path = {r[0]: r[1:] for r in rows.iter_rows()}
    missing = sorted({p for p in groups["image_path"].to_list() if p not in by_path})
    if missing:
        raise StageError(f"{source}: no labels for {len(missing)} training image(s), e.g. {missing[0]}")
    lab = torch.tensor([[(-1 if v is None or v not in (0, 1) else int(v)) for v in by_path[p]] or [-1]
                        for p in groups["image_path"].to_list()], dtype=torch.long)
    fidx = torch.tensor([idx.get(f, -1) for f in groups["finding"].to_list()], dtype=torch.long)
    return fidx, lab


def opposite_mask(finding_idx: torch.Tensor, image_labels: torch.Tensor) -> torch.Tensor:
    """[B,B] bool from a batch's ``finding_idx [B]`` and ``image_labels [B, F]``: image j's label
    of caption i's finding is the opposite (0 vs 1) of image i's."""
    f = finding_idx.clamp(min=0)
    own = image_labels.gather(1, f[:, None]).squeeze(1)  # [B] label of finding_i in image i
    other = image_labels[:, f].T  # [B(i), B(j)] label of finding_i in image j
    known = (finding_idx >= 0) & (own >= 0)
    return known[:, None] & (other >= 0) & (other == 1 - own[:, None])


def benchmark_split(benchmark: pl.DataFrame, split: str, source: str = "benchmark.parquet") -> pl.DataFrame:
    require_columns(benchmark, BENCHMARK_COLUMNS, source)
    return benchmark.filter(pl.col("split") == split).sort(["dicom_id"])


def not_negative_mask(image_keys: list[str], captions: list[str]) -> torch.Tensor:
    """[B,B] True where pair (i, j) is not a true negative: same image or identical caption text."""
    b = len(image_keys)
    m = torch.zeros(b, b, dtype=torch.bool)
    for i in range(b):
        for j in range(b):
            if i != j and (image_keys[i] == image_keys[j] or captions[i] == captions[j]):
                m[i, j] = True
    return m
