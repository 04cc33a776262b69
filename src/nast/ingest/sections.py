"""FINDINGS / IMPRESSION sections of a free-text radiology report.

MIMIC-CXR reports are semi-structured: ``EXAMINATION:``, ``INDICATION:``, ``TECHNIQUE:``,
``COMPARISON:``, ``FINDINGS:``, ``IMPRESSION:``, ``NOTIFICATION:``, ... each an upper-case header
followed by a colon. The method (the same idea as MIT-LCP's ``mimic-cxr/txt/section_parser.py``):

1. Find every header: an ALL-CAPS phrase followed by ``:`` at the start of a line or after
   whitespace (``FINDINGS:``, ``FINDINGS AND IMPRESSION:``, ``RECOMMENDATION(S):``), plus the two
   headers we extract written in any case / spacing at the start of a line (``Findings :``,
   ``impression:``, ``FINDINGS  AND  IMPRESSION:``).
2. A section runs from the end of its header to the start of the next header (or the end).
3. Header names are normalised (upper case, single spaces, plural ``IMPRESSIONS`` -> singular).
   ``FINDINGS`` -> findings; ``IMPRESSION`` -> impression; ``FINDINGS AND IMPRESSION`` ->
   impression (the mapping used by MIT-LCP's section parser; the combined text is not copied into
   both columns so downstream claim extraction does not count it twice).
4. Repeated sections are joined with a space; whitespace is collapsed; empty -> ``None``.

A report without either header gives ``(None, None)``; ingest decides (``data.require_report``)
whether that study is quarantined. A regular expression is used instead of medspaCy's
Sectionizer because the rule is purely lexical, must stop at *any* ALL-CAPS header (medspaCy would
need a rule per header) and must run over ~227k reports in seconds.
"""

from __future__ import annotations

import re

# ALL-CAPS header (4+ characters, so 'AP:' inside a sentence is not one): starts a line or
# follows whitespace; letters, digits, spaces and a few
# punctuation marks; ends with a letter or ')'; then optional spaces and a colon.
_CAPS_HEADER = re.compile(r"(?:(?<=\s)|^)(?P<name>[A-Z][A-Z0-9 /&(),'-]{2,}[A-Z)])[ \t]*:")
# The headers we extract, in any case and spacing, at the start of a line.
_TARGET_HEADER = re.compile(
    r"(?im)^[ \t]*(?P<name>findings(?:[ \t]+and[ \t]+impressions?)?|impressions?)[ \t]*:"
)

_NAME_MAP = {
    "FINDINGS": "findings",
    "IMPRESSION": "impression",
    "FINDINGS AND IMPRESSION": "impression",
}


def normalize_whitespace(text: str | None) -> str | None:
    """Collapse runs of whitespace to one space; empty -> None."""
    if text is None:
        return None
    out = " ".join(text.split())
    return out or None


def _normalize_name(raw: str) -> str:
    name = " ".join(raw.upper().split())
    return re.sub(r"IMPRESSIONS\b", "IMPRESSION", name)


def find_headers(text: str) -> list[tuple[int, int, str]]:
    """All headers as ``(start, end, normalised name)`` sorted by position (no overlaps)."""
    found: dict[int, tuple[int, int, str]] = {}
    for pat in (_TARGET_HEADER, _CAPS_HEADER):
        for m in pat.finditer(text):
            start = m.start("name")
            if start not in found:
                found[start] = (start, m.end(), _normalize_name(m.group("name")))
    headers = []
    last_end = -1
    for start, end, name in sorted(found.values()):
        if start < last_end:  # inside a previous header (e.g. 'AND IMPRESSION' of a combined one)
            continue
        headers.append((start, end, name))
        last_end = end
    return headers


def parse_sections(text: str | None) -> tuple[str | None, str | None]:
    """Return ``(findings, impression)`` of one report (whitespace normalised, None if absent)."""
    if not text:
        return None, None
    headers = find_headers(text)
    parts: dict[str, list[str]] = {"findings": [], "impression": []}
    for i, (_start, end, name) in enumerate(headers):
        key = _NAME_MAP.get(name)
        if key is None:
            continue
        stop = headers[i + 1][0] if i + 1 < len(headers) else len(text)
        body = normalize_whitespace(text[end:stop])
        if body:
            parts[key].append(body)
    findings = " ".join(parts["findings"]) or None
    impression = " ".join(parts["impression"]) or None
    return findings, impression
