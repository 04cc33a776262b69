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

import argparse
import json
import logging
import multiprocessing
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import polars as pl

from nast.config import params_file
from nast.errors import StageError
from nast.io import quarantine_frame, read_table, reconcile, require_columns, write_json, write_parquet
from nast.text import templates as T

log = logging.getLogger(__name__)

#: the params.yaml keys (sections or dotted keys) this stage reads: its rule and DVC stage declare
#: exactly these (nast.codedeps.declared_params; the recording check of tests/conftest.py)
PARAMS_KEYS = ("mcq", "llm", "data.source", "data.allow_empty")

STAGE = "mcq"
LETTERS = ("A", "B", "C", "D")
PERMUTATION_COLUMNS = ["subject_id", "study_id", "dicom_id", "image_path", "split", "conditions",
                       "true_labels", "option_A", "option_B", "option_C", "option_D", "correct"]
EXPECTED = {1: "present", 0: "absent"}


# ---------------------------------------------------------------------------------------------
# verification (through nast.text.polarity; cached per unique text)
# ---------------------------------------------------------------------------------------------
#: below this many unique texts the check runs in-process (a pool costs more than it saves)
MIN_PARALLEL_TEXTS = 4000
CHUNK = 2000


def _mentions_chunk(texts: list[str]) -> list:
    from nast.text import polarity

    return list(polarity.extract_mentions_many(texts, batch_size=256))


def _cues_chunk(texts: list[str]) -> list[bool]:
    from nast.text import polarity

    return [bool(polarity.has_negation_cue(t)) for t in texts]


def _parallel(fn, texts: list[str], n_process: int) -> list:
    """fn over chunks of texts in ``n_process`` forked workers (in-process when small)."""
    if n_process <= 1 or len(texts) < MIN_PARALLEL_TEXTS:
        return fn(texts)
    chunks = [texts[i : i + CHUNK] for i in range(0, len(texts), CHUNK)]
    with multiprocessing.get_context("fork").Pool(n_process) as pool:
        parts = pool.map(fn, chunks, chunksize=1)
    return [x for part in parts for x in part]


def resolve_processes(n: int) -> int:
    """params value -> worker count (0 = one per CPU core available to this process)."""
    if n and n > 0:
        return int(n)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class PolarityVerifier:
    """Memoised access to :mod:`nast.text.polarity`, checked once per unique text.

    Large batches go through ``polarity.extract_mentions_many`` (``nlp.pipe``) in ``n_process``
    forked workers; ``check(text, c)`` is then ``polarity.aggregate(mentions(text), c)``, exactly
    what ``polarity.check`` computes.
    """

    def __init__(self, n_process: int = 1) -> None:
        try:
            from nast.text import polarity
        except ImportError as exc:  # pragma: no cover - depends on the sibling module
            raise StageError(f"nast.text.polarity is not available: {exc}") from exc
        self.polarity = polarity
        self.n_process = resolve_processes(n_process)
        self._cache: dict[tuple[str, tuple[str, ...]], dict[str, str | None]] = {}
        self._mentions: dict[str, list] = {}
        self._cue: dict[str, bool] = {}

    def prefetch(self, items: Sequence[tuple[str, Sequence[str]]], cues: bool = False) -> None:
        """Check many (text, conditions) pairs at once (and their negation cues when ``cues``)."""
        items = [(t, tuple(c)) for t, c in items]
        texts = list(dict.fromkeys(t for t, _ in items if t not in self._mentions))
        if texts:
            if len(texts) >= MIN_PARALLEL_TEXTS:
                log.info("polarity check of %d unique texts (%d process(es))", len(texts), self.n_process)
            self._mentions.update(zip(texts, _parallel(_mentions_chunk, texts, self.n_process)))
        for t, c in items:
            if (t, c) not in self._cache:
                self._cache[(t, c)] = self.polarity.aggregate(self._mentions[t], c)
        if cues:
            todo = list(dict.fromkeys(t for t, _ in items if t not in self._cue))
            if todo:
                self._cue.update(zip(todo, _parallel(_cues_chunk, todo, self.n_process)))

    def check(self, text: str, conditions: Sequence[str]) -> dict[str, str | None]:
        key = (text, tuple(conditions))
        if key not in self._cache:
            self._cache[key] = self.polarity.check(text, list(conditions))
        return self._cache[key]

    def has_cue(self, text: str) -> bool:
        if text not in self._cue:
            self._cue[text] = bool(self.polarity.has_negation_cue(text))
        return self._cue[text]

    def mismatches(self, letter: str, text: str, conditions: Sequence[str], labels: Sequence[int]) -> list[str]:
        """Human-readable disagreements between the stated polarities and the label vector."""
        found = self.check(text, conditions)
        out = []
        for cond, lab in zip(conditions, labels):
            exp = EXPECTED[int(lab)]
            got = found.get(cond)
            if got != exp:
                out.append(f"option {letter}: {cond}: expected {exp}, found {got or 'not mentioned'}")
        return out


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


