"""A small, resumable client for any OpenAI-compatible chat-completions server.

Used by the ``openai`` backends of ``nast mcq`` and ``nast affirm`` (vLLM, Ollama, LM Studio,
llama.cpp server or a hosted API: anything that answers ``POST {base_url}/chat/completions``).

Method
------
* **Request identity.** Every request is identified by a SHA-256 hash of its full content: the URL
  path, model, messages, temperature and the attempt number (sent as ``seed``). The API key is
  *not* part of the hash, so changing keys never invalidates the cache and the key never lands on
  disk.
* **Cache = the run's memory, validated replies only.** A reply is appended to
  ``{cache_dir}/responses.jsonl`` (one ``flush`` + ``fsync``'d line, from a single writer lock) only
  after the caller's ``validate`` accepted it (parsed and verified). A reply that fails is appended
  to ``{cache_dir}/rejects.jsonl`` with the reason (for diagnosis) and is never served as a cache
  hit: the same request is sent again on a rerun. A cached reply that a later check rejects is
  dropped with a tombstone line. A killed run loses at most the line being written (a torn last
  line is cut off on the next open); a rerun reads the cache first and sends only the requests that
  are not in it. Stages build their final tables from accepted replies only, so an interrupted and
  resumed run yields the same table as an uninterrupted one.
* **Transport robustness.** Up to ``max_concurrency`` requests are in flight (a thread pool with
  ``requests``); each has a ``timeout_s`` timeout; timeouts, connection errors, HTTP 429/5xx and
  unusable bodies (not JSON, no ``choices``, null content) are retried ``max_retries`` times with
  exponential backoff (``backoff_s * 2**i``); a 429 with ``Retry-After`` waits that long instead
  (at most ``max_retry_after_s``). Other 4xx errors fail at once (a bad model name will not fix
  itself). A 401/403, or ``abort_after_failures`` requests in a row that failed after all their
  retries, trips the client: the requests still queued are not sent (the stage then stops with a
  message saying what failed; see :func:`outage_error`).
* **Secrets and privacy.** The key is read from the environment variable named by
  ``llm.api_key_env`` and redacted from every error message. Every HTTP request goes through
  :meth:`LLMClient._guard` first, before any name is resolved or any socket is opened: it refuses
  (:class:`PHIError`) to send data derived from credentialed sources (report text, or anything
  built from a ``data.source: mimic`` cohort: ``credentialed=True``) to a non-loopback host unless
  ``llm.allow_remote_phi`` is true, and refuses (:class:`InsecureTransportError`) to send an API
  key over plain ``http://`` to a non-loopback host whatever the data.
"""

from __future__ import annotations

import email.utils
import hashlib
import ipaddress
import json
import logging
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import requests

from nast.errors import StageError

log = logging.getLogger(__name__)

#: the sleep between retries (a module attribute so tests can record the delays)
_sleep = time.sleep

CACHE_FILE = "responses.jsonl"
REJECTS_FILE = "rejects.jsonl"
Messages = list[dict[str, str]]
#: ``validate(index, reply) -> None`` (accepted) or the reason the reply is not usable
Validator = Callable[[int, str], "str | None"]

#: HTTP statuses after which no further request is sent (the credentials will not fix themselves)
FATAL_STATUSES = (401, 403, 404)


class LLMError(StageError):
    """A request failed after all transport retries (message redacted); ``kind`` says what failed
    in a few words ("connection refused", "timeout", "HTTP 401", "null content", "not sent", ...)."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind


class LLMOutageError(StageError):
    """A stage got no usable reply for too many requests because of the server or the transport."""


class PHIError(StageError):
    """Credentialed data would be sent to a non-loopback host while llm.allow_remote_phi is false."""


class InsecureTransportError(StageError):
    """An API key would be sent over plain http to a non-loopback host."""


# ---------------------------------------------------------------------------------------------
# privacy guard (pure: no name resolution, no socket)
# ---------------------------------------------------------------------------------------------
def is_loopback_host(host: str | None) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (brackets and a trailing dot tolerated)."""
    if not host:
        return False
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def assert_phi_allowed(base_url: str, contains_report_text: bool, allow_remote_phi: bool) -> None:
    """Raise :class:`PHIError` when credentialed data would leave the machine without permission.

    ``contains_report_text`` is true for report text and for anything derived from a credentialed
    source (a ``data.source: mimic`` cohort); such requests may go only to a loopback host unless
    ``allow_remote_phi`` is true. Condition names and label vectors of public or synthetic data
    may go anywhere.
    """
    if not contains_report_text or allow_remote_phi:
        return
    host = urlsplit(base_url).hostname
    if not is_loopback_host(host):
        raise PHIError(
            f"refusing to send data derived from credentialed sources (report text or a data.source: mimic "
            f"cohort) to non-loopback host {host!r} ({base_url}); nothing was sent. Use a loopback server, or "
            "set llm.allow_remote_phi: true only if your data use agreement allows it"
        )


