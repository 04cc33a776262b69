"""A loopback OpenAI-compatible chat-completions server for the text_gen tests.

``POST /v1/chat/completions`` answers in the OpenAI response format. The reply is computed from the
machine-readable ``INPUT:`` JSON block the NAST prompts end with, so a "correct" answer really states
the requested label vectors. Failure modes (per distinct request, i.e. per request key):

* ``correct``      always a correct answer
* ``wrong_first``  a polarity-flipped answer for attempt (seed) 0, correct from attempt 1 on
* ``always_wrong`` always polarity-flipped
* ``slow``         the first hit of each request sleeps ``slow_s`` (> client timeout), then correct
* ``error500``     the first hit of each request gets HTTP 500, then correct
* ``garbage``      the first hit of each request gets a non-JSON body, then correct
* ``never``        never answers in time (sleeps ``slow_s`` every time)
* ``block_after``  answers the first ``block_after`` requests, then blocks until ``release()``
* ``status``       every request gets HTTP ``status`` (e.g. 401, 500) with a JSON error body
* ``rate_limit``   the first hit of each request gets HTTP 429 with ``Retry-After: retry_after``
* ``prose``        HTTP 200 whose content is prose (no JSON object, no "A." lines)
* ``null_content`` HTTP 200 with ``"content": null``
* ``fail_some``    HTTP 500 on every hit of the requests whose key ends in an even hex digit (about half),
                   correct answers for the others (a partial outage)
* ``die_after``    answers the first ``die_after`` requests, then the server shuts down (a killed
                   server: later requests find nothing listening)

Every request is recorded (``server.log``: request key as the client computes it, seed, headers).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nast.text.llm import request_key


def _join(items: list[str], conj: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


def _mcq_option(labels: dict[str, int], terms: dict[str, str], flip: bool) -> str:
    present = [terms[c] for c, v in labels.items() if (v == 1) != flip]
    absent = [terms[c] for c, v in labels.items() if (v == 1) == flip]
    if present and absent:
        text = f"{_join(present)} without {_join(absent, 'or')}"
    elif present:
        text = f"{_join(present)} present"
    else:
        text = f"no {_join(absent, 'or')}"
    return text[0].upper() + text[1:]


def _affirm_option(labels: dict[str, int], terms: dict[str, str], aff: dict[str, str], flip: bool) -> str:
    present = [terms[c] for c, v in labels.items() if v == 1]
    normal = [aff[c] for c, v in labels.items() if v == 0]
    if flip:  # a wrong rewrite: keeps a negation cue
        normal = [f"no {terms[c]}" for c, v in labels.items() if v == 0]
    text = _join(present + normal)
    return text[0].upper() + text[1:]


def answer(payload: dict, wrong: bool) -> str:
    user = payload["messages"][-1]["content"]
    task = json.loads(user.split("INPUT:", 1)[1])
    if task["task"] == "mcq":
        opts = {k: _mcq_option(v, task["terms"], wrong) for k, v in task["options"].items()}
        return json.dumps({"question": "Which statement best describes this chest X-ray?", **opts})
    if task["task"] == "affirm":
        opts = {k: _affirm_option(v["labels"], task["terms"], task["affirmative"], wrong)
                for k, v in task["options"].items()}
        return json.dumps(opts)
    raise ValueError(task["task"])


class FakeOpenAI:
    def __init__(self, mode: str = "correct", slow_s: float = 1.0, block_after: int = 0, status: int = 500,
                 retry_after: str = "1", die_after: int = 0, port: int = 0):
        self.mode, self.slow_s, self.block_after = mode, slow_s, block_after
        self.status, self.retry_after, self.die_after = status, retry_after, die_after
        self.times: list[float] = []  # arrival time of every request (time.monotonic)
        self._dead = threading.Event()
        self.log: list[dict] = []
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()
        self._release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                outer._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._release.set()
        if not self._dead.is_set():
            self.httpd.shutdown()
        self.httpd.server_close()

    def kill(self) -> None:
        """Stop listening (from a handler thread too): later requests get "connection refused"."""
        if self._dead.is_set():
            return
        self._dead.set()
        self.httpd.server_close()  # close the listening socket now
        threading.Thread(target=self.httpd.shutdown, daemon=True).start()

    def release(self) -> None:
        self._release.set()

    @staticmethod
    def fails(key: str) -> bool:
        """Whether ``fail_some`` fails this request."""
        return int(key[-1], 16) % 2 == 0

    def keys(self) -> list[str]:
        with self._lock:
            return [r["key"] for r in self.log]

    def _send(self, h, code: int, body: bytes, headers: dict | None = None) -> None:
        try:
            h.send_response(code)
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _handle(self, h) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        if h.path.rstrip("/") != "/v1/chat/completions":
            return self._send(h, 404, b'{"error": "not found"}')
        payload = json.loads(raw)
        key = request_key("/v1/chat/completions", payload["model"], payload["messages"],
                          payload["temperature"], payload.get("seed", 0))
        with self._lock:
            n_before = len(self.log)
            self.times.append(time.monotonic())
            self.log.append({"key": key, "seed": payload.get("seed"), "auth": h.headers.get("Authorization")})
            hit = self.hits[key] = self.hits.get(key, 0) + 1
        mode = self.mode
        first = hit == 1
        if mode == "never" or (mode == "slow" and first):
            time.sleep(self.slow_s)
        if mode == "block_after" and n_before >= self.block_after:
            self._release.wait()
        if mode == "die_after" and n_before >= self.die_after:
            self.kill()
            h.close_connection = True
            return None  # no reply: the connection is closed
        if mode == "status" or (mode == "fail_some" and self.fails(key)):
            return self._send(h, self.status, b'{"error": {"message": "injected", "code": "injected"}}')
        if mode == "rate_limit" and first:
            return self._send(h, 429, b'{"error": "slow down"}', {"Retry-After": self.retry_after})
        if mode == "error500" and first:
            return self._send(h, 500, b'{"error": "boom"}')
        if mode == "garbage" and first:
            return self._send(h, 200, b"<html>this is not json")
        wrong = mode == "always_wrong" or (mode == "wrong_first" and payload.get("seed", 0) == 0)
        content = answer(payload, wrong)
        if mode == "prose":
            content = "Sure! Here is a lovely question about the chest X-ray you described, with four options."
        elif mode == "null_content":
            content = None
        body = {
            "id": f"chatcmpl-{len(self.log)}", "object": "chat.completion", "created": 0,
            "model": payload["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        self._send(h, 200, json.dumps(body).encode())