# ---------------------------------------------------------------------------------------------
# openai backend
# ---------------------------------------------------------------------------------------------
SYSTEM_PROMPT = "You are a radiologist writing multiple-choice questions about chest radiograph findings."
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


def parse_reply(text: str, keys: tuple[str, ...]) -> dict[str, str]:
    """The string fields ``keys`` of an LLM reply: a JSON object, or "A. ..." lines as a fallback.

    Whitespace is normalised; a missing or empty field raises ValueError (the caller re-asks)."""
    from nast.text.llm import parse_json_reply

    try:
        obj = parse_json_reply(text)
    except ValueError:
        obj = _parse_lines(text)
    if not isinstance(obj, dict):
        raise ValueError("reply is not a JSON object")
    bad = [k for k in keys if not isinstance(obj.get(k), str) or not obj[k].strip()]
    if bad:
        raise ValueError(f"reply lacks {bad}")
    return {k: " ".join(obj[k].split()) for k in keys}


def parse_mcq_reply(text: str) -> dict[str, str]:
    """{"question", "A".."D"} from a JSON reply (falls back to "A. ..." lines); ValueError if not."""
    return parse_reply(text, ("question", *LETTERS))


def _parse_lines(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    stem = []
    for line in text.splitlines():
        s = line.strip()
        if len(s) > 2 and s[0] in LETTERS and s[1] in ".)":
            out[s[0]] = s[2:].strip()
        elif s:
            stem.append(s)
    out["question"] = " ".join(stem)
    return out


def run_llm_rounds(
    rows: list[dict[str, Any]],
    client,
    max_retries: int,
    make_messages: Callable[[dict[str, Any]], list[dict[str, str]]],
    accept: Callable[[dict[str, Any], str], tuple[dict[str, str] | None, list[str]]],
) -> tuple[dict[int, tuple[dict[str, str], int]], dict[int, str], set[int]]:
    """Ask, verify, re-ask: round r sends attempt r for every still-failing row.

    ``accept(row, reply) -> (parsed, problems)`` runs as each reply arrives; only accepted replies
    are cached (a rejected one goes to the cache's rejects.jsonl and is asked again on a rerun).
    Returns ({row index: (parsed, attempts)}, {row index: quarantine reason}, {row indices whose
    request failed in transport after llm.max_retries}).
    """
    from nast.text.llm import LLMError

    done: dict[int, tuple[dict[str, str], int]] = {}
    failed: dict[int, str] = {}
    transport: set[int] = set()
    last_problem: dict[int, str] = {}
    pending = list(range(len(rows)))
    for attempt in range(max_retries + 1):
        if not pending:
            break
        results: dict[int, tuple[dict[str, str] | None, list[str]]] = {}

        def validate(j: int, reply: str, _rows=tuple(pending)) -> str | None:
            i = _rows[j]
            parsed, problems = results[i] = accept(rows[i], reply)
            if parsed is not None and not problems:
                return None
            return "; ".join(problems) or "unparseable reply"

        replies = client.complete_many([(make_messages(rows[i]), attempt) for i in pending], validate=validate)
        still = []
        for i, reply in zip(pending, replies):
            if isinstance(reply, LLMError):
                failed[i] = f"llm request failed (attempt {attempt}): {reply}"
                transport.add(i)
                continue
            parsed, problems = results[i]
            if parsed is not None and not problems:
                done[i] = (parsed, attempt + 1)
            else:
                last_problem[i] = "; ".join(problems) or "unparseable reply"
                still.append(i)
        n_failed = sum(1 for i in pending if i in failed)
        log.info("llm round %d: %d accepted, %d to re-ask, %d failed", attempt,
                 len(pending) - len(still) - n_failed, len(still), n_failed)
        pending = still
    for i in pending:
        failed[i] = f"failed verification after {max_retries + 1} attempt(s): {last_problem[i]}"
    return done, failed, transport


def is_credentialed(params: dict[str, Any]) -> bool:
    """Whether the stage's rows derive from a credentialed source (params data.source: mimic)."""
    return (params.get("data") or {}).get("source") == "mimic"


def llm_client(params: dict[str, Any], client=None):
    """The stage's LLM client (built from params llm.* unless given), marked credentialed for MIMIC."""
    if client is None:
        from nast.text.llm import LLMClient

        client = LLMClient.from_params(params["llm"])
    if is_credentialed(params):
        client.credentialed = True
    return client


def check_transport(stage: str, client, transport: set[int], n_asked: int, llm: dict[str, Any]) -> None:
    """Stop the stage (:class:`~nast.text.llm.LLMOutageError`) when questions got no reply because of
    the server or the transport: all of them, or more than ``llm.max_failed_fraction`` of them."""
    from nast.text.llm import outage_error

    n = len(transport)
    if n and (n >= n_asked or n > float(llm["max_failed_fraction"]) * n_asked):
        raise outage_error(stage, client, n, n_asked)


def check_kept(stage: str, summary: dict[str, Any], min_kept_fraction: float, quarantine_path) -> None:
    """Stop the stage when fewer than ``min_kept_fraction`` of the input rows were kept (the
    quarantine and the summary are written first, for diagnosis)."""
    n_in, kept = summary["rows_in"], summary["rows_kept"]
    if n_in and kept < float(min_kept_fraction) * n_in:
        reasons = summary.get("top_quarantine_reasons") or []
        top = "; ".join(f"{n} x {r}" for r, n in reasons[:3])
        raise StageError(
            f"{stage}: only {kept} of {n_in} rows kept ({kept / n_in:.0%}), below {stage}.min_kept_fraction "
            f"{min_kept_fraction}; the reasons are in {quarantine_path} (most common: {top or 'n/a'}); "
            "the output was not written"
        )


def top_reasons(qdf: pl.DataFrame, n: int = 5) -> list[tuple[str, int]]:
    """Most common quarantine reasons, with attempt numbers and option details cut off."""
    if not qdf.height:
        return []
    short = [r.split(": ", 1)[0] if r.startswith("llm request failed") else r.split(";")[0][:160]
             for r in qdf["reason"].to_list()]
    import collections

    return collections.Counter(short).most_common(n)


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


def summary_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".summary.json")


