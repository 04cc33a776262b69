"""Negation-aware report reader built on medspaCy ConText: mentions, polarity, location, severity.

Method
------
1. **Sentences** — medspaCy's tokenizer and spaCy's punctuation ``sentencizer`` (PyRuSH, medspaCy's
   default, is available via ``get_nlp("pyrush")``; it is two orders of magnitude slower here). MIMIC's
   ``___`` placeholders become ``XXXX`` and a missing space after a full stop ("apex.There") is
   restored first, so de-identification never breaks sentence splitting or matching.
2. **Targets** — a medspaCy ``TargetMatcher`` with one rule per row of ``data/targets.csv``
   (``finding, literal, pattern, polarity``). ``finding`` is a CheXpert name (``|`` joins several
   names a phrase speaks to, e.g. "cardiomediastinal silhouette is normal" → Cardiomegaly and Enlarged
   Cardiomediastinum), or ``_lookalike`` for phrases that contain a finding word but are another thing
   ("pericardial effusion", "calcified granuloma"): the matcher keeps the longest match, so the
   look-alike swallows the finding word and is then ignored. ``pattern`` (optional) is a regular
   expression used instead of the literal. ``polarity = negative`` marks *affirmative-normal* phrases
   ("heart size is normal", "costophrenic angles are sharp", "lungs are clear") that state a finding
   is absent without any negation word. ``polarity = hedged`` marks words that suggest a finding
   without naming it ("infection", "infectious process": CheXpert reads them as Pneumonia, Open-i's
   manual MeSH never codes them so): such a mention is uncertain at most (negated stays negative), and
   it does not make a named mention of the finding in its sentence uncertain.
3. **Modifiers** — medspaCy ``ConText`` with the rules of ``data/modifiers.csv`` only (medspaCy's
   general clinical defaults are *not* loaded: several of them misfire on radiology text). Categories:

   - ``NEGATED_EXISTENCE`` (FORWARD "no", "without", "no evidence of"...; BACKWARD "is not seen",
     "has resolved"...). A FORWARD cue scopes to the end of the sentence, so a list after "no" is
     negated as a whole ("no effusion, consolidation or pneumothorax").
   - ``PSEUDO`` rules (direction ``PSEUDO``) for phrases that contain a negation word but do not negate
     ("no change in the small left effusion", "not well seen"); ConText keeps the longest cue, so the
     pseudo-negation hides the "no" inside it.
   - ``POSSIBLE_EXISTENCE`` hedges ("may represent", "cannot exclude", "possible", "suspicious for",
     "differential diagnosis including") → uncertain. "likely"/"probable"/"consistent with" are *not*
     hedges here: the radiologist commits to the finding (and Open-i's manual MeSH codes them as
     present). Nor is a bare "A versus B" ("bibasilar atelectasis versus scarring"): it names the
     alternatives for what is seen, and MeSH codes each as present; CheXpert's ``conj:versus`` makes
     both uncertain. "versus" is a coordination here, so another hedge in the sentence ("question A
     versus B", "may represent A versus B") still makes both uncertain.
   - ``HYPOTHETICAL`` ("rule out", "evaluate for", "recommend") → uncertain; ``HISTORICAL``
     ("history of") and ``FAMILY`` mentions are dropped (not a claim about this image).
   - ``TERMINATE`` ("but", "however", "which", "there is", "stable", ";") ends any cue's scope:
     "no effusion, but there is consolidation".
   - ``LATERALITY``, ``ZONE``, ``SEVERITY`` carry a ``norm`` value; they are bidirectional with a
     small window, ``max_targets = 1`` (each word attaches to the nearest finding only) and
     ``terminated_by = CONJUNCTION`` (a PSEUDO rule for "and", "or", "with", "versus", ","), so in
     "right upper lobe opacity and small left effusion" "small" and "left" cannot reach back to the
     opacity.

   Polarity of a mention: ``negative`` when the target row says so; else negated → ``negative``, else
   hedged/hypothetical → ``uncertain``, else ``positive``. Negation wins over a hedge inside its scope
   ("no definite consolidation" is negative) except that the dedicated "cannot exclude" cues are
   themselves hedges.
4. **Sentence rules** (:func:`mentions_from_doc`), after ConText:

   - one polarity per finding and sentence: a hedged mention makes the positive mentions of the
     same finding in its sentence uncertain ("blunting of the right costophrenic sulcus could be
     secondary to a small effusion versus scarring" is an uncertain effusion, not also a positive
     one); for the descriptive Lung Opacity and Lung Lesion the seen opacity or nodule wins instead
     ("opacity, may represent infiltrate" is a present opacity);
   - a side travels along a link: a lateral finding with no side word of its own takes the side of
     the mention just before it in the sentence when only a coordination or a link ("consistent
     with", "compatible with", "may represent", "due to"...) lies between them ("left lower lobe
     atelectasis infiltrate and effusion", "blunting of the right costophrenic angle, consistent
     with a small effusion"); :func:`side_link`. A plural pleural finding without a side word
     ("small effusions") is bilateral, and so are "lung bases", "apices", plural lobes or zones ("in the
     lower lobes", "upper lungs") and "throughout the lungs" (``data/modifiers.csv``);
   - a side word ConText could not attach still reaches a lateral finding without a side
     (:func:`_resolve_sides`): the side word before it across a short gap ("chronic right middle
     lobe scar and atelectasis", "in the left lower lobe there is airspace disease"), a location
     phrase after it ("atelectasis or scar in the left lung base", "old fracture, right clavicle"),
     and back along a coordination from such a phrase ("fractures and pleural thickening on the
     right"); "left greater than right" is bilateral, and so is "basilar" in a sentence without any
     side word ("mild basilar atelectasis": both bases).
5. ``check(text, conditions)`` aggregates mentions per condition: present beats uncertain beats
   absent; a condition never mentioned is ``None`` (the verifier's view; ``nast label`` puts
   positive first as well by default, as the CheXpert labeler does, :mod:`nast.text.label`).

One ``nlp`` object per process (``get_nlp()`` is cached); ``medspacy.load(medspacy_enable=[...])`` builds a blank
English pipeline, nothing is downloaded.
"""

