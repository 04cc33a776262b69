"""Sampling of per-study CheXpert labels and of the drawn findings (location, severity).

Every study gets the four CheXpert label states for the 13 conditions:

* **1** (positive): drawn on the frontal image with a location and a severity, stated in the report;
* **0** (negative): not drawn; stated in the report negated ("No pleural effusion.") or in
  affirmative normal phrasing ("The costophrenic angles are sharp.");
* **-1** (uncertain): hedged in the report ("Possible pneumonia."); **not drawn at all** (the image
  shows no such finding, so an uncertain label never has pixels a model could learn from);
* **blank**: never mentioned, not drawn.

``No Finding`` is 1 exactly when no condition is 1 or -1, blank otherwise (as in the real file).

The number of positives per study is drawn so that most studies carry >= 2 ones and >= 3 zeros
(the NAST permutation rule); the condition mix follows the rough MIMIC-CXR prevalence, with the
rare conditions boosted so that a small demo still shows each of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nast.conditions import CHEXPERT_COLUMNS, CONDITIONS
from nast.demo.phantom import Finding

#: Relative frequency of each condition among positives (rare ones boosted for a small demo).
POSITIVE_WEIGHTS: dict[str, float] = {
    "Atelectasis": 0.11,
    "Cardiomegaly": 0.11,
    "Consolidation": 0.06,
    "Edema": 0.08,
    "Enlarged Cardiomediastinum": 0.05,
    "Fracture": 0.04,
    "Lung Lesion": 0.05,
    "Lung Opacity": 0.11,
    "Pleural Effusion": 0.12,
    "Pleural Other": 0.04,
    "Pneumonia": 0.06,
    "Pneumothorax": 0.06,
    "Support Devices": 0.11,
}

#: P(number of positives = 0, 1, 2, 3, 4)
N_POSITIVE_P = (0.12, 0.14, 0.32, 0.27, 0.15)
#: P(number of uncertain = 0, 1, 2)
N_UNCERTAIN_P = (0.55, 0.33, 0.12)
#: a remaining condition is stated negative (0) with this probability, else left blank
P_NEGATIVE = 0.62
#: conditions covered by "The lungs are clear."; when none is 1/-1 they are all 0 with this probability
LUNGS_CLEAR = frozenset({"Consolidation", "Lung Opacity", "Pneumonia", "Edema", "Lung Lesion", "Atelectasis"})
P_LUNGS_CLEAR = 0.35

MILD3 = ("mild", "moderate", "severe")
SIZE3 = ("small", "moderate", "large")

#: condition -> (location kind, severity scale). Location kinds:
#: "zone" side+upper/lower, "side" right/left, "side_bi" right/left/bilateral, "bilateral", None.
FINDING_KIND: dict[str, tuple[str | None, tuple[str, ...] | None]] = {
    "Atelectasis": ("zone_lower", MILD3),
    "Cardiomegaly": (None, MILD3),
    "Consolidation": ("zone", SIZE3),
    "Edema": ("bilateral", MILD3),
    "Enlarged Cardiomediastinum": (None, MILD3),
    "Fracture": ("side", None),
    "Lung Lesion": ("zone", SIZE3),
    "Lung Opacity": ("zone", MILD3),
    "Pleural Effusion": ("side_bi", SIZE3),
    "Pleural Other": ("side", MILD3),
    "Pneumonia": ("zone", MILD3),
    "Pneumothorax": ("side", SIZE3),
    "Support Devices": ("device", None),
}

#: device kind -> location stated in the report
DEVICES: dict[str, str | None] = {"ett": None, "ij_line": "right", "pacemaker": "left", "enteric_tube": None}
DEVICE_P = (0.35, 0.3, 0.15, 0.2)

#: parenchymal findings that take a (side, zone) slot, so that two of them do not hide each other
_ZONE_ORDER = ("Pneumothorax", "Pleural Effusion", "Consolidation", "Pneumonia", "Lung Lesion", "Lung Opacity",
               "Atelectasis")


@dataclass
class StudyLabels:
    """Labels of one study (CheXpert name -> 1/0/-1/None, all 14 columns) and its drawn findings."""

    labels: dict[str, int | None]
    findings: list[Finding] = field(default_factory=list)       # the positives, drawn
    uncertain: list[Finding] = field(default_factory=list)      # the -1s (location for the hedge; not drawn)

    def ones(self) -> list[str]:
        return [c for c in CONDITIONS if self.labels[c] == 1]

    def zeros(self) -> list[str]:
        return [c for c in CONDITIONS if self.labels[c] == 0]


def sample_study_labels(rng: np.random.Generator, portable: bool = False) -> StudyLabels:
    """Draw one study's labels and its findings' location/severity/shape seeds."""
    conds = list(CONDITIONS)
    w = np.array([POSITIVE_WEIGHTS[c] for c in conds])
    if portable:  # portable AP studies (ICU) more often have lines and tubes
        w[conds.index("Support Devices")] *= 3.0
    n_pos = int(rng.choice(len(N_POSITIVE_P), p=N_POSITIVE_P))
    pos = list(rng.choice(conds, size=n_pos, replace=False, p=w / w.sum())) if n_pos else []
    rest = [c for c in conds if c not in pos]
    n_unc = int(rng.choice(len(N_UNCERTAIN_P), p=N_UNCERTAIN_P))
    unc_pool = [c for c in rest if c != "Support Devices"]
    unc = list(rng.choice(unc_pool, size=min(n_unc, len(unc_pool)), replace=False)) if n_unc else []
    labels: dict[str, int | None] = {}
    for c in conds:
        if c in pos:
            labels[c] = 1
        elif c in unc:
            labels[c] = -1
        else:
            labels[c] = 0 if rng.random() < P_NEGATIVE else None
    if not any(labels[c] in (1, -1) for c in LUNGS_CLEAR) and rng.random() < P_LUNGS_CLEAR:
        labels.update(dict.fromkeys(LUNGS_CLEAR, 0))
    labels["No Finding"] = 1 if not pos and not unc else None
    labels = {c: labels[c] for c in CHEXPERT_COLUMNS}

    findings = _place(sorted(pos, key=_ZONE_ORDER_KEY), rng)
    uncertain = _place(sorted(unc, key=_ZONE_ORDER_KEY), rng)
    return StudyLabels(labels=labels, findings=findings, uncertain=uncertain)


def _ZONE_ORDER_KEY(c: str) -> tuple[int, str]:
    return (_ZONE_ORDER.index(c) if c in _ZONE_ORDER else len(_ZONE_ORDER), c)


def _place(conds: list[str], rng: np.random.Generator) -> list[Finding]:
    """Give each condition a location/severity; zone findings avoid occupied (side, zone) slots."""
    used: set[tuple[str, str]] = set()
    out: list[Finding] = []
    for c in conds:
        kind, scale = FINDING_KIND[c]
        severity = str(rng.choice(scale)) if scale else None
        seed = int(rng.integers(0, 2**31 - 1))
        device = None
        if kind is None:
            location = None
        elif kind == "bilateral":
            location = "bilateral"
        elif kind == "device":
            device = str(rng.choice(list(DEVICES), p=DEVICE_P))
            location = DEVICES[device]
        elif kind in ("side", "side_bi"):
            sides = ["right", "left"] + (["bilateral"] if kind == "side_bi" else [])
            location = str(rng.choice(sides, p=[0.4, 0.35, 0.25] if kind == "side_bi" else None))
            if c == "Pneumothorax":
                used |= {(s, "upper") for s in _sides(location)}
            if c == "Pleural Effusion":
                used |= {(s, "lower") for s in _sides(location)}
        else:
            zones = ("lower",) if kind == "zone_lower" else ("upper", "lower")
            free = [(s, z) for s in ("right", "left") for z in zones if (s, z) not in used]
            pool = free or [(s, z) for s in ("right", "left") for z in zones]
            s, z = pool[int(rng.integers(len(pool)))]
            used.add((s, z))
            location = f"{s} {z}"
        out.append(Finding(condition=c, location=location, severity=severity, seed=seed, device=device))
    return sorted(out, key=lambda f: CHEXPERT_COLUMNS.index(f.condition))


def _sides(location: str) -> list[str]:
    return ["right", "left"] if location == "bilateral" else [location]