def assert_transport_safe(base_url: str, has_key: bool, api_key_env: str = "the API key") -> None:
    """Raise :class:`InsecureTransportError` for an API key over plain http to a non-loopback host."""
    parts = urlsplit(base_url)
    if has_key and parts.scheme.lower() != "https" and not is_loopback_host(parts.hostname):
        raise InsecureTransportError(
            f"refusing to send the API key (${api_key_env}) over plain {parts.scheme or 'http'}:// to "
            f"non-loopback host {parts.hostname!r} ({base_url}); nothing was sent. Use an https:// URL "
            "(or a loopback server) in llm.base_url"
        )


# ---------------------------------------------------------------------------------------------
# request identity and the append-only cache
# ---------------------------------------------------------------------------------------------
def request_key(path: str, model: str, messages: Messages, temperature: float, attempt: int) -> str:
    """SHA-256 of the canonical JSON of the full request (never the API key)."""
    blob = json.dumps(
        {"path": path, "model": model, "messages": messages, "temperature": float(temperature),
         "attempt": int(attempt)},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


class ResponseCache:
    """Append-only JSONL cache of accepted replies ``{"key": ..., "content": ...}`` (one fsync'd
    line each; ``{"key": ..., "dropped": reason}`` removes an earlier line) and the rejects log
    ``rejects.jsonl`` ``{"key", "reason", "content"}`` (diagnosis only, never read back)."""

    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / CACHE_FILE
        self.rejects_path = self.dir / REJECTS_FILE
        self._lock = threading.Lock()
        self._data: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        good_end = raw.rfind(b"\n") + 1
        if good_end < len(raw):  # torn last line from a killed run: cut it off
            log.warning("llm cache %s: dropping a torn last line (%d bytes)", self.path, len(raw) - good_end)
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        for bline in raw[:good_end].split(b"\n"):
            if not bline.strip():
                continue
            try:
                rec = json.loads(bline.decode("utf-8"))  # strict: a damaged line is skipped, never "repaired"
                if "dropped" in rec:
                    self._data.pop(rec["key"], None)
                elif isinstance(rec["content"], str):
                    self._data[rec["key"]] = rec["content"]
            except (ValueError, KeyError, TypeError):  # UnicodeDecodeError is a ValueError
                log.warning("llm cache %s: skipping an unreadable line", self.path)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> str | None:
        return self._data.get(key)

    def put(self, key: str, content: str) -> None:
        line = json.dumps({"key": key, "content": content}, ensure_ascii=False) + "\n"
        with self._lock:
            if self._data.get(key) == content:
                return
            _append_line(self.path, line)
            self._data[key] = content

    def drop(self, key: str, reason: str) -> None:
        """Forget a cached reply (a tombstone line, so a rerun does not serve it either)."""
        with self._lock:
            if key not in self._data:
                return
            _append_line(self.path, json.dumps({"key": key, "dropped": reason}, ensure_ascii=False) + "\n")
            del self._data[key]

    def reject(self, key: str, content: str, reason: str) -> None:
        """Keep an unusable reply for diagnosis (never served from the cache)."""
        line = json.dumps({"key": key, "reason": reason, "content": content}, ensure_ascii=False) + "\n"
        with self._lock:
            _append_line(self.rejects_path, line)


# ---------------------------------------------------------------------------------------------
# the client
# ---------------------------------------------------------------------------------------------
class _Retryable(Exception):
    def __init__(self, kind: str, retry_after: float | None = None):
        super().__init__(kind)
        self.kind = kind
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _transport_kind(exc: Exception) -> str:
    """A few words for a requests exception: timeout, connection refused, connection reset, ..."""
    if isinstance(exc, requests.Timeout):
        return "timeout"
    text = repr(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "reset" in text or "aborted" in text or "remotedisconnected" in text or "closed" in text:
        return "connection closed by the server"
    if "name or service" in text or "nodename" in text or "resolve" in text:
        return "host name not resolved"
    return f"connection error ({type(exc).__name__})"


@dataclass
class LLMClient:
    """Chat-completions client with cache, bounded concurrency, timeouts, retries and backoff."""

    base_url: str
    model: str
    temperature: float = 0.7
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 4
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    cache_dir: str | Path = "data/cache/llm"
    allow_remote_phi: bool = False
    max_retry_after_s: float = 60.0
    abort_after_failures: int = 8
    #: every request carries data derived from a credentialed source (data.source: mimic)
    credentialed: bool = False
    path: str = "/chat/completions"
    stats: dict[str, Any] = field(default_factory=lambda: {
        "requests": 0, "cache_hits": 0, "retries": 0, "failures": 0, "rejected": 0, "not_sent": 0,
        "failure_kinds": {}})

    def __post_init__(self) -> None:
        self.cache = ResponseCache(self.cache_dir)
        self._stats_lock = threading.Lock()
        self._kinds: Counter[str] = Counter()
        self._consecutive = 0
        self._tripped: str | None = None

    @classmethod
    def from_params(cls, llm: dict[str, Any], credentialed: bool = False) -> "LLMClient":
        return cls(
            base_url=llm["base_url"], model=llm["model"], temperature=llm["temperature"],
            api_key_env=llm["api_key_env"], max_concurrency=llm["max_concurrency"],
            timeout_s=llm["timeout_s"], max_retries=llm["max_retries"], backoff_s=llm["backoff_s"],
            cache_dir=llm["cache_dir"], allow_remote_phi=llm["allow_remote_phi"],
            max_retry_after_s=llm["max_retry_after_s"],
            abort_after_failures=llm["abort_after_failures"],
            credentialed=credentialed,
        )

    # -- helpers -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.path

    def _key_value(self) -> str | None:
        value = os.environ.get(self.api_key_env)
        return value or None

    def redact(self, text: str) -> str:
        key = self._key_value()
        if key:
            text = text.replace(key, "***")
        return text

    def _bump(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] += n

    def key_for(self, messages: Messages, attempt: int = 0) -> str:
        return request_key(urlsplit(self.url).path, self.model, messages, self.temperature, attempt)

    def _guard(self, contains_report_text: bool) -> None:
        """The privacy and transport checks, run before every request (no DNS, no socket)."""
        assert_phi_allowed(self.base_url, contains_report_text or self.credentialed, self.allow_remote_phi)
        assert_transport_safe(self.base_url, self._key_value() is not None, self.api_key_env)

    def _record_failure(self, kind: str) -> None:
        with self._stats_lock:
            self.stats["failures"] += 1
            self._kinds[kind] += 1
            self.stats["failure_kinds"] = dict(sorted(self._kinds.items()))
            self._consecutive += 1
            if self._tripped is None:
                if kind.startswith("HTTP ") and kind[5:8].isdigit() and int(kind[5:8]) in FATAL_STATUSES:
                    hint = ("check llm.base_url and llm.model" if kind.startswith("HTTP 404")
                            else f"check the key in ${self.api_key_env}")
                    self._tripped = f"the server answered {kind} ({hint})"
                elif self.abort_after_failures and self._consecutive >= self.abort_after_failures:
                    self._tripped = (f"{self._consecutive} requests in a row failed after all retries "
                                     f"(llm.abort_after_failures), last: {kind}")

    def _record_success(self) -> None:
        with self._stats_lock:
            self._consecutive = 0

    @property
    def tripped(self) -> str | None:
        """Why the client stopped sending requests (None while it is still sending)."""
        return self._tripped

    # -- one request -------------------------------------------------------------------------
    def _post_once(self, messages: Messages, attempt: int, contains_report_text: bool) -> str:
        self._guard(contains_report_text)
        headers = {"Content-Type": "application/json"}
        key = self._key_value()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                   "seed": int(attempt)}
        self._bump("requests")
        try:
            resp = requests.post(self.url, json=payload, headers=headers, timeout=self.timeout_s)
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise _Retryable(_transport_kind(exc)) from None
        if resp.status_code == 429:
            raise _Retryable("HTTP 429", parse_retry_after(resp.headers.get("Retry-After")))
        if resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise LLMError(self.redact(f"{self.url}: HTTP {resp.status_code}: {resp.text[:200]}"),
                           kind=f"HTTP {resp.status_code}")
        try:
            body = resp.json()
            content = body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable("unparseable response body") from None
        if content is None:
            raise _Retryable("null content")
        if not isinstance(content, str):
            raise _Retryable("response content is not a string")
        return content

    def _send(self, messages: Messages, attempt: int, contains_report_text: bool) -> str:
        """POST with retries; raises :class:`LLMError` (with ``kind``) when no reply came."""
        last: _Retryable | None = None
        for i in range(self.max_retries + 1):
            if i:
                delay = self.backoff_s * 2 ** (i - 1)
                if last is not None and last.retry_after is not None:
                    delay = min(last.retry_after, self.max_retry_after_s)
                _sleep(delay)
            if self._tripped is not None:  # checked right before every POST (also after a backoff)
                self._bump("not_sent")
                raise LLMError(self.redact(f"{self.url}: not sent: {self._tripped}"), kind="not sent")
            if i:
                self._bump("retries")
            try:
                content = self._post_once(messages, attempt, contains_report_text)
            except _Retryable as exc:
                last = exc
                log.debug("llm request try %d failed: %s", i + 1, exc.kind)
                continue
            except LLMError as exc:
                self._record_failure(exc.kind)
                raise
            self._record_success()
            return content
        kind = last.kind if last is not None else "no attempt"
        self._record_failure(kind)
        raise LLMError(self.redact(f"{self.url}: giving up after {self.max_retries + 1} tries: {kind}"), kind=kind)

    def _settle(self, key: str, index: int, content: str, validate: Validator | None, cached: bool) -> None:
        """Cache an accepted reply; keep a rejected one in rejects.jsonl (and drop it if cached)."""
        reason = validate(index, content) if validate is not None else None
        if reason is None:
            if not cached:
                self.cache.put(key, content)
            return
        self._bump("rejected")
        self.cache.reject(key, content, reason)
        if cached:
            self.cache.drop(key, reason)

    def complete(self, messages: Messages, attempt: int = 0, contains_report_text: bool = False,
                 validate: Callable[[str], str | None] | None = None) -> str:
        """The assistant's reply for ``messages`` (cached once accepted; retried; raises :class:`LLMError`)."""
        out = self.complete_many([(messages, attempt)], contains_report_text,
                                 validate=(lambda _i, c: validate(c)) if validate else None)[0]
        if isinstance(out, LLMError):
            raise out
        return out

    def complete_many(
        self, requests_: Sequence[tuple[Messages, int]], contains_report_text: bool = False,
        validate: Validator | None = None,
    ) -> list[str | LLMError]:
        """Run many ``(messages, attempt)`` requests, ``max_concurrency`` at a time.

        Returns, in input order, the reply or the :class:`LLMError` of each request (one failing
        request never sinks the others). ``validate(i, reply)`` runs in the calling thread as each
        reply arrives (and on cache hits): ``None`` accepts it (it is cached), a string rejects it
        (kept in rejects.jsonl with that reason, never cached; the reply is still returned).
        """
        self._guard(contains_report_text)
        out: list[str | LLMError | None] = [None] * len(requests_)
        keys = [self.key_for(m, a) for m, a in requests_]
        todo = []
        for i, key in enumerate(keys):
            cached = self.cache.get(key)
            if cached is not None:
                self._bump("cache_hits")
                self._settle(key, i, cached, validate, cached=True)
                out[i] = cached
            else:
                todo.append(i)
        if todo:
            log.info("llm: %d requests to send (%d answered from cache), %d in flight at most",
                     len(todo), len(requests_) - len(todo), self.max_concurrency)
            with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
                futures = {pool.submit(self._send, *requests_[i], contains_report_text): i for i in todo}
                for fut in as_completed(futures):
                    i = futures[fut]
                    try:
                        content = fut.result()
                    except LLMError as exc:
                        out[i] = exc
                        continue
                    self._settle(keys[i], i, content, validate, cached=False)
                    out[i] = content
        return out  # type: ignore[return-value]


def outage_error(stage: str, client: LLMClient, n_failed: int, n_asked: int) -> LLMOutageError:
    """The stop message for a stage whose requests got no reply: what failed, how many, how to resume."""
    st = client.stats
    kinds = ", ".join(f"{k} x{v}" for k, v in sorted(st["failure_kinds"].items(), key=lambda kv: -kv[1])) or "unknown"
    why = f"; stopped sending: {client.tripped}" if client.tripped else ""
    return LLMOutageError(client.redact(
        f"{stage}: the LLM server at {client.url} gave no usable reply for {n_failed} of {n_asked} question(s) "
        f"({st['requests']} HTTP request(s) sent, {st['retries']} retries, {st['not_sent']} not sent, "
        f"{st['cache_hits']} cache hit(s); failures: {kinds}{why}). Nothing was written. "
        f"The {len(client.cache)} accepted replies are cached in {client.cache.dir}: fix the server, "
        f"llm.base_url or the key in ${client.api_key_env}, then rerun the same command; only the missing "
        "requests are sent (llm.max_failed_fraction tolerates a share of failed questions)."
    ))


def parse_json_reply(text: str) -> Any:
    """Parse a JSON object from a chat reply (tolerates ```json fences and leading prose)."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else s[3:]
        if s.rstrip().endswith("```"):
            s = s.rstrip()[:-3]
    try:
        return json.loads(s)
    except ValueError:
        start, end = s.find("{"), s.rfind("}")
        if 0 <= start < end:
            return json.loads(s[start : end + 1])
        raise
