"""``nast mcq``: write the negated multiple-choice questions of the NAST benchmark.

Input is the permutations table (per study: k conditions, options A–D as label vectors over them,
the correct letter). For every study this stage writes a neutral question stem and four option
texts, one per label vector: present conditions (1) stated positively, absent conditions (0)
negated, e.g. ``[1, 1, 0]`` over (Cardiomegaly, Edema, Pleural Effusion) -> "Cardiomegaly and edema
without pleural effusion".

Backends (``params.mcq.backend``)
--------------------------------
``template`` (default): offline and deterministic; phrasings, surface forms and connecting patterns
are sampled per (``mcq.seed``, study, letter) — see :mod:`nast.text.templates`. The structure of
each option is kept in the extra column ``negated_parts`` (JSON) so ``nast affirm`` can swap only
the negated part.

``openai``: any OpenAI-compatible chat-completions server (:mod:`nast.text.llm`; params ``llm.*``).
Only condition names and label vectors are sent (no report text). The reply must be a JSON object
``{"question", "A", "B", "C", "D"}``. Requests run concurrently, are cached on disk and resume
after a kill without repeating a cached request.

Verification
------------
Every option of every question goes through the medspaCy ConText checker
(:func:`nast.text.polarity.check`): each condition must read "present" where its label is 1 and
"absent" where it is 0; an LLM question stem must mention no condition. A question with a failing
option (or an unparseable reply) is re-asked — the whole question, with the next attempt number in
the request so the cache key differs — up to ``mcq.max_retries`` times; then it is quarantined with
the reason (which option, which condition, expected vs found). Template questions that fail are
quarantined directly (expected: none). ``rows in = kept + quarantined`` is asserted, and a summary
(share of options verified, attempts, LLM requests and cache hits) is written next to the output as
``<out stem>.summary.json``.
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
    SYSTEM_PROMPT,
    PolarityVerifier,
    check_transport,
    llm_client,
    parse_reply,
    run_llm_rounds,
    top_reasons,
)

log = logging.getLogger(__name__)


STAGE = "mcq"

# ---------------------------------------------------------------------------------------------
# input checks (row level -> quarantine)
# ---------------------------------------------------------------------------------------------
def row_defect(row: dict[str, Any]) -> str | None:
    """Why a permutations row cannot be written as a question (None when it is fine)."""
    conds = row["conditions"] or []
    forms = T.surface_forms()
    if not conds:
        return "no conditions"
    unknown = [c for c in conds if c not in forms or c not in T.affirmative_phrases()]
    if unknown:
        return f"unknown condition(s) {unknown} (not in nast/text/data/phrases.csv / affirmative.csv)"
    if len(set(conds)) != len(conds):
        return f"duplicate conditions {conds}"
    for letter in LETTERS:
        vec = row[f"option_{letter}"]
        if vec is None or len(vec) != len(conds):
            return f"option_{letter} has {0 if vec is None else len(vec)} labels for {len(conds)} conditions"
        if any(v not in (0, 1) for v in vec):
            return f"option_{letter} has labels outside {{0, 1}}: {list(vec)}"
    if row["correct"] not in LETTERS:
        return f"correct letter {row['correct']!r} not in A-D"
    return None


# ---------------------------------------------------------------------------------------------
# template backend (pure)
# ---------------------------------------------------------------------------------------------
def template_question(row: dict[str, Any], seed: int) -> dict[str, Any]:
    """question, negated_A..D and negated_parts (JSON) for one permutations row."""
    out: dict[str, Any] = {"question": T.pick_stem(seed, row["study_id"])}
    parts_json = {}
    for letter in LETTERS:
        rng = T.option_rng(seed, row["study_id"], letter, "mcq")
        parts = T.sample_parts(row["conditions"], row[f"option_{letter}"], rng)
        out[f"negated_{letter}"] = T.render_negated(parts)
        parts_json[letter] = parts.to_json()
    out["negated_parts"] = json.dumps(parts_json, sort_keys=True, separators=(",", ":"))
    return out


MCQ_INSTRUCTIONS = """Write one multiple-choice question with options A-D.
- The question stem is neutral and generic: it asks which option correctly describes the image and
  names no condition.
- Each option states, in natural radiology language, exactly the conditions of its label vector:
  label 1 = present (e.g. "with X", "X noted", "evidence of X"), label 0 = absent, stated with a
  negation (e.g. "no X", "without X", "no evidence of X", "negative for X").
- Vary the connecting patterns, e.g. "A and B without C", "A, B, but not C", "No C, but A and B
  present", "A noted, no sign of B or C".
