"""``nast contextual``: true contextual captions and minimal-edit foils that contradict the report.

Input: the claims table (``nast claims``) and the cohort (for the image). For every study:

1. **Facts.** The study's claims, read as facts per finding: positive mentions (with their
   laterality, zone, severity), negative mentions, uncertain mentions. A finding with any positive
   mention is *present* (its negative mentions — "no new effusion" next to "small left effusion" —
   make no caption); a finding with only negative mentions is *absent*; *uncertain* mentions make no
   caption (a hedge is not a claim about the image) but they block foils that would assert that
   finding, since such a foil might be true.
2. **True captions.** Positive claim → ``[severity] [laterality] [zone] finding`` ("moderate right
   pleural effusion", "mild left basilar atelectasis"); negative claim → ``no [severity] [laterality]
   finding`` ("no pneumothorax", "no large pleural effusion"). Identical captions of one study are
   kept once (``claim_id`` = ``<study_id>:<index of its first claim in the study>``).
3. **Minimal-edit foils**, each labelled ``foil_type``:

   - ``polarity``: "X" → "no X" (severity dropped: "moderate right pleural effusion" → "no right
     pleural effusion") and "no X" → "X";
   - ``laterality``: left ↔ right, left/right → bilateral (never bilateral → one side: that is
     also true);
   - ``severity``: mild ↔ severe, moderate → severe, small ↔ large, borderline → severe.

   A foil is kept only if it **contradicts** the report: a polarity flip onto an uncertain or present
   finding, a side on which the finding is also reported (or reported without a side, or as
   uncertain), a severity that another mention of the finding carries — all dropped.
4. At most ``params.contextual.max_foils_per_claim`` foils per caption, drawn round-robin over the
   foil types (every type represented before any repeats) with a generator seeded by
   ``params.contextual.seed``, the study and the caption (same seed → identical table).

Image: the study's first frontal image (view PA, then AP, then dicom_id), split as in the cohort.
Studies that give no (caption, foil) row — no frontal image, not in the cohort, only uncertain
mentions, or no contradicting foil — go to the quarantine table with the reason, and
``studies in = studies kept + studies quarantined`` is asserted.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from nast.io import quarantine_frame, reconcile, require_columns

log = logging.getLogger(__name__)


STAGE = "contextual"
FRONTAL_ORDER: dict[str, int] = {"PA": 0, "AP": 1}
FOIL_TYPES = ("polarity", "laterality", "severity")

PHRASES: dict[str, str] = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "pulmonary edema",
    "Enlarged Cardiomediastinum": "enlarged cardiomediastinum",
    "Fracture": "fracture",
    "Lung Lesion": "lung lesion",
    "Lung Opacity": "lung opacity",
    "Pleural Effusion": "pleural effusion",
    "Pleural Other": "pleural thickening",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Support Devices": "support devices",
}
ZONE_WORDS: dict[str, str] = {
    "upper": "upper lobe",
    "lower": "lower lobe",
    "middle": "middle lobe",
    "basilar": "basilar",
    "apical": "apical",
    "perihilar": "perihilar",
    "retrocardiac": "retrocardiac",
    "lingular": "lingular",
}
LATERALITY_SWAPS: dict[str, tuple[str, ...]] = {"left": ("right", "bilateral"), "right": ("left", "bilateral")}
SEVERITY_SWAPS: dict[str, tuple[str, ...]] = {
    "mild": ("severe",),
    "severe": ("mild",),
    "moderate": ("severe",),
    "small": ("large",),
    "large": ("small",),
    "borderline": ("severe",),
}
SIDES = ("left", "right", "bilateral")

OUTPUT_SCHEMA: dict[str, pl.DataType] = {
    "study_id": pl.Int64,
    "subject_id": pl.Int64,
    "dicom_id": pl.Utf8,
    "image_path": pl.Utf8,
    "split": pl.Utf8,
    "claim_id": pl.Utf8,
    "finding": pl.Utf8,
    "caption": pl.Utf8,
    "foil": pl.Utf8,
    "foil_type": pl.Utf8,
}

CONTEXTUAL_EXPECTATIONS: list[tuple[str, dict]] = [
    ("ExpectColumnValuesToNotBeNull", {"column": "caption"}),
    ("ExpectColumnValuesToNotBeNull", {"column": "foil"}),
    ("ExpectColumnValuesToNotBeNull", {"column": "image_path"}),
    ("ExpectColumnValuesToBeInSet", {"column": "foil_type", "value_set": list(FOIL_TYPES)}),
    ("ExpectColumnValuesToBeInSet", {"column": "finding", "value_set": list(PHRASES)}),
    ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": ["train", "validate", "test"]}),
    # caption != foil, gated through a derived boolean column (see run())
    ("ExpectColumnValuesToBeInSet", {"column": "caption_differs", "value_set": [True]}),
]


# --------------------------------------------------------------------------- captions
@dataclass(frozen=True)
class Claim:
    finding: str
    polarity: str
    laterality: str | None = None
    zone: str | None = None
    severity: str | None = None

    @classmethod
    def from_row(cls, finding: str, polarity: str, location: str | None, severity: str | None) -> "Claim":
        laterality = zone = None
        if location:
            head, _, rest = location.partition(" ")
            if head in SIDES:
                laterality, zone = head, rest or None
            else:
                zone = location
        return cls(finding, polarity, laterality, zone, severity)


def render(finding: str, negative: bool, laterality: str | None = None, zone: str | None = None,
           severity: str | None = None) -> str:
    """Caption text: ``[no] [severity] [laterality] [zone] finding``."""
    words = ["no"] if negative else []
    words += [w for w in (severity, laterality, ZONE_WORDS.get(zone or "", zone)) if w]
    words.append(PHRASES[finding])
    return " ".join(words)


@dataclass
class Facts:
    """What one study's report says about each finding."""

    positive: dict[str, list[Claim]] = field(default_factory=dict)
    negative: dict[str, list[Claim]] = field(default_factory=dict)
    uncertain: dict[str, list[Claim]] = field(default_factory=dict)

    @classmethod
    def from_claims(cls, claims: list[Claim]) -> "Facts":
        facts = cls()
        for c in claims:
            getattr(facts, c.polarity).setdefault(c.finding, []).append(c)
        return facts

    def mentioned_sides(self, finding: str) -> set[str | None]:
        """Sides on which the finding is reported present or possible (None = no side given)."""
        return {c.laterality for c in self.positive.get(finding, []) + self.uncertain.get(finding, [])}

    def severities(self, finding: str) -> set[str | None]:
        return {c.severity for c in self.positive.get(finding, []) + self.uncertain.get(finding, [])}


