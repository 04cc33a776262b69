"""Phrasings for the template backends of ``nast mcq`` and ``nast affirm``.

How an option is written
------------------------
An option states a label vector over k conditions. The present conditions (label 1) form the list
``P`` and the absent ones (label 0) the list ``N``; each condition gets a *surface form* sampled from
``data/phrases.csv`` (e.g. Cardiomegaly: "cardiomegaly" or "enlarged heart"; Pleural Effusion:
"pleural effusion" or "effusion"), the order inside each list is shuffled, and a *connecting
pattern* is sampled for the option's case (mixed, all present, all absent), e.g.

    "{P} without {N}"            -> "Cardiomegaly and edema without pleural effusion"
    "{P}, but no {N}"            -> "Atelectasis, but no effusion or pneumothorax"
    "No {N}, but {P} present"    -> "No fracture, but pneumonia present"
    "{P} noted, no sign of {N}"  -> "Edema noted, no sign of consolidation or lung opacity"

``P`` is joined with "and", ``N`` with "or" ("no A or B" negates both for ConText). Negations are
placed so that their scope cannot run into a present condition (at the end of the sentence, or
closed by "but", which ConText treats as a scope terminator).

Affirmative rewrites keep the structure
---------------------------------------
Every negated pattern has an affirmative twin with the same skeleton and ``{A}`` in place of the
negated part: "{P} without {N}" -> "{P} with {A}", "No {N}, but {P} present" -> "{A}, with {P}
present" (an adversative "but" is dropped once the contrast is gone). ``A`` lists, per absent
condition, a normal-finding phrase from ``data/affirmative.csv`` (e.g. Pleural Effusion: "sharp
costophrenic angles"). The template MCQ stage stores, per option, the pattern id and the exact
surface forms it used (column ``negated_parts``, JSON), so the template affirm stage swaps only the
negated part and the present conditions keep their exact wording. When that column is missing (an
LLM-written MCQ) the template affirm stage re-renders the option from its labels with the default
pattern and the first surface form of each condition (documented fallback).

Everything is sampled from ``random.Random(f"{seed}:{study_id}:{letter}")`` (string seeding is a
stable SHA-512 in CPython), so the same seed gives the same text on every machine and run.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Sequence

#: Neutral question stems (no condition, no polarity).
QUESTION_STEMS: tuple[str, ...] = (
    "Which statement best describes this chest X-ray?",
    "Which of the following best describes the findings on this chest radiograph?",
    "Which option correctly summarizes this chest X-ray?",
    "Which description matches the findings in this radiograph?",
    "Which of these statements is consistent with this chest radiograph?",
    "Which summary best fits the findings of this chest X-ray?",
)

#: Negated connecting patterns, keyed by id; (negated pattern, affirmative twin).
MIXED_PATTERNS: dict[str, tuple[str, str]] = {
    "m_without": ("{P} without {N}", "{P} with {A}"),
    "m_evidence_without": ("Evidence of {P} without {N}", "Evidence of {P} with {A}"),
    "m_but_no": ("{P}, but no {N}", "{P}, with {A}"),
    "m_but_not": ("{P}, but not {N}", "{P}, and {A}"),
    "m_seen_but_no": ("{P} seen, but no {N}", "{P} seen, with {A}"),
    "m_present_but_no": ("{P} present, but no {N}", "{P} present, with {A}"),
    "m_noted_no_sign": ("{P} noted, no sign of {N}", "{P} noted, {A}"),
    "m_with_no_evidence": ("{P}, with no evidence of {N}", "{P}, with {A}"),
    "m_negative_for": ("Findings of {P}, negative for {N}", "Findings of {P}, with {A}"),
    "m_no_but": ("No {N}, but {P} present", "{A}, with {P} present"),
    "m_absence_but": ("Absence of {N}, but {P} noted", "{A}, with {P} noted"),
}
ALL_ABSENT_PATTERNS: dict[str, tuple[str, str]] = {
    "n_no": ("No {N}", "{A}"),
    "n_no_evidence": ("No evidence of {N}", "{A}"),
    "n_negative_for": ("Negative for {N}", "{A}"),
    "n_without": ("Without {N}", "With {A}"),
    "n_no_radiographic": ("No radiographic evidence of {N}", "{A} on this radiograph"),
    "n_absence": ("Absence of {N}", "{A}"),
}
ALL_PRESENT_PATTERNS: dict[str, tuple[str, str]] = {
    "p_bare": ("{P}", "{P}"),
    "p_present": ("{P} present", "{P} present"),
    "p_noted": ("{P} noted", "{P} noted"),
    "p_evidence": ("Evidence of {P}", "Evidence of {P}"),
    "p_findings": ("Findings of {P}", "Findings of {P}"),
    "p_seen": ("{P} seen", "{P} seen"),
}
PATTERNS: dict[str, tuple[str, str]] = {**MIXED_PATTERNS, **ALL_ABSENT_PATTERNS, **ALL_PRESENT_PATTERNS}
#: Pattern used when an affirmative option is re-rendered from labels alone.
DEFAULT_PATTERN = {"mixed": "m_without", "absent": "n_no", "present": "p_bare"}

#: The forward negation cues of the report reader's lexicon (``data/modifiers.csv``,
#: :data:`nast.text.polarity.NEGATION_CUES`) that state an absence (not "resolution of" /
#: "removal of": those say it was there before). Composite training claims and the grounding
#: benchmark's "no X" texts use them, so negation is taught and tested in the forms the pipeline
#: reads it in. A test keeps them inside the lexicon.
ABSENCE_CUES: tuple[str, ...] = ("no", "no evidence of", "without", "negative for", "free of", "absence of")


def _read_csv(name: str, value_col: str) -> dict[str, tuple[str, ...]]:
    text = (resources.files("nast.text") / "data" / name).read_text(encoding="utf-8")
    out: dict[str, list[str]] = {}
    for row in csv.DictReader(text.splitlines()):
        out.setdefault(row["condition"].strip(), []).append(row[value_col].strip())
    return {k: tuple(v) for k, v in out.items()}


@lru_cache(maxsize=1)
def surface_forms() -> dict[str, tuple[str, ...]]:
    """condition -> phrasings that state it (``data/phrases.csv``); the first is the canonical one."""
    return _read_csv("phrases.csv", "phrase")


@lru_cache(maxsize=1)
def affirmative_phrases() -> dict[str, tuple[str, ...]]:
    """condition -> normal-finding phrasings stating its absence (``data/affirmative.csv``)."""
    return _read_csv("affirmative.csv", "phrasing")


def join_list(items: Sequence[str], conj: str) -> str:
    """"a", "a and b", "a, b and c" (``conj`` = "and" | "or")."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def case_of(labels: Sequence[int]) -> str:
    ones = sum(1 for v in labels if v == 1)
    if ones == len(labels):
        return "present"
    if ones == 0:
        return "absent"
    return "mixed"