- Use the exact condition terms given in "terms"; state nothing else; no explanations.
Reply with a JSON object only: {"question": "...", "A": "...", "B": "...", "C": "...", "D": "..."}."""


def mcq_messages(conditions: Sequence[str], options: dict[str, Sequence[int]]) -> list[dict[str, str]]:
    """Chat messages for one question: condition names and label vectors only (no report text)."""
    forms = T.surface_forms()
    task = {
        "task": "mcq",
        "terms": {c: forms[c][0] for c in conditions},
        "options": {k: {c: int(v) for c, v in zip(conditions, vec)} for k, vec in options.items()},
    }
    user = MCQ_INSTRUCTIONS + "\nINPUT:\n" + json.dumps(task, sort_keys=True)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]



def parse_mcq_reply(text: str) -> dict[str, str]:
    """{"question", "A".."D"} from a JSON reply (falls back to "A. ..." lines); ValueError if not."""
    return parse_reply(text, ("question", *LETTERS))



# ---------------------------------------------------------------------------------------------
# the stage core
# ---------------------------------------------------------------------------------------------
def build_mcq(perm: pl.DataFrame, params: dict[str, Any], client=None,
              verifier: PolarityVerifier | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Permutations -> (mcq table, quarantine table, summary). ``client`` only for backend openai."""
    cfg = params["mcq"]
    backend = cfg["backend"]
    verifier = verifier or PolarityVerifier(cfg["n_process"])
    perm = perm.sort(["subject_id", "study_id"])
    rows = perm.to_dicts()
    n_in = len(rows)
    quarantine: list[dict[str, Any]] = []
    good: list[int] = []
    for i, row in enumerate(rows):
        defect = row_defect(row)
        if defect:
            quarantine.append({"stage": STAGE, "key": row["study_id"], "reason": defect})
        else:
            good.append(i)

    written: dict[int, dict[str, Any]] = {}
    attempts: dict[int, int] = {}
    n_checked = n_verified = 0
    if backend == "template":
        for i in good:
            written[i] = template_question(rows[i], cfg["seed"])
        verifier.prefetch([(written[i][f"negated_{L}"], rows[i]["conditions"]) for i in good for L in LETTERS])
        for i in good:
            problems = []
            for L in LETTERS:
                p = verifier.mismatches(L, written[i][f"negated_{L}"], rows[i]["conditions"], rows[i][f"option_{L}"])
                n_checked += 1
                n_verified += not p
                problems += p
            attempts[i] = 1
            if problems:
                quarantine.append({"stage": STAGE, "key": rows[i]["study_id"],
                                   "reason": "template option failed verification: " + "; ".join(problems)})
                del written[i]
    elif backend == "openai":
        client = llm_client(params, client)
        sub = [rows[i] for i in good]
        counter = {"checked": 0, "verified": 0}

        def accept(row, reply):
            try:
                parsed = parse_mcq_reply(reply)
            except ValueError as exc:
                return None, [f"unparseable reply ({exc})"]
            verifier.prefetch([(parsed[L], row["conditions"]) for L in LETTERS])
            problems = []
            for L in LETTERS:
                p = verifier.mismatches(L, parsed[L], row["conditions"], row[f"option_{L}"])
                counter["checked"] += 1
                counter["verified"] += not p
                problems += p
            named = [c for c, v in verifier.check(parsed["question"], row["conditions"]).items() if v]
            if named:
                problems.append(f"question stem mentions {named}")
            return parsed, problems

        done, failed, transport = run_llm_rounds(
            sub, client, cfg["max_retries"],
            lambda r: mcq_messages(r["conditions"], {L: r[f"option_{L}"] for L in LETTERS}), accept)
        check_transport(STAGE, client, transport, len(sub), params["llm"])
        for j, (parsed, n_att) in done.items():
            i = good[j]
            written[i] = {"question": parsed["question"], **{f"negated_{L}": parsed[L] for L in LETTERS},
                          "negated_parts": None}
            attempts[i] = n_att
        for j, reason in sorted(failed.items()):
            quarantine.append({"stage": STAGE, "key": sub[j]["study_id"], "reason": reason})
        n_checked, n_verified = counter["checked"], counter["verified"]
    else:  # schema forbids it; keep a clear message anyway
        raise StageError(f"{params_file()}: mcq.backend: unknown backend {backend!r}")

    kept_idx = sorted(written)
    base = perm[kept_idx] if kept_idx else perm.clear()
    extra = pl.DataFrame(
        {
            "question": [written[i]["question"] for i in kept_idx],
            **{f"negated_{L}": [written[i][f"negated_{L}"] for i in kept_idx] for L in LETTERS},
            "mcq_backend": [backend] * len(kept_idx),
            "verified": [True] * len(kept_idx),
            "negated_parts": [written[i]["negated_parts"] for i in kept_idx],
        },
        schema={"question": pl.Utf8, **{f"negated_{L}": pl.Utf8 for L in LETTERS}, "mcq_backend": pl.Utf8,
                "verified": pl.Boolean, "negated_parts": pl.Utf8},
    )
    out = pl.concat([base, extra], how="horizontal")
    qdf = quarantine_frame(quarantine).sort("key")
    reconcile(STAGE, n_in, out.height, qdf.height)
    summary = {
        "stage": STAGE, "backend": backend, "seed": cfg["seed"], "rows_in": n_in, "rows_kept": out.height,
        "rows_quarantined": qdf.height, "options_checked": n_checked, "options_verified": n_verified,
        "share_options_verified": (n_verified / n_checked) if n_checked else None,
        "share_questions_kept": (out.height / n_in) if n_in else None,
        "attempts_histogram": {str(k): sum(1 for v in attempts.values() if v == k)
                               for k in sorted(set(attempts.values()))},
        "top_quarantine_reasons": top_reasons(qdf),
    }
    if client is not None:
        summary["llm"] = dict(client.stats)
    return out, qdf, summary



