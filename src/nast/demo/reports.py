"""Free-text radiology reports in the MIMIC-CXR layout, consistent with the study's labels.

Layout (as in ``files/pXX/pSUBJECT/sSTUDY.txt``; every line starts with one space, lines are
wrapped at 78 characters, ``___`` marks de-identified text)::

                                     FINAL REPORT
     EXAMINATION:  CHEST (PA AND LAT)
     INDICATION:  ___F with cough  // eval
     TECHNIQUE:  Chest PA and lateral
     COMPARISON:  None.
     FINDINGS:
     ...
     IMPRESSION:
     ...

About 4 % of the reports use a single ``FINDINGS AND IMPRESSION:`` section and about 4 % have no
FINDINGS section (everything in IMPRESSION), as in the real corpus.

Sentences, by label state:

* **1**: one sentence per positive naming its location and severity, e.g. "Moderate right pleural
  effusion." or "The heart is mildly enlarged."; repeated in short form in the impression;
* **0**: either negated ("No pleural effusion.", "There is no pneumothorax.", "No evidence of
  focal consolidation.", lists "No pleural effusion, focal consolidation, or pneumothorax.") or in
  affirmative normal phrasing that covers only conditions that are all 0 ("The costophrenic
  angles are sharp.", "Heart size is normal.", "The lungs are clear.");
* **-1**: hedged ("Possible right lower lobe pneumonia.", "Pneumothorax cannot be excluded.",
  "Findings may represent atelectasis.");
* **blank**: not mentioned anywhere (the indication never names a condition either).

A sentence never mixes polarities, so sentence-level readers can recover every label.
"""

from __future__ import annotations

import textwrap

import numpy as np

from nast.demo.labels import LUNGS_CLEAR, StudyLabels
from nast.demo.phantom import Finding

ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}

#: noun phrase used when a condition is negated or hedged
NEG_NOUN: dict[str, str] = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "focal consolidation",
    "Edema": "pulmonary edema",
    "Enlarged Cardiomediastinum": "mediastinal widening",
    "Fracture": "displaced rib fracture",
    "Lung Lesion": "suspicious pulmonary nodule",
    "Lung Opacity": "focal opacity",
    "Pleural Effusion": "pleural effusion",
    "Pleural Other": "pleural thickening",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Support Devices": "indwelling lines or tubes",
}

def _neg_nouns() -> dict[str, tuple[str, ...]]:
    """Noun phrases a negation may use: the report's usual one, then the clinical surface forms of
    ``nast/text/data/phrases.csv`` (e.g. "pleural scarring", "widened mediastinum"), so the demo
    reports use the same vocabulary a real corpus (and the MCQ generator) uses."""
    from nast.text.templates import surface_forms

    forms = surface_forms()
    return {c: tuple(dict.fromkeys((n, *forms.get(c, ())))) for c, n in NEG_NOUN.items()}


NEG_NOUNS: dict[str, tuple[str, ...]] = _neg_nouns()

HEDGE_NOUN: dict[str, str] = {
    **NEG_NOUN,
    "Fracture": "rib fracture",
    "Lung Lesion": "pulmonary nodule",
    "Lung Opacity": "subtle opacity",
    "Consolidation": "consolidation",
}

#: affirmative normal sentences and the conditions each one states as 0 (used only if all are 0)
AFFIRMATIVE: list[tuple[frozenset[str], tuple[str, ...]]] = [
    (frozenset({"Cardiomegaly"}),
     ("Heart size is normal.", "The heart is normal in size.", "The cardiac silhouette is within normal limits.")),
    (frozenset({"Cardiomegaly", "Enlarged Cardiomediastinum"}),
     ("The cardiomediastinal silhouette is normal.", "Cardiomediastinal contours are within normal limits.")),
    (frozenset({"Enlarged Cardiomediastinum"}),
     ("The mediastinal contours are normal.", "Mediastinal contours are unremarkable.")),
    (frozenset({"Pleural Effusion"}),
     ("The costophrenic angles are sharp.", "Costophrenic angles are sharp bilaterally.")),
    (frozenset({"Pneumothorax", "Atelectasis"}), ("The lungs are fully expanded.", "Lungs are well expanded.")),
    (LUNGS_CLEAR, ("The lungs are clear.", "Lungs are clear bilaterally.")),
    (frozenset({"Edema"}), ("Pulmonary vascularity is normal.",)),
    (frozenset({"Fracture"}), ("The osseous structures are intact.", "Bony structures are intact.")),
    (frozenset({"Pleural Other"}), ("The pleural surfaces are smooth.",)),
]