from __future__ import annotations

import csv
import functools
import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

from nast.conditions import CONDITIONS

DATA_DIR = Path(str(resources.files("nast.text") / "data"))
TARGETS_CSV = DATA_DIR / "targets.csv"
MODIFIERS_CSV = DATA_DIR / "modifiers.csv"

LOOKALIKE = "_lookalike"
CONTEXT_CATEGORIES = ("NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "HYPOTHETICAL", "HISTORICAL", "FAMILY")
ATTRIBUTE_CATEGORIES = ("LATERALITY", "ZONE", "SEVERITY")
STATE_RANK = {"present": 3, "uncertain": 2, "absent": 1}
POLARITY_TO_STATE = {"positive": "present", "negative": "absent", "uncertain": "uncertain"}


# --------------------------------------------------------------------------- lexicon (data files)
def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh)]


@functools.lru_cache(maxsize=None)
def target_rows() -> tuple[dict[str, str], ...]:
    rows = _read_csv(TARGETS_CSV)
    for row in rows:
        for name in row["finding"].split("|"):
            if name != LOOKALIKE and name not in CONDITIONS:
                raise ValueError(f"{TARGETS_CSV}: unknown finding {name!r} (literal {row['literal']!r})")
        if row["polarity"] not in ("", "negative", "hedged"):
            raise ValueError(f"{TARGETS_CSV}: polarity must be empty, 'negative' or 'hedged': {row}")
    return tuple(rows)


@functools.lru_cache(maxsize=None)
def modifier_rows() -> tuple[dict[str, str], ...]:
    return tuple(_read_csv(MODIFIERS_CSV))


def _negation_cues() -> tuple[str, ...]:
    cues = []
    for row in modifier_rows():
        if row["category"] == "NEGATED_EXISTENCE" and row["direction"] != "PSEUDO":
            cues.append(row["literal"])
    return tuple(cues)


#: The negation lexicon (ConText NEGATED_EXISTENCE cues, pseudo-negations excluded), for reuse.
NEGATION_CUES: tuple[str, ...] = _negation_cues()


def _norm(row: dict[str, str]) -> dict:
    return {"norm": row["norm"]} if row.get("norm") else {}


