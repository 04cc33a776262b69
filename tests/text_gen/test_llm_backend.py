"""openai backend against a real loopback HTTP server: retries, re-asks, quarantine, cache, PHI guard."""

from __future__ import annotations

import json

import pytest
from conftest import CHECKER_NORMAL_CONDITIONS, make_permutations
from fake_openai_server import FakeOpenAI

from nast.text.affirm import build_benchmark
from nast.text.llm import LLMClient, PHIError, ResponseCache, assert_phi_allowed, is_loopback_host, request_key
from nast.text.mcq import build_mcq

FAKE_KEY = "sk-nast-test-DISTINCTIVE-9f3a7c"


def _client(params, server, **over):
    llm = {**params["llm"], "base_url": server.base_url, **over}
    return LLMClient.from_params(llm)


def _openai(params, **mcq):
    return {**params, "mcq": {**params["mcq"], "backend": "openai", **mcq},
            "affirm": {**params["affirm"], "backend": "openai"}}


# --------------------------------------------------------------------------- PHI guard
@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "http://127.9.9.9/v1", "http://localhost:1/v1",
                                 "http://[::1]:8000/v1"])
def test_phi_guard_allows_loopback(url):
    assert_phi_allowed(url, contains_report_text=True, allow_remote_phi=False)


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "http://10.0.0.5:8000/v1", "http://128.0.0.1/v1",
                                 "http://localhost.evil.com/v1"])
def test_phi_guard_refuses_remote_report_text(url):
    with pytest.raises(PHIError, match="non-loopback"):
        assert_phi_allowed(url, contains_report_text=True, allow_remote_phi=False)
    assert_phi_allowed(url, contains_report_text=True, allow_remote_phi=True)   # explicit opt-in
    assert_phi_allowed(url, contains_report_text=False, allow_remote_phi=False)  # labels only: fine


def test_client_guard_runs_before_any_request(params, tmp_path):
    client = LLMClient.from_params({**params["llm"], "base_url": "https://api.example.org/v1"})
    with pytest.raises(PHIError):
        client.complete([{"role": "user", "content": "FINDINGS: ..."}], contains_report_text=True)
    with pytest.raises(PHIError):
        client.complete_many([([{"role": "user", "content": "x"}], 0)], contains_report_text=True)
    assert client.stats["requests"] == 0
    assert not is_loopback_host(None) and is_loopback_host("LOCALHOST")


# --------------------------------------------------------------------------- cache
def test_request_key_covers_request_not_api_key(monkeypatch):
    msgs = [{"role": "user", "content": "hi"}]
    k = request_key("/v1/chat/completions", "m", msgs, 0.7, 0)
    assert k != request_key("/v1/chat/completions", "m", msgs, 0.7, 1)
    assert k != request_key("/v1/chat/completions", "m2", msgs, 0.7, 0)
    assert k != request_key("/v1/chat/completions", "m", msgs, 0.2, 0)
    assert k != request_key("/v2/chat/completions", "m", msgs, 0.7, 0)
    assert k != request_key("/v1/chat/completions", "m", [{"role": "user", "content": "hi!"}], 0.7, 0)