_PATTERNS_BY_CASE = {"mixed": MIXED_PATTERNS, "absent": ALL_ABSENT_PATTERNS, "present": ALL_PRESENT_PATTERNS}


@dataclass(frozen=True)
class OptionParts:
    """The structure of one written option: pattern id and (condition, surface form) per group."""

    pattern: str
    present: tuple[tuple[str, str], ...]
    absent: tuple[tuple[str, str], ...]

    def to_json(self) -> dict:
        return {"pattern": self.pattern, "present": [list(p) for p in self.present],
                "absent": [list(a) for a in self.absent]}

    @classmethod
    def from_json(cls, obj: dict) -> "OptionParts":
        return cls(obj["pattern"], tuple(tuple(p) for p in obj["present"]), tuple(tuple(a) for a in obj["absent"]))


def option_rng(seed: int, study_id: int | str, letter: str, purpose: str = "mcq") -> random.Random:
    return random.Random(f"{purpose}:{seed}:{study_id}:{letter}")


def sample_parts(conditions: Sequence[str], labels: Sequence[int], rng: random.Random,
                 patterns: dict[str, tuple[str, str]] | None = None) -> OptionParts:
    """Sample surface forms, order and pattern for one label vector (labels in {0, 1})."""
    forms = surface_forms()
    chosen = [(c, rng.choice(forms[c])) for c in conditions]
    present = [cs for cs, v in zip(chosen, labels) if v == 1]
    absent = [cs for cs, v in zip(chosen, labels) if v == 0]
    rng.shuffle(present)
    rng.shuffle(absent)
    pool = patterns if patterns is not None else _PATTERNS_BY_CASE[case_of(labels)]
    pool_ids = sorted(pid for pid in pool if pid in _PATTERNS_BY_CASE[case_of(labels)])
    pattern = rng.choice(pool_ids)
    return OptionParts(pattern, tuple(present), tuple(absent))


def render_negated(parts: OptionParts) -> str:
    template = PATTERNS[parts.pattern][0]
    return _cap(template.format(P=join_list([s for _, s in parts.present], "and"),
                                N=join_list([s for _, s in parts.absent], "or")))


def render_affirmative(parts: OptionParts, rng: random.Random) -> tuple[str, dict[str, str]]:
    """The affirmative twin: same pattern skeleton, same present wording, normal-finding phrases."""
    aff = affirmative_phrases()
    normal = {c: rng.choice(aff[c]) for c, _ in parts.absent}
    template = PATTERNS[parts.pattern][1]
    text = _cap(template.format(P=join_list([s for _, s in parts.present], "and"),
                                A=join_list([normal[c] for c, _ in parts.absent], "and")))
    return text, normal


def default_parts(conditions: Sequence[str], labels: Sequence[int]) -> OptionParts:
    """Deterministic parts from labels alone (canonical surface forms, default pattern)."""
    forms = surface_forms()
    present = tuple((c, forms[c][0]) for c, v in zip(conditions, labels) if v == 1)
    absent = tuple((c, forms[c][0]) for c, v in zip(conditions, labels) if v == 0)
    return OptionParts(DEFAULT_PATTERN[case_of(labels)], present, absent)


def pick_stem(seed: int, study_id: int | str) -> str:
    return random.Random(f"stem:{seed}:{study_id}").choice(QUESTION_STEMS)