def build_rules():
    """The medspaCy rule objects built from the CSV lexicon: (target_rules, context_rules)."""
    from medspacy.context import ConTextRule
    from medspacy.ner import TargetRule

    targets = []
    for row in target_rows():
        label = row["finding"]
        targets.append(
            TargetRule(
                literal=row["literal"],
                category=label,
                pattern=row["pattern"] or None,
                metadata={"polarity": row["polarity"] or None},
            )
        )
    modifiers = []
    for row in modifier_rows():
        direction = row["direction"]
        category = row["category"]
        modifiers.append(
            ConTextRule(
                literal=row["literal"],
                category=category,
                pattern=row["pattern"] or None,
                direction=direction,
                max_scope=int(row["max_scope"]) if row["max_scope"] else None,
                max_targets=int(row["max_targets"]) if row["max_targets"] else None,
                terminated_by=set(row["terminated_by"].split("|")) if row.get("terminated_by") else None,
                metadata=_norm(row),
            )
        )
    return targets, modifiers


#: Sentence splitter: spaCy's rule-based "sentencizer" (punctuation) by default. medspaCy's PyRuSH
#: (pure-Python character rules) took ~6 ms per report section against <0.1 ms on Open-i.
SENTENCE_SPLITTER = "sentencizer"


@functools.lru_cache(maxsize=2)
def get_nlp(splitter: str | None = None):
    """The one medspaCy pipeline of this process (sentences, TargetMatcher, ConText); cached."""
    import medspacy

    splitter = splitter or SENTENCE_SPLITTER
    if splitter not in ("sentencizer", "pyrush"):
        raise ValueError(f"unknown sentence splitter {splitter!r} (sentencizer | pyrush)")
    enable = ["medspacy_tokenizer", "medspacy_target_matcher"]
    if splitter == "pyrush":
        from loguru import logger

        logger.disable("PyRuSH")  # PyRuSH logs every sentence at DEBUG level through loguru
        enable.insert(1, "medspacy_pyrush")
    nlp = medspacy.load(medspacy_enable=enable, load_rules=False)
    if splitter == "sentencizer":
        nlp.add_pipe("sentencizer", before="medspacy_target_matcher")
    targets, modifiers = build_rules()
    nlp.get_pipe("medspacy_target_matcher").add(targets)
    context = nlp.add_pipe("medspacy_context", config={"rules": None})
    context.add(modifiers)
    _speed_up_regex_matchers(nlp)
    return nlp


def _speed_up_regex_matchers(nlp) -> None:
    """medspaCy 1.3's ``RegexMatcher.__call__`` rebuilds ``doc.text_with_ws`` (a join over every
    token) once per regular expression; with this lexicon's ~100 patterns that was over half of
    the reader's time. Give the two matchers of *this* pipeline a subclass that builds the text once
    per doc; the matches are the same (``doc.text`` is ``doc.text_with_ws``)."""
    for pipe_name, attr in (("medspacy_target_matcher", "_TargetMatcher__matcher"),
                            ("medspacy_context", "_ConText__matcher")):
        matcher = getattr(nlp.get_pipe(pipe_name), attr, None)
        regex = getattr(matcher, "_MedspacyMatcher__regex_matcher", None)
        if regex is not None and type(regex).__name__ == "RegexMatcher":
            regex.__class__ = _one_text_regex_matcher()
            for match_id, patterns in regex._patterns.items():
                regex._patterns[match_id] = [first_char_guard(p) for p in patterns]


def _first_chars(items) -> tuple[frozenset[str] | None, bool]:
    """(the characters a parsed regular expression can start with, whether it can match empty);
    ``None`` for the characters when they cannot be listed (``.``, ``\\w``, a negated set...)."""
    from re import _constants as c

    chars: set[str] = set()
    for op, av in items:
        if op is c.LITERAL:
            return frozenset(chars | {chr(av)}), False
        if op is c.IN:
            for iop, iav in av:
                if iop is c.LITERAL:
                    chars.add(chr(iav))
                elif iop is c.RANGE and iav[1] - iav[0] < 64:
                    chars.update(chr(k) for k in range(iav[0], iav[1] + 1))
                else:  # a category (\\d, \\s, \\w: Unicode-wide), a negated set, a wide range
                    return None, False
            return frozenset(chars), False
        if op is c.AT or op in (c.ASSERT, c.ASSERT_NOT):
            continue  # zero-width: the next item decides
        if op is c.SUBPATTERN:
            sub, nullable = _first_chars(av[3])
        elif op is c.BRANCH:
            sub, nullable = set(), False
            for branch in av[1]:
                b, bn = _first_chars(branch)
                if b is None:
                    return None, False
                sub |= b
                nullable = nullable or bn
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
            sub, nullable = _first_chars(av[2])
            nullable = nullable or av[0] == 0
        else:
            return None, False
        if sub is None:
            return None, False
        chars |= sub
        if not nullable:
            return frozenset(chars), False
    return frozenset(chars), True