NEG_SINGLE = ("No {a}.", "There is no {a}.", "No evidence of {a}.", "No {a} is seen.")
NEG_LIST2 = ("No {a} or {b}.", "There is no {a} or {b}.", "No evidence of {a} or {b}.")
NEG_LIST3 = ("No {a}, {b}, or {c}.", "There is no {a}, {b}, or {c}.")
HEDGES = ("Possible {a}.", "{A} cannot be excluded.", "Cannot exclude {a}.", "Findings may represent {a}.",
          "Questionable {a}.")

COMPLAINTS = ("shortness of breath", "cough", "chest pain", "fever", "hypoxia", "dyspnea on exertion",
              "weakness", "tachycardia", "preoperative evaluation", "fall", "productive cough and fever")
INDICATIONS = ("___-year-old {sexw} with {c}.", "___{sex} with {c}  // eval",
               "___{sex} with {c}. Evaluate for acute process.",
               "History: ___{sex} with {c}", "___{sex} with {c}  // ? acute process")
COMPARISONS_FIRST = ("None.", "___.", "None available.")
COMPARISONS_LATER = ("___.", "Chest radiograph from ___.", "Prior chest radiographs ___.")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _lobe(f: Finding) -> str:
    return f"{f.location} lobe"


def positive_sentences(f: Finding, rng: np.random.Generator) -> tuple[str, str]:
    """(findings sentence, impression sentence) for one drawn positive, stating location/severity."""
    c, sev, loc = f.condition, f.severity, f.location
    if c == "Support Devices":
        s = {
            "ett": "Endotracheal tube terminates approximately 4 cm above the carina.",
            "ij_line": "Right internal jugular central venous catheter terminates at the cavoatrial junction.",
            "pacemaker": "Left chest wall pacemaker with intact leads.",
            "enteric_tube": "Enteric tube courses below the diaphragm into the stomach.",
        }[f.device]
        return s, s
    if c == "Fracture":
        short = f"Acute {loc} lateral rib fractures."
        return _pick(rng, (short, f"There are acute fractures of two adjacent {loc} lateral ribs.")), short
    if c == "Cardiomegaly":
        short = f"{_cap(sev)} cardiomegaly."
        return _pick(rng, (short, f"The heart is {ADVERB[sev]} enlarged.",
                           f"{_cap(ADVERB[sev])} enlarged heart.")), short
    if c == "Enlarged Cardiomediastinum":
        short = f"{_cap(sev)} widening of the mediastinum."
        return _pick(rng, (short, f"The mediastinum is {ADVERB[sev]} widened.",
                           f"{_cap(ADVERB[sev])} widened mediastinum.")), short
    if c == "Edema":
        short = f"{_cap(sev)} bilateral pulmonary edema."
        return _pick(rng, (short, f"There is {sev} bilateral perihilar edema.")), short
    if c == "Pleural Effusion":
        if loc == "bilateral":
            short = f"{_cap(sev)} bilateral pleural effusions."
            return _pick(rng, (short, f"There are {sev} bilateral pleural effusions.")), short
        short = f"{_cap(sev)} {loc} pleural effusion."
        return _pick(rng, (short, f"There is a {sev} {loc} pleural effusion.")), short
    if c == "Pneumothorax":
        short = f"{_cap(sev)} {loc} apical pneumothorax."
        return _pick(rng, (short, f"There is a {sev} {loc} pneumothorax.")), short
    if c == "Pleural Other":
        short = f"{_cap(sev)} {loc} pleural thickening."
        return _pick(rng, (short, f"There is {sev} pleural thickening along the {loc} lateral chest wall.",
                           f"{_cap(sev)} {loc} pleural scarring.")), short
    lobe = _lobe(f)
    if c == "Atelectasis":
        short = f"{_cap(sev)} {lobe} atelectasis."
        return _pick(rng, (short, f"There is {sev} atelectasis in the {lobe}.",
                           f"{_cap(sev)} {lobe} atelectatic change.")), short
    if c == "Consolidation":
        short = f"{_cap(sev)} {lobe} consolidation."
        return _pick(rng, (short, f"There is a {sev} area of consolidation in the {lobe}.",
                           f"{_cap(sev)} {lobe} airspace consolidation.")), short
    if c == "Lung Lesion":
        noun = "mass" if sev == "large" else "nodule"
        short = f"{_cap(sev)} {lobe} {noun}."
        return _pick(rng, (short, f"There is a {sev} {noun} in the {lobe}.")), short
    if c == "Lung Opacity":
        short = f"{_cap(sev)} {lobe} opacity."
        return _pick(rng, (short, f"There is a {sev} opacity in the {lobe}.",
                           f"{_cap(sev)} {lobe} airspace opacity.")), short
    if c == "Pneumonia":
        short = f"{_cap(sev)} {lobe} pneumonia."
        return _pick(rng, (short, f"Findings in the {lobe} are consistent with {sev} pneumonia.")), short
    raise ValueError(f"no positive template for {c!r}")


