"""A small, resumable client for any OpenAI-compatible chat-completions server.

Used by the ``openai`` backends of ``nast mcq`` and ``nast affirm`` (vLLM, Ollama, LM Studio,
llama.cpp server or a hosted API: anything that answers ``POST {base_url}/chat/completions``).

Method
------
* **Request identity.** Every request is identified by a SHA-256 hash of its full content: the URL
  path, model, messages, temperature and the attempt number (sent as ``seed``). The API key is
  *not* part of the hash, so changing keys never invalidates the cache and the key never lands on
  disk.
* **Cache = the run's memory.** Responses are appended to ``{cache_dir}/responses.jsonl``, one
  ``flush`` + ``fsync``'d line per response, from a single writer lock. A killed run loses at most the
  line being written (a torn last line is cut off on the next open); a rerun reads the cache first
  and sends only the requests that are not in it, so nothing is asked twice and nothing is
  duplicated. Stages build their final tables from cached responses only, so an interrupted and
  resumed run yields the same table as an uninterrupted one.
* **Transport robustness.** Up to ``max_concurrency`` requests are in flight (a thread pool with
  ``requests``); each has a ``timeout_s`` timeout; timeouts, connection errors, HTTP 429/5xx and
  unparseable bodies are retried ``max_retries`` times with exponential backoff
  (``backoff_s * 2**i``). Other 4xx errors fail at once (a bad model name will not fix itself).
* **Secrets and privacy.** The key is read from the environment variable named by
  ``llm.api_key_env`` and redacted from every error message. :func:`assert_phi_allowed` refuses to
  send report text to a non-loopback host unless ``llm.allow_remote_phi`` is true; every call path
  goes through it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

import requests

from nast.errors import StageError

log = logging.getLogger(__name__)

CACHE_FILE = "responses.jsonl"
Messages = list[dict[str, str]]


class LLMError(StageError):
    """A request failed after all transport retries (message redacted)."""


class PHIError(StageError):
    """Report text would be sent to a non-loopback host while llm.allow_remote_phi is false."""


# ---------------------------------------------------------------------------------------------
# privacy guard
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
    """Raise :class:`PHIError` when report text would leave the machine without permission.

    Condition names and label vectors are not report text (``contains_report_text=False``) and may
    go anywhere; report text may go only to a loopback host unless ``allow_remote_phi`` is true.
    """
    if not contains_report_text or allow_remote_phi:
        return
    host = urlsplit(base_url).hostname
    if not is_loopback_host(host):
        raise PHIError(
            f"refusing to send report text to non-loopback host {host!r} ({base_url}); "
            "set llm.allow_remote_phi: true in params.yaml only if your data use agreement allows it"
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


class ResponseCache:
    """Append-only JSONL cache ``{"key": ..., "content": ...}``; one fsync'd line per response."""

    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / CACHE_FILE
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
        for line in raw[:good_end].decode("utf-8").splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self._data[rec["key"]] = rec["content"]
            except (ValueError, KeyError, TypeError):
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
            if key in self._data:
                return
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            self._data[key] = content


# ---------------------------------------------------------------------------------------------
# the client
# ---------------------------------------------------------------------------------------------
class _Retryable(Exception):
    pass


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
    path: str = "/chat/completions"
    stats: dict[str, int] = field(default_factory=lambda: {"requests": 0, "cache_hits": 0, "retries": 0, "failures": 0})

    def __post_init__(self) -> None:
        self.cache = ResponseCache(self.cache_dir)
        self._stats_lock = threading.Lock()

    @classmethod
    def from_params(cls, llm: dict[str, Any]) -> "LLMClient":
        return cls(
            base_url=llm["base_url"], model=llm["model"], temperature=llm["temperature"],
            api_key_env=llm["api_key_env"], max_concurrency=llm["max_concurrency"],
            timeout_s=llm["timeout_s"], max_retries=llm["max_retries"], backoff_s=llm["backoff_s"],
            cache_dir=llm["cache_dir"], allow_remote_phi=llm["allow_remote_phi"],
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

    def _bump(self, name: str) -> None:
        with self._stats_lock:
            self.stats[name] += 1

    def key_for(self, messages: Messages, attempt: int = 0) -> str:
        return request_key(urlsplit(self.url).path, self.model, messages, self.temperature, attempt)

    # -- one request -------------------------------------------------------------------------
    def _post_once(self, messages: Messages, attempt: int) -> str:
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
            raise _Retryable(f"{type(exc).__name__}") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise LLMError(self.redact(f"{self.url}: HTTP {resp.status_code}: {resp.text[:200]}"))
        try:
            body = resp.json()
            content = body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable("unparseable response body") from None
        if not isinstance(content, str):
            raise _Retryable("response content is not a string")
        return content

    def complete(self, messages: Messages, attempt: int = 0, contains_report_text: bool = False) -> str:
        """The assistant's reply for ``messages`` (cached; retried; raises :class:`LLMError`)."""
        assert_phi_allowed(self.base_url, contains_report_text, self.allow_remote_phi)
        key = self.key_for(messages, attempt)
        cached = self.cache.get(key)
        if cached is not None:
            self._bump("cache_hits")
            return cached
        last = "no attempt"
        for i in range(self.max_retries + 1):
            if i:
                self._bump("retries")
                time.sleep(self.backoff_s * 2 ** (i - 1))
            try:
                content = self._post_once(messages, attempt)
            except _Retryable as exc:
                last = str(exc)
                log.debug("llm request %s try %d failed: %s", key[:10], i + 1, last)
                continue
            self.cache.put(key, content)
            return content
        self._bump("failures")
        raise LLMError(self.redact(f"{self.url}: giving up after {self.max_retries + 1} tries: {last}"))

    def complete_many(
        self, requests_: Sequence[tuple[Messages, int]], contains_report_text: bool = False
    ) -> list[str | LLMError]:
        """Run many ``(messages, attempt)`` requests, ``max_concurrency`` at a time.

        Returns, in input order, the reply or the :class:`LLMError` of each request (one failing
        request never sinks the others). Cached requests are answered without a thread.
        """
        assert_phi_allowed(self.base_url, contains_report_text, self.allow_remote_phi)
        out: list[str | LLMError | None] = [None] * len(requests_)
        todo = []
        for i, (messages, attempt) in enumerate(requests_):
            cached = self.cache.get(self.key_for(messages, attempt))
            if cached is not None:
                self._bump("cache_hits")
                out[i] = cached
            else:
                todo.append(i)

        def one(i: int) -> str | LLMError:
            messages, attempt = requests_[i]
            try:
                return self.complete(messages, attempt, contains_report_text)
            except LLMError as exc:
                return exc

        if todo:
            log.info("llm: %d requests to send (%d answered from cache), %d in flight at most",
                     len(todo), len(requests_) - len(todo), self.max_concurrency)
            with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
                for i, result in zip(todo, pool.map(one, todo)):
                    out[i] = result
        return out  # type: ignore[return-value]


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