def test_cache_survives_torn_last_line(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.put("a", "first")
    cache.put("b", "second")
    with open(cache.path, "a") as fh:
        fh.write('{"key": "c", "content": "half')  # killed mid-write
    again = ResponseCache(tmp_path)
    assert again.get("a") == "first" and again.get("b") == "second" and "c" not in again
    again.put("c", "third")
    lines = cache.path.read_text().splitlines()
    assert [json.loads(x)["key"] for x in lines] == ["a", "b", "c"]


# --------------------------------------------------------------------------- mcq via the server
def test_correct_server_verifies_everything_and_rerun_is_free(params, monkeypatch):
    monkeypatch.setenv("NAST_TEST_FAKE_KEY", FAKE_KEY)
    perm = make_permutations(6, seed=4)
    with FakeOpenAI("correct") as srv:
        client = _client(params, srv)
        mcq, q, summary = build_mcq(perm, _openai(params), client=client)
        assert q.height == 0 and mcq.height == 6 and mcq["verified"].all()
        assert summary["share_options_verified"] == 1.0 and summary["llm"]["requests"] == 6
        assert all(r["auth"] == f"Bearer {FAKE_KEY}" for r in srv.log)
        n = len(srv.log)
        again, _, s2 = build_mcq(perm, _openai(params), client=_client(params, srv))
        assert len(srv.log) == n and s2["llm"]["requests"] == 0 and s2["llm"]["cache_hits"] == 6
        assert again.equals(mcq)
    assert set(mcq["mcq_backend"]) == {"openai"}
    assert FAKE_KEY not in "".join(p.read_text() for p in (params_cache(params)).iterdir())


def params_cache(params):
    from pathlib import Path
    return Path(params["llm"]["cache_dir"])


def test_wrong_polarity_is_reasked_with_next_attempt(params):
    perm = make_permutations(5, seed=6)
    with FakeOpenAI("wrong_first") as srv:
        mcq, q, summary = build_mcq(perm, _openai(params), client=_client(params, srv))
        seeds = sorted(r["seed"] for r in srv.log)
    assert q.height == 0 and mcq.height == 5
    assert seeds == [0] * 5 + [1] * 5
    assert summary["attempts_histogram"] == {"2": 5}
    assert summary["options_checked"] == 40 and summary["options_verified"] == 20


def test_always_wrong_is_quarantined_with_option_condition_expected_found(params):
    perm = make_permutations(3, seed=8)
    with FakeOpenAI("always_wrong") as srv:
        mcq, q, _ = build_mcq(perm, _openai(params, max_retries=2), client=_client(params, srv))
        assert len(srv.log) == 3 * 3
    assert mcq.height == 0 and q.height == 3
    for reason in q["reason"]:
        assert "after 3 attempt(s)" in reason
        assert "option A:" in reason
        assert "expected absent, found present" in reason or "expected present, found absent" in reason


@pytest.mark.parametrize("mode", ["slow", "error500", "garbage"])
def test_transport_failures_are_retried(params, mode):
    perm = make_permutations(4, seed=9)
    with FakeOpenAI(mode, slow_s=1.0) as srv:
        client = _client(params, srv, timeout_s=0.3)
        mcq, q, summary = build_mcq(perm, _openai(params), client=client)
        hits = sorted(srv.hits.values())
    assert q.height == 0 and mcq.height == 4
    assert hits == [2, 2, 2, 2]                     # first try failed, the retry succeeded
    assert summary["llm"]["retries"] == 4 and summary["llm"]["failures"] == 0


def test_server_that_never_answers_stops_the_stage(params):
    from nast.text.llm import LLMOutageError

    perm = make_permutations(3, seed=10)
    with FakeOpenAI("never", slow_s=0.6) as srv:
        client = _client(params, srv, timeout_s=0.15, max_retries=1)
        with pytest.raises(LLMOutageError, match=r"no usable reply for 3 of 3 question.*timeout x3") as exc:
            build_mcq(perm, _openai(params), client=client)
        assert len(srv.log) == 3 * 2
    assert "6 HTTP request(s) sent" in str(exc.value) and "rerun the same command" in str(exc.value)
    assert client.stats["failures"] == 3
    assert not params_cache(params).joinpath("responses.jsonl").exists()


# --------------------------------------------------------------------------- affirm via the server
def test_llm_affirm_rewrites_verified_and_reasked(params):
    perm = make_permutations(4, seed=12, conditions=CHECKER_NORMAL_CONDITIONS)
    mcq, _, _ = build_mcq(perm, params)  # template MCQ, LLM rewrites
    with FakeOpenAI("wrong_first") as srv:
        bench, q, summary = build_benchmark(mcq, _openai(params), client=_client(params, srv))
        seeds = sorted(r["seed"] for r in srv.log)
    assert q.height == 0 and bench.height == 4 and bench["affirm_verified"].all()
    assert seeds == [0] * 4 + [1] * 4
    assert summary["options_with_negation_cue"] > 0  # the first (wrong) answers carried "no ..."
    from nast.text import polarity
    assert not any(polarity.has_negation_cue(t) for L in "ABCD" for t in bench[f"affirmative_{L}"])