def hedged_sentence(f: Finding, rng: np.random.Generator) -> str:
    """A hedged mention of an uncertain (-1) condition."""
    noun = HEDGE_NOUN[f.condition]
    if f.location and f.location not in ("bilateral",) and rng.random() < 0.5:
        loc = f.location
        noun = f"{loc} lobe {noun}" if len(loc.split()) == 2 else f"{loc} {noun}"
    return _pick(rng, HEDGES).format(a=noun, A=_cap(noun))


def zero_sentences(zeros: list[str], rng: np.random.Generator, p_affirm: float = 0.5) -> list[str]:
    """State every 0-condition: affirmative normal phrasing (whole group 0) or negation (lists)."""
    zero_set = set(zeros)
    covered: set[str] = set()
    out: list[str] = []
    for i in rng.permutation(len(AFFIRMATIVE)):
        members, sents = AFFIRMATIVE[int(i)]
        p = 0.85 if members == LUNGS_CLEAR else p_affirm
        if members <= zero_set and not members <= covered and rng.random() < p:
            out.append(_pick(rng, sents))
            covered |= members
    rest = [c for c in zeros if c not in covered]
    if "Support Devices" in rest:
        rest.remove("Support Devices")
        out.append(_pick(rng, ("No indwelling lines or tubes.", "No support devices are present.",
                               "No monitoring devices.")))
    order = [rest[int(i)] for i in rng.permutation(len(rest))]
    while order:
        n = min(len(order), int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2])))
        chunk, order = order[:n], order[n:]
        nouns = [_pick(rng, NEG_NOUNS[c]) for c in chunk]
        tmpl = _pick(rng, (NEG_SINGLE, NEG_LIST2, NEG_LIST3)[n - 1])
        out.append(_cap(tmpl.format(a=nouns[0], b=nouns[1] if n > 1 else "", c=nouns[2] if n > 2 else "")))
    return out


def _wrap(text: str) -> list[str]:
    return [" " + line for line in textwrap.wrap(text, width=77)] or [" "]


def compose_report(
    study: StudyLabels,
    rng: np.random.Generator,
    *,
    views: list[str],
    sex: str,
    first_study: bool,
) -> tuple[str, str]:
    """Return (report text, section layout) where layout is standard|combined|impression_only."""
    portable = "AP" in views
    has_lat = "LATERAL" in views
    exam = "CHEST (PORTABLE AP)" if portable else ("CHEST (PA AND LAT)" if has_lat else "CHEST (PA)")
    technique = ("Portable AP chest radiograph." if portable else
                 "Chest PA and lateral." if has_lat else "Single PA view of the chest.")
    ind = _pick(rng, INDICATIONS).format(sexw="man" if sex == "M" else "woman", sex=sex, c=_pick(rng, COMPLAINTS))
    comparison = _pick(rng, COMPARISONS_FIRST if first_study else COMPARISONS_LATER)

    device_s, pos_s, imp_s = [], [], []
    for f in study.findings:
        full, short = positive_sentences(f, rng)
        if f.condition == "Support Devices":
            device_s.append(full)
        else:
            pos_s.append(full)
            imp_s.append(short)
    hedge_s = [hedged_sentence(f, rng) for f in study.uncertain]
    zero_s = zero_sentences(study.zeros(), rng)
    body = pos_s + hedge_s + zero_s
    body = [body[int(i)] for i in rng.permutation(len(body))]
    findings = device_s + body
    impression = imp_s + [hedged_sentence(f, rng) for f in study.uncertain]
    if not impression:
        impression = [_pick(rng, ("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality."))]

    u = rng.random()
    layout = "combined" if u < 0.04 else "impression_only" if u < 0.08 else "standard"
    lines = ["                                 FINAL REPORT",
             " EXAMINATION:  " + exam, " ",
             *_wrap("INDICATION:  " + ind), " ",
             " TECHNIQUE:  " + technique, " ",
             " COMPARISON:  " + comparison, " "]
    if layout == "combined":
        lines += [" FINDINGS AND IMPRESSION: ", " ",
                  *_wrap(" ".join(findings + ([] if imp_s or hedge_s else impression))), " "]
    elif layout == "impression_only":
        lines += [" IMPRESSION: ", " ", *_wrap(" ".join(findings + impression)), " "]
    else:
        lines += [" FINDINGS: ", " ", *_wrap(" ".join(findings)), " ",
                  " IMPRESSION: ", " ", *_wrap(" ".join(impression)), " "]
    return "\n".join(lines) + "\n", layout
