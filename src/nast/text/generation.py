"""Shared by the text-generation stages (mcq, affirm): polarity verification, LLM rounds, outage and
kept-fraction checks, the tables' gates. Neither stage imports the other's core."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import polars as pl

from nast.errors import StageError

log = logging.getLogger(__name__)


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
# openai backend
# ---------------------------------------------------------------------------------------------
SYSTEM_PROMPT = "You are a radiologist writing multiple-choice questions about chest radiograph findings."



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
    return params["data"]["source"] == "mimic"



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