def foils_for(claim: Claim, facts: Facts) -> list[tuple[str, str]]:
    """All contradicting minimal-edit foils of one caption claim: [(foil_type, foil text)]."""
    f = claim.finding
    out: list[tuple[str, str]] = []
    if claim.polarity == "positive":
        out.append(("polarity", render(f, True, claim.laterality, claim.zone)))
        if claim.laterality in LATERALITY_SWAPS:
            sides = facts.mentioned_sides(f)
            for other in LATERALITY_SWAPS[claim.laterality]:
                blocked = {None, other, "bilateral"} | ({"left", "right"} if other == "bilateral" else set())
                if not (sides - {claim.laterality}) & blocked:
                    out.append(("laterality", render(f, False, other, claim.zone, claim.severity)))
        if claim.severity in SEVERITY_SWAPS:
            for other in SEVERITY_SWAPS[claim.severity]:
                if other not in facts.severities(f):
                    out.append(("severity", render(f, False, claim.laterality, claim.zone, other)))
    elif claim.polarity == "negative":
        if f not in facts.positive and f not in facts.uncertain:
            out.append(("polarity", render(f, False, claim.laterality, claim.zone, claim.severity)))
    return out


def _pick(candidates: list[tuple[str, str]], k: int, rng: random.Random) -> list[tuple[str, str]]:
    """k foils, round-robin over foil types (each type represented before any repeats), shuffled by rng."""
    groups = {t: [c for c in candidates if c[0] == t] for t in FOIL_TYPES}
    for group in groups.values():
        rng.shuffle(group)
    picked: list[tuple[str, str]] = []
    while len(picked) < k:
        for t in FOIL_TYPES:
            if groups[t] and len(picked) < k:
                picked.append(groups[t].pop())
    return sorted(picked)