def first_char_guard(pattern: re.Pattern) -> re.Pattern:
    """``pattern`` behind a look-ahead for the characters it can start with, ``(?=[...])``: the same
    matches (a zero-width test that every match passes), found faster, as Python's ``re`` then
    skips the positions where no match can start instead of trying every alternative there (a
    leading ``\\b`` or alternation otherwise defeats its own prefix scan). Unchanged when the
    first characters cannot be listed or the pattern can match empty."""
    from re import _parser

    try:
        chars, nullable = _first_chars(_parser.parse(pattern.pattern, pattern.flags))
    except Exception:  # noqa: BLE001 - an unexpected parse tree: leave the pattern as it is
        return pattern
    if chars is None or nullable or not chars:
        return pattern
    if pattern.flags & re.IGNORECASE:
        chars = frozenset(chars | {ch.lower() for ch in chars} | {ch.upper() for ch in chars})
    guard = "(?=[" + "".join(re.escape(ch) for ch in sorted(chars)) + "])"
    return re.compile(guard + pattern.pattern, pattern.flags)


@functools.lru_cache(maxsize=1)
def _one_text_regex_matcher():
    from medspacy.common.regex_matcher import RegexMatcher
    from medspacy.common.util import get_token_for_char

    class OneTextRegexMatcher(RegexMatcher):
        def __call__(self, doc):
            matches = []
            text = doc.text
            for match_id, patterns in self._patterns.items():
                on_match = self._callbacks[match_id]
                for pattern in patterns:
                    for re_match in pattern.finditer(text):
                        span = doc.char_span(re_match.start(), re_match.end())
                        if span is None:
                            start = get_token_for_char(doc, re_match.start(), resolve=self.resolve_start)
                            end = get_token_for_char(doc, re_match.end(), resolve=self.resolve_end)
                            span = doc[start.i: len(doc) if end is None else end.i]
                        if len(span):
                            matches.append((match_id, span.start, span.end))
                        if on_match is not None:
                            on_match(self, doc, len(matches) - 1, matches)
            return matches

    return OneTextRegexMatcher


# --------------------------------------------------------------------------- mentions
_WS = re.compile(r"\s+")
_PLACEHOLDER = re.compile(r"_{2,}")


def normalise_text(text: str | None) -> str:
    """Whitespace-normalise; MIMIC ``___`` placeholders become ``XXXX`` (one token, no sentence break)."""
    if not text:
        return ""
    text = _PLACEHOLDER.sub("XXXX", str(text))
    # a sentence glued to the next one ("apex.There are") gets its missing space back
    text = re.sub(r"([a-z])\.([A-Z][a-z])", r"\1. \2", text)
    # a doubled full stop ("effusion.. Left") is one sentence end, not an abbreviation
    text = re.sub(r"(?<=\w)\.{2,}(?=\s|$)", ".", text)
    return _WS.sub(" ", text).strip()


@dataclass(frozen=True)
class Mention:
    finding: str
    polarity: str  # positive | negative | uncertain
    location: str | None
    severity: str | None
    evidence: str
    start_char: int
    text: str


@functools.lru_cache(maxsize=None)
def _attribute_patterns() -> tuple[tuple[str, re.Pattern, str], ...]:
    return tuple((row["category"], re.compile(row["pattern"], flags=re.I), row["norm"])
                 for row in modifier_rows() if row["category"] in ATTRIBUTE_CATEGORIES and row["pattern"])


def _attributes_from_span(span) -> dict[str, str]:
    """Severity / laterality words inside a target span ("heart is mildly enlarged")."""
    found: dict[str, str] = {}
    text = span.text
    for category, pattern, norm in _attribute_patterns():
        if category not in found and pattern.search(text):
            found[category] = norm
    return found


def _location(laterality: str | None, zone: str | None) -> str | None:
    parts: list[str] = []
    if zone and " " in zone:  # "bilateral basilar" from bibasilar
        zl, zone = zone.split(" ", 1)
        laterality = laterality or zl
    if laterality:
        parts.append(laterality)
    if zone:
        parts.append(zone)
    return " ".join(parts) or None


