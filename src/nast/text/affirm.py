"""``nast affirm``: affirmative rewrites of the negated MCQ options (the benchmark's control set).

Each negated condition is replaced by an affirmative normal-finding equivalent taken from the
mapping table ``nast/text/data/affirmative.csv`` (condition, phrasing; e.g. Cardiomegaly -> "normal
heart size", Pleural Effusion -> "sharp costophrenic angles", Pneumothorax -> "fully expanded
lungs"). Present conditions keep the exact wording of the negated option. The rewrite states the
same label vector without any negation, so the gap between accuracy on the negated and on the
affirmative set isolates negation handling.

Backends (``params.affirm.backend``)
-----------------------------------
``template``: uses the structure the template MCQ stage stored per option (column
``negated_parts``: pattern id + the exact surface form of each condition) and renders the pattern's
affirmative twin, so only the negated part changes ("Cardiomegaly and edema without effusion" ->
"Cardiomegaly and edema with sharp costophrenic angles"). For rows without stored parts (an
LLM-written MCQ) the option is re-rendered from its labels with canonical surface forms (see
:mod:`nast.text.templates`). Phrasings are sampled per (``affirm.seed``, study, letter).

``openai``: an OpenAI-compatible server (:mod:`nast.text.llm`) is asked to replace only the
negation phrases, given the negated options, their label vectors and the allowed normal-finding
phrasings. The options are generated text over condition names (no report text).

Verification
------------
Every rewrite must (1) carry no negation cue (:func:`nast.text.polarity.has_negation_cue` is False)
and (2) still state its label vector (:func:`nast.text.polarity.check`: 1 -> "present",
0 -> "absent", the latter recognised through the normal-finding phrases). Failing rewrites are
re-asked (LLM, next attempt number) up to ``affirm.max_retries`` times, then the question is
quarantined with the reason. Rows in = kept + quarantined; a summary goes to
``<out stem>.summary.json``.

Every phrasing of ``affirmative.csv`` must therefore be a target of the checker (a row of
``data/targets.csv`` with polarity ``negative``); the test
``test_affirmative_table_phrasings_are_recognised_by_checker`` fails on any that is not.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Sequence

import polars as pl

from nast.config import params_file
from nast.errors import StageError
from nast.io import quarantine_frame, reconcile
from nast.text import templates as T
from nast.text.generation import (
    LETTERS,
    PERMUTATION_COLUMNS,
    SYSTEM_PROMPT,
    PolarityVerifier,
    check_transport,
    llm_client,
    run_llm_rounds,
    top_reasons,
)

log = logging.getLogger(__name__)


STAGE = "affirm"
MCQ_COLUMNS = PERMUTATION_COLUMNS + ["question", *[f"negated_{L}" for L in LETTERS], "mcq_backend", "verified"]


def problems_of(verifier: PolarityVerifier, letter: str, text: str, conditions: Sequence[str],
                labels: Sequence[int]) -> list[str]:
    """Why an affirmative option is not acceptable (empty list = verified)."""
    out = []
    if verifier.has_cue(text):
        out.append(f"option {letter}: negation cue in {text!r}")
    out += verifier.mismatches(letter, text, conditions, labels)
    return out


def template_affirm(row: dict[str, Any], seed: int) -> dict[str, str]:
    """affirmative_A..D for one MCQ row (structure from negated_parts, else from labels)."""
    stored = json.loads(row["negated_parts"]) if row.get("negated_parts") else None
    out = {}
    for L in LETTERS:
        if stored is not None:
            parts = T.OptionParts.from_json(stored[L])
        else:
            parts = T.default_parts(row["conditions"], row[f"option_{L}"])
        text, _ = T.render_affirmative(parts, T.option_rng(seed, row["study_id"], L, "affirm"))
        out[f"affirmative_{L}"] = text
    return out


AFFIRM_INSTRUCTIONS = """Rewrite radiology multiple-choice options so that they contain NO negation.
- Replace ONLY the phrases that negate a condition (e.g. "no X", "without X", "X absent", "free of X",
  "no evidence of X") by the affirmative normal finding given for that condition in "affirmative".
- Keep the wording of present conditions (label 1) exactly; keep the sentence structure; adjust
  conjunctions minimally for natural radiology phrasing (drop an adversative "but" when the contrast
  is gone).