def study_rows(claims: list[Claim], seed: int, study_key: str, max_foils: int) -> list[dict]:
    """(claim_id suffix, finding, caption, foil, foil_type) rows of one study (pure)."""
    facts = Facts.from_claims(claims)
    rows: list[dict] = []
    seen: set[str] = set()
    for idx, claim in enumerate(claims):
        if claim.polarity == "uncertain":
            continue
        if claim.polarity == "negative" and claim.finding in facts.positive:
            continue
        caption = render(claim.finding, claim.polarity == "negative", claim.laterality, claim.zone, claim.severity)
        if caption in seen:
            continue
        seen.add(caption)
        candidates = sorted(set(foils_for(claim, facts)))
        candidates = [c for c in candidates if c[1] != caption]
        if len(candidates) > max_foils:
            candidates = _pick(candidates, max_foils, random.Random(f"{seed}|{study_key}|{caption}"))
        for foil_type, foil in candidates:
            rows.append({"claim_index": idx, "finding": claim.finding, "caption": caption,
                         "foil": foil, "foil_type": foil_type})
    return rows


# --------------------------------------------------------------------------- table level
def first_frontal(cohort: pl.DataFrame, source: str | Path = "cohort") -> pl.DataFrame:
    """study_id -> subject_id, dicom_id, image_path, split of its first frontal image."""
    require_columns(cohort, ["study_id", "subject_id", "dicom_id", "view", "image_path", "split"], source)
    return (
        cohort.filter(pl.col("view").is_in(list(FRONTAL_ORDER)))
        .with_columns(pl.col("view").replace_strict(FRONTAL_ORDER, return_dtype=pl.Int8).alias("_rank"))
        .sort(["study_id", "_rank", "dicom_id"])
        .unique(subset=["study_id"], keep="first", maintain_order=True)
        .select("study_id", "subject_id", "dicom_id", "image_path", "split")
    )


def build_contextual(
    claims: pl.DataFrame, cohort: pl.DataFrame, seed: int, max_foils: int,
    claims_source: str | Path = "claims", cohort_source: str | Path = "cohort",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Contextual (caption, foil) table and the quarantine of studies that give no row (pure)."""
    require_columns(claims, ["study_id", "finding", "polarity", "location", "severity"], claims_source)
    images = first_frontal(cohort, cohort_source)
    known = set(cohort["study_id"].to_list())
    image_of = {r["study_id"]: r for r in images.iter_rows(named=True)}
    per_study: dict[int, list[Claim]] = {}
    for sid, finding, pol, loc, sev in claims.select("study_id", "finding", "polarity", "location",
                                                     "severity").iter_rows():
        per_study.setdefault(int(sid), []).append(Claim.from_row(finding, pol, loc, sev))

    rows: list[dict] = []
    quarantine: list[dict] = []
    for sid in sorted(per_study):
        reason = None
        if sid not in known:
            reason = "study not in the cohort"
        elif sid not in image_of:
            reason = "no frontal (PA/AP) image for this study"
        study = study_rows(per_study[sid], seed, str(sid), max_foils) if reason is None else []
        if reason is None and not study:
            kinds = {c.polarity for c in per_study[sid]}
            reason = ("only uncertain mentions, no caption" if kinds == {"uncertain"}
                      else "no foil contradicts the report")
        if reason:
            quarantine.append({"stage": STAGE, "key": sid, "reason": reason, "source": str(claims_source)})
            continue
        img = image_of[sid]
        for r in study:
            rows.append({
                "study_id": sid, "subject_id": img["subject_id"], "dicom_id": img["dicom_id"],
                "image_path": img["image_path"], "split": img["split"],
                "claim_id": f"{sid}:{r['claim_index']}", "finding": r["finding"], "caption": r["caption"],
                "foil": r["foil"], "foil_type": r["foil_type"],
            })
    out = pl.DataFrame(rows, schema=OUTPUT_SCHEMA).sort(["study_id", "claim_id", "foil_type", "foil"])
    q = quarantine_frame(quarantine)
    reconcile(STAGE, len(per_study), out["study_id"].n_unique() if out.height else 0, q.height)
    return out, q