#: Descriptive findings: what is seen is present whatever it may represent, so within a sentence a
#: positive mention makes the hedged ones positive ("right basilar opacity may represent
#: infiltrate" is a present Lung Opacity, "a nodule which may represent a metastasis" a present
#: Lung Lesion). For every other finding a hedge wins in its sentence.
OBSERVATION_FINDINGS = frozenset({"Lung Opacity", "Lung Lesion"})
#: Findings that have a side: a side word can be carried to them along a link (below).
LATERAL_FINDINGS = frozenset({
    "Atelectasis", "Consolidation", "Edema", "Fracture", "Lung Lesion", "Lung Opacity", "Pleural Effusion",
    "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
})
_ADJ = (r"(?:(?:a|an|the|some|small|mild|minimal|minor|trace|tiny|moderate|large|associated|adjacent|"
        r"patchy|focal|subsegmental|possible|probable|likely|early|developing|underlying|residual|"
        r"loculated|layering|posterior|lateral|medial|anterior)\s+){0,3}")
#: The text between two mentions of one sentence that lets the first one's side reach the second:
#: a coordination ("left lower lobe atelectasis[,] infiltrate and effusion") or a link that names
#: what the first finding is ("blunting of the right costophrenic angle, consistent with a small
#: effusion", "left basilar opacity compatible with some effusion", "... may represent atelectasis").
SIDE_LINK = re.compile(
    r"\s*(?:[,/]\s*)?(?:(?:and|or|with|and/or|plus)\s+)?" + _ADJ + r"|"
    r"\s*,?\s*(?:(?:which|that)\s+)?(?:(?:is|are|may be|could be|likely|most likely|probably|possibly|"
    r"most|also|again)\s+)*(?:consistent with|compatible with|suggestive of|suspicious for|"
    r"concerning for|representing|represents?|reflecting|reflects?|due to|secondary to|related to|"
    r"(?:may|might|could|can)\s+(?:also\s+)?(?:represent|reflect|be(?:\s+(?:due|secondary|related)\s+to)?)"
    r")\s+(?:(?:a|an)\s+)?" + _ADJ,
    re.I,
)


#: A plural pleural finding without a side word is on both sides ("small pleural effusions").
_PLURAL_BILATERAL = re.compile(r"\b(?:effusions|pneumothoraces)$", re.I)
_GAP_WORD = re.compile(r"[A-Za-z]+(?:[-/][A-Za-z]+)*")
_GAP_STOP = re.compile(
    r"[;:]|\b\d+\.\s|\b(?:no|not|without|negative|free|but|however|although|though|while|whereas|except|"
    r"otherwise|contralateral|opposite|elsewhere|other|heart|cardiac|mediastinum|mediastinal)\b", re.I)
_SIDE_WORDS = {"left": "left", "right": "right", "bilateral": "bilateral", "bilaterally": "bilateral",
               "both": "bilateral", "bibasilar": "bilateral", "biapical": "bilateral"}
#: Words of a location phrase ("in the left lung base") that do not count towards the gap.
_LOCATION_WORDS = frozenset({"in", "at", "of", "the", "left", "right", "bilateral", "both", "lung", "lungs", "base",
                             "bases", "lobe", "lobes", "upper", "lower", "middle", "apex", "apical", "basilar", "zone"})
#: At most this many words between two mentions for a side to travel between them.
SIDE_GAP_WORDS = 6


def side_link(gap: str, side: str) -> bool:
    """True when ``side`` (of the mention before ``gap``) reaches the mention after it: the gap is a
    :data:`SIDE_LINK`, or any short gap (at most :data:`SIDE_GAP_WORDS` words besides location
    words such as "in the left lung base"; Open-i's ``XXXX`` placeholders count as words) without a
    negation, a contrast ("but", "contralateral"), a list number, a semicolon, another organ, or a
    side word other than ``side``."""
    if SIDE_LINK.fullmatch(gap):
        return True
    words = _GAP_WORD.findall(gap)
    if sum(w.lower() not in _LOCATION_WORDS for w in words) > SIDE_GAP_WORDS or _GAP_STOP.search(gap):
        return False
    return all(_SIDE_WORDS.get(w.lower(), side) == side for w in words)