- Use no negation words at all (no, not, without, absent, free of, negative for, ...).
Reply with a JSON object only: {"A": "...", "B": "...", "C": "...", "D": "..."}."""


def affirm_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """Chat messages for one question: generated option texts, label vectors, phrasings; no report text."""
    conds = row["conditions"]
    aff = T.affirmative_phrases()
    forms = T.surface_forms()
    task = {
        "task": "affirm",
        "terms": {c: forms[c][0] for c in conds},
        "affirmative": {c: aff[c][0] for c in conds},
        "affirmative_alternatives": {c: list(aff[c]) for c in conds},
        "options": {L: {"negated": row[f"negated_{L}"],
                        "labels": {c: int(v) for c, v in zip(conds, row[f"option_{L}"])}} for L in LETTERS},
    }
    user = AFFIRM_INSTRUCTIONS + "\nINPUT:\n" + json.dumps(task, sort_keys=True)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_affirm_reply(text: str) -> dict[str, str]:
    """{"A".."D"} affirmative options from an LLM reply; ValueError if a field is missing."""
    from nast.text.generation import parse_reply

    return parse_reply(text, LETTERS)


def build_benchmark(mcq: pl.DataFrame, params: dict[str, Any], client=None,
                    verifier: PolarityVerifier | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """MCQ table -> (benchmark table, quarantine, summary)."""
    cfg = params["affirm"]
    backend = cfg["backend"]
    verifier = verifier or PolarityVerifier(cfg["n_process"])
    mcq = mcq.sort(["subject_id", "study_id"])
    if "negated_parts" not in mcq.columns:
        mcq = mcq.with_columns(pl.lit(None, dtype=pl.Utf8).alias("negated_parts"))
    rows = mcq.to_dicts()
    n_in = len(rows)
    quarantine: list[dict[str, Any]] = []
    written: dict[int, dict[str, str]] = {}
    counter = {"checked": 0, "verified": 0, "with_cue": 0}
    good = []
    for i, row in enumerate(rows):
        if not row.get("verified"):
            quarantine.append({"stage": STAGE, "key": row["study_id"], "reason": "negated question not verified"})
        elif any(c not in T.affirmative_phrases() for c in row["conditions"] or []):
            quarantine.append({"stage": STAGE, "key": row["study_id"],
                               "reason": f"no affirmative phrasing for {row['conditions']} in affirmative.csv"})
        else:
            good.append(i)

    def verify(row, texts: dict[str, str]) -> list[str]:
        verifier.prefetch([(texts[L], row["conditions"]) for L in LETTERS], cues=True)
        problems = []
        for L in LETTERS:
            p = problems_of(verifier, L, texts[L], row["conditions"], row[f"option_{L}"])
            counter["checked"] += 1
            counter["verified"] += not p
            counter["with_cue"] += verifier.has_cue(texts[L])
            problems += p
        return problems

    if backend == "template":
        rendered = {i: template_affirm(rows[i], cfg["seed"]) for i in good}
        verifier.prefetch([(t[f"affirmative_{L}"], rows[i]["conditions"]) for i, t in rendered.items()
                           for L in LETTERS], cues=True)  # one batched pass over all unique texts
        for i in good:
            texts = rendered[i]
            problems = verify(rows[i], {L: texts[f"affirmative_{L}"] for L in LETTERS})
            if problems:
                quarantine.append({"stage": STAGE, "key": rows[i]["study_id"],
                                   "reason": "template rewrite failed verification: " + "; ".join(problems)})
            else:
                written[i] = texts
    elif backend == "openai":
        client = llm_client(params, client)
        sub = [rows[i] for i in good]

        def accept(row, reply):
            try:
                parsed = parse_affirm_reply(reply)
            except ValueError as exc:
                return None, [f"unparseable reply ({exc})"]
            return parsed, verify(row, parsed)

        done, failed, transport = run_llm_rounds(sub, client, cfg["max_retries"], affirm_messages, accept)
        check_transport(STAGE, client, transport, len(sub), params["llm"])
        for j, (parsed, _n) in done.items():
            written[good[j]] = {f"affirmative_{L}": parsed[L] for L in LETTERS}
        for j, reason in sorted(failed.items()):
            quarantine.append({"stage": STAGE, "key": sub[j]["study_id"], "reason": reason})
    else:
        raise StageError(f"{params_file()}: affirm.backend: unknown backend {backend!r}")

    kept = sorted(written)
    base = mcq[kept] if kept else mcq.clear()
    extra = pl.DataFrame(
        {**{f"affirmative_{L}": [written[i][f"affirmative_{L}"] for i in kept] for L in LETTERS},
         "affirm_verified": [True] * len(kept)},
        schema={**{f"affirmative_{L}": pl.Utf8 for L in LETTERS}, "affirm_verified": pl.Boolean},
    )
    out = pl.concat([base, extra], how="horizontal")
    qdf = quarantine_frame(quarantine).sort("key")
    reconcile(STAGE, n_in, out.height, qdf.height)
    summary = {
        "stage": STAGE, "backend": backend, "seed": cfg["seed"], "rows_in": n_in, "rows_kept": out.height,
        "rows_quarantined": qdf.height, "options_checked": counter["checked"],
        "options_verified": counter["verified"], "options_with_negation_cue": counter["with_cue"],
        "share_options_verified": (counter["verified"] / counter["checked"]) if counter["checked"] else None,
        "top_quarantine_reasons": top_reasons(qdf),
    }
    if client is not None:
        summary["llm"] = dict(client.stats)
    return out, qdf, summary