def gate_table(df: pl.DataFrame, suite: str, expectations: list[tuple[str, dict]],
               report_dir: str | Path = "reports/validation") -> None:
    """Great Expectations gate through nast.validation (report in ``report_dir/<suite>.md|.json``)."""
    from nast.validation import gate

    gate(df, suite, expectations, report_dir=report_dir)


def expectations(text_cols: Sequence[str]) -> list[tuple[str, dict]]:
    exp: list[tuple[str, dict]] = [("ExpectColumnValuesToNotBeNull", {"column": c}) for c in text_cols]
    exp += [("ExpectColumnValuesToBeUnique", {"column": "study_id"}),
            ("ExpectColumnValuesToBeInSet", {"column": "correct", "value_set": list(LETTERS)})]
    return exp


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--permutations", required=True, help="permutations.parquet (input)")
    parser.add_argument("--out", required=True,
                        help="mcq.parquet to write (a <stem>.summary.json is written next to it)")
    parser.add_argument("--quarantine", required=True,
                        help="parquet of questions that failed verification or had bad input")
    parser.add_argument("--report-dir", default="reports/validation",
                        help="folder of the Great Expectations report SUITE.md/.json (default: reports/validation)")
    parser.epilog = ("Backend, seed and re-asks come from params mcq.* (template | openai); the openai backend "
                     "reads llm.* and the API key from the environment variable named by llm.api_key_env.")


def run(args: argparse.Namespace, params: dict[str, Any]) -> int:
    perm = read_table(args.permutations, "permutations table", params)
    require_columns(perm, PERMUTATION_COLUMNS, args.permutations)
    out, qdf, summary = build_mcq(perm, params)
    text_cols = ["question", *[f"negated_{L}" for L in LETTERS]]
    write_parquet(qdf, args.quarantine)
    write_json(summary, summary_path(args.out))
    check_kept(STAGE, summary, params["mcq"]["min_kept_fraction"], args.quarantine)
    gate_table(out, "mcq", expectations(text_cols), args.report_dir)  # on empty tables too
    write_parquet(out, args.out)
    log.info("mcq (%s): %d questions kept, %d quarantined; %.1f%% of options verified -> %s",
             summary["backend"], summary["rows_kept"], summary["rows_quarantined"],
             100 * (summary["share_options_verified"] or 0), args.out)
    return 0