#: A side word of the text (for :func:`_resolve_sides`): "left", "right-sided", "bilateral",
#: "both", "bibasilar"; "left greater than right" (both sides, one worse) is one bilateral word.
_SIDE_TEXT = re.compile(
    r"\b(?:(?:left|right)(?:[- ]sided)?(?:\s+(?:(?:slightly|much|somewhat)\s+)?(?:greater|worse|more|larger|"
    r"more prominent)\s+(?:than|on the \w+ than)\s+(?:the\s+|on the\s+)?(?:left|right))?|bilateral(?:ly)?|both|"
    r"bibasilar|bibasal|bibasally|biapical|(?:lung )?bases|(?:lung )?apices)\b", re.I)
#: A side word followed by one of these names a heart chamber or an airway, not the side of a finding
#: ("tip in the right atrium", "right mainstem bronchus").
_NOT_A_SIDE = re.compile(r"\s+(?:atri|ventric|heart|mainstem|main stem|paratracheal|paraspinal)", re.I)
#: A location phrase after a finding ("atelectasis in the left lung base", "nodule projecting over
#: the right 6th rib", "fracture, right mid clavicle") has one of these words in it, or is just a comma.
_POSTPOSED = re.compile(r"\b(?:in|at|within|on|of|along|involving|over|overlying|projecting|throughout|near|"
                        r"measuring)\b|^\s*,\s*$", re.I)
_COORDINATION = re.compile(r"\s*(?:[,/]\s*)?(?:(?:and|or|and/or|with)\s+)?" + _ADJ, re.I)


def _side_of(word: str) -> str:
    w = word.lower()
    if " than " in w:
        return "bilateral"
    return _SIDE_WORDS.get(re.split(r"[- ]", w)[0], "bilateral")


def _premodifies(text: str) -> bool:
    """True when ``text`` (between a side word and the next mention) is a few location or adjective
    words only, so the side word belongs to that next mention ("right lower lobe consolidation")."""
    words = _GAP_WORD.findall(text)
    return len(words) <= 3 and not re.search(r"[,;:]", text) and all(
        w.lower() in _LOCATION_WORDS or re.fullmatch(_ADJ, w + " ", re.I) for w in words)


def _resolve_sides(doc, recs: list[dict]) -> None:
    """Sides for lateral mentions that ConText left without one (after the forward chain):

    * **a side word before it** in the sentence, with no other mention in between and a gap that
      :func:`side_link` accepts ("chronic right middle lobe scar and atelectasis", "in the left
      lower lobe there is airspace disease", "bilateral rib deformities compatible with old fractures");
    * **a location phrase after it** ("atelectasis or scar in the left lung base", "old fracture,
      right mid clavicle", "densities, left lung base"), when the side word is not the premodifier of a
      later mention ("effusion, right lower lobe consolidation");
    * **back along a coordination** from a mention whose side came after it ("atelectasis /
      airspace disease within the right lung base", "old rib fractures and pleural thickening on
      the right").
    """
    sents: dict[int, list[int]] = {}
    todo: set[int] = set()
    for k, r in enumerate(recs):
        if not r["lookalike"]:
            sents.setdefault(r["sent"], []).append(k)
            if "LATERALITY" not in r["attrs"] and set(r["findings"]) <= LATERAL_FINDINGS:
                todo.add(r["sent"])
    if not todo:
        return
    text = doc.text
    all_spans = [(r["ent"].start_char, r["ent"].end_char) for r in recs]  # look-alikes too
    for sent_start in todo:
        ks = sents[sent_start]
        lo, hi = max(sent_start, 0), recs[ks[0]]["sent_end"]
        spans = [(a, b) for a, b in all_spans if a >= lo and b <= hi]
        words = [(m.start() + lo, m.end() + lo, _side_of(m.group(0))) for m in _SIDE_TEXT.finditer(text[lo:hi])
                 if not _NOT_A_SIDE.match(text, m.end() + lo)
                 and not any(a <= m.start() + lo < b for a, b in spans)]
        if not words:
            for k in ks:  # "basilar atelectasis" with no side word in the sentence: both bases
                r = recs[k]
                if "LATERALITY" not in r["attrs"] and r["attrs"].get("ZONE") == "basilar" and \
                        set(r["findings"]) <= LATERAL_FINDINGS:
                    r["attrs"]["LATERALITY"] = "bilateral"
            continue
        for k in ks:
            r = recs[k]
            if "LATERALITY" in r["attrs"] or not set(r["findings"]) <= LATERAL_FINDINGS:
                continue
            start, end = r["ent"].start_char, r["ent"].end_char
            before = [w for w in words if w[1] <= start]
            if before:
                ws, we, side = before[-1]
                if not any(we <= a and b <= start for a, b in spans) and side_link(text[we:start], side):
                    r["attrs"]["LATERALITY"] = side
                    continue
            after = [w for w in words if w[0] >= end]
            if after:
                ws, we, side = after[0]
                gap = text[end:ws]
                nxt = [a for a, b in spans if a >= we]
                if (not any(end <= a and b <= ws for a, b in spans) and _POSTPOSED.search(gap)
                        and side_link(gap, side) and not (nxt and _premodifies(text[we:min(nxt)]))):
                    r["attrs"]["LATERALITY"] = side
                    r["side_after"] = True
        for i in range(len(ks) - 2, -1, -1):
            r, nx = recs[ks[i]], recs[ks[i + 1]]
            if ("LATERALITY" not in r["attrs"] and set(r["findings"]) <= LATERAL_FINDINGS and nx.get("side_after")
                    and _COORDINATION.fullmatch(text[r["ent"].end_char:nx["ent"].start_char])):
                r["attrs"]["LATERALITY"] = nx["attrs"]["LATERALITY"]
                r["side_after"] = True


def _side_chain(doc, recs: list[dict]) -> None:
    """A lateral mention without a side takes the side of the mention just before it when
    :func:`side_link` accepts the text between them."""
    prev = None
    for r in recs:
        if (prev is not None and not prev["lookalike"] and not r["lookalike"] and r["sent"] == prev["sent"]
                and "LATERALITY" not in r["attrs"] and set(r["findings"]) <= LATERAL_FINDINGS):
            side = prev["attrs"].get("LATERALITY")
            if not side and (prev["attrs"].get("ZONE") or "").startswith("bilateral "):
                side = "bilateral"  # bibasilar, biapical
            if side and side_link(doc.text[prev["ent"].end_char:r["ent"].start_char], side):
                r["attrs"]["LATERALITY"] = side
        prev = r


def mentions_from_doc(doc) -> list[Mention]:
    """Mentions of one parsed doc, after two sentence-level rules (see the module docstring):

    * **one polarity per finding and sentence**: when a finding is uncertain somewhere in a sentence,
      its positive mentions in that sentence become uncertain too ("blunting of the right
      costophrenic sulcus could be secondary to a small effusion versus scarring" is an uncertain
      effusion), except for the descriptive :data:`OBSERVATION_FINDINGS`, where the seen thing
      makes the hedged mentions positive instead ("opacity, may represent infiltrate"); a word of a
      ``hedged`` target row is the other way round: it takes the polarity of a named positive
      mention beside it ("pneumonia, an infectious process") and never hedges that one;
    * **a side travels along a link**: a lateral finding without a side word of its own takes the
      side of the mention just before it in the sentence when :func:`side_link` accepts the text
      between them (a look-alike or historical mention in between breaks the chain).
    """
    recs: list[dict] = []
    for ent in doc.ents:
        label = ent.label_
        if label == LOOKALIKE:
            recs.append({"ent": ent, "lookalike": True})
            continue
        cats: dict[str, list] = {}
        for mod in ent._.modifiers:
            cats.setdefault(mod.category, []).append(mod)
        if "HISTORICAL" in cats or "FAMILY" in cats:
            recs.append({"ent": ent, "lookalike": True})
            continue
        row_polarity = (ent._.target_rule.metadata or {}).get("polarity") if ent._.target_rule else None
        fixed, weak = row_polarity == "negative", row_polarity == "hedged"
        if fixed or "NEGATED_EXISTENCE" in cats:
            polarity = "negative"
        elif "POSSIBLE_EXISTENCE" in cats or "HYPOTHETICAL" in cats or weak:
            polarity = "uncertain"
        else:
            polarity = "positive"
        attrs = _attributes_from_span(ent)
        # the side word comes after the finding ("atelectasis in the right base"): see _resolve_sides
        side_after = "LATERALITY" not in attrs and "LATERALITY" in cats and \
            cats["LATERALITY"][0].modifier_span[0] >= ent.end
        for cat in ATTRIBUTE_CATEGORIES:
            if cat in cats and cat not in attrs:
                attrs[cat] = cats[cat][0].rule.metadata.get("norm")
        if "LATERALITY" not in attrs and _PLURAL_BILATERAL.search(ent.text):
            attrs["LATERALITY"] = "bilateral"  # "small effusions": one on each side
        sent = ent.sent
        recs.append({"ent": ent, "lookalike": False, "findings": label.split("|"), "polarity": polarity,
                     "fixed": fixed, "weak": weak, "attrs": attrs,
                     "sent": sent.start_char if sent is not None else -1,
                     "sent_end": sent.end_char if sent is not None else len(doc.text),
                     "evidence": sent.text.strip() if sent is not None else ent.text, "side_after": side_after})

    # one polarity per finding and sentence
    hedged = {(r["sent"], f) for r in recs if not r["lookalike"] and r["polarity"] == "uncertain"
              and not r["weak"] for f in r["findings"]}
    seen = {(r["sent"], f) for r in recs if not r["lookalike"] and r["polarity"] == "positive" for f in r["findings"]}
    # a side travels along a link (left to right, so it passes along a list); then the side words
    # ConText could not attach (_resolve_sides), and the chain again from the sides these gave
    _side_chain(doc, recs)
    _resolve_sides(doc, recs)
    _side_chain(doc, recs)

    out: list[Mention] = []
    for r in recs:
        if r["lookalike"]:
            continue
        ent, attrs = r["ent"], r["attrs"]
        location = _location(attrs.get("LATERALITY"), attrs.get("ZONE"))
        for finding in r["findings"]:
            polarity = r["polarity"]
            if not r["fixed"] and polarity != "negative":
                if finding in OBSERVATION_FINDINGS:
                    polarity = "positive" if (r["sent"], finding) in seen else polarity
                elif (r["sent"], finding) in hedged:
                    polarity = "uncertain"
                elif r["weak"] and (r["sent"], finding) in seen:
                    polarity = "positive"  # "pneumonia, an infectious process": one polarity per sentence
            out.append(
                Mention(
                    finding=finding,
                    polarity=polarity,
                    location=location,
                    severity=attrs.get("SEVERITY"),
                    evidence=r["evidence"],
                    start_char=ent.start_char,
                    text=ent.text,
                )
            )
    return out


def _quiet(fn):
    """medspaCy runs an empty token Matcher when all rules are phrases/regexes; spaCy then warns W036
    on every doc. Silence exactly that warning around our calls."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*\[W036\]")
            return fn(*args, **kwargs)

    return wrapper


@_quiet
def extract_mentions(text: str | None) -> list[Mention]:
    """All finding mentions of one text (empty list for empty/None text)."""
    text = normalise_text(text)
    if not text:
        return []
    return mentions_from_doc(get_nlp()(text))


def extract_mentions_many(texts: Iterable[str | None], batch_size: int = 64) -> Iterator[list[Mention]]:
    """``extract_mentions`` over many texts with ``nlp.pipe`` (same order, one list per text)."""
    nlp = get_nlp()
    texts = [normalise_text(t) for t in texts]
    chunk = 1000  # docs are materialised per chunk (W036 silenced), never the whole corpus
    for lo in range(0, len(texts), chunk):
        part = texts[lo : lo + chunk]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*\[W036\]")
            docs = iter(list(nlp.pipe([t for t in part if t], batch_size=batch_size)))
        for t in part:
            yield mentions_from_doc(next(docs)) if t else []


# --------------------------------------------------------------------------- public checker API
def aggregate(mentions: Iterable[Mention], conditions: Iterable[str]) -> dict[str, str | None]:
    """Per condition: present > uncertain > absent over all mentions; None when not mentioned."""
    result: dict[str, str | None] = {c: None for c in conditions}
    for m in mentions:
        if m.finding not in result:
            continue
        state = POLARITY_TO_STATE[m.polarity]
        current = result[m.finding]
        if current is None or STATE_RANK[state] > STATE_RANK[current]:
            result[m.finding] = state
    return result


def check(text: str, conditions: list[str]) -> dict[str, str | None]:
    """For each CheXpert condition name: "present" | "absent" | "uncertain" | None (not mentioned)."""
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s): {unknown}; expected names from nast.conditions.CONDITIONS")
    return aggregate(extract_mentions(text), conditions)


@_quiet
def has_negation_cue(text: str) -> bool:
    """True when the text contains any negation cue of the lexicon (ConText NEGATED_EXISTENCE modifier).

    Pseudo-negations count too ("no change" still contains a negation word); terminators do not.
    """
    text = normalise_text(text)
    if not text:
        return False
    doc = get_nlp()(text)
    return any(mod.category == "NEGATED_EXISTENCE" for mod in doc._.context_graph.modifiers)
