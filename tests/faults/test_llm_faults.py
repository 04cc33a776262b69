"""LLM outages and unusable replies: the mcq/affirm stages stop with what failed, cache only
validated replies, honour Retry-After, and never open a connection the PHI guard forbids."""

from __future__ import annotations

import json
import socket
import time

import polars as pl
import pytest
from fake_openai_server import FakeOpenAI
from faultkit import CHECKER_NORMAL_CONDITIONS, FAKE_KEY, free_port, make_permutations, write_params

from nast.cli import main
from nast.io import write_parquet


def _mcq(tmp, pfile, perm, tag="run"):
    out, q = tmp / tag / "mcq.parquet", tmp / tag / "q.parquet"
    rc = main(["mcq", "--params", str(pfile), "--permutations", str(perm), "--out", str(out), "--quarantine", str(q)])
    return rc, out, q


def _perm(tmp, n, seed=1):
    path = tmp / "permutations.parquet"
    write_parquet(make_permutations(n, seed=seed), path)
    return path


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- outages
def test_server_down_stops_with_connection_refused(params, in_tmp, capsys):
    perm = _perm(in_tmp, 6)
    pfile = write_params(params, in_tmp / "p.yaml", base_url=f"http://127.0.0.1:{free_port()}/v1")
    rc, out, q = _mcq(in_tmp, pfile, perm)
    err = capsys.readouterr().err
    assert rc == 2
    assert "connection refused" in err and "no usable reply for 6 of 6 question(s)" in err
    assert "HTTP request(s) sent" in err and "rerun the same command" in err
    assert not out.exists() and not q.exists()  # nothing that Snakemake/DVC could take for a result


def test_many_failures_in_a_row_stop_sending(params, in_tmp, capsys):
    perm = _perm(in_tmp, 12)
    pfile = write_params(params, in_tmp / "p.yaml", base_url=f"http://127.0.0.1:{free_port()}/v1",
                         abort_after_failures=2, max_concurrency=1)
    rc, _, _ = _mcq(in_tmp, pfile, perm)
    err = capsys.readouterr().err
    assert rc == 2 and "2 requests in a row failed" in err
    assert "4 HTTP request(s) sent" in err and "10 not sent" in err  # 2 questions x (1 + 1 retry)


def test_rejected_key_stops_at_once_and_is_redacted(params, in_tmp, capsys):
    perm = _perm(in_tmp, 10)
    with FakeOpenAI("status", status=401) as srv:
        pfile = write_params(params, in_tmp / "p.yaml", base_url=srv.base_url)
        rc, out, _ = _mcq(in_tmp, pfile, perm)
        n = len(srv.log)
    err = capsys.readouterr().err
    assert rc == 2 and "HTTP 401" in err and "check the key in $NAST_TEST_FAKE_KEY" in err
    assert n <= 2  # only the requests already in flight (max_concurrency); a 401 is not retried
    assert FAKE_KEY not in err and not out.exists()


@pytest.mark.parametrize("mode, kind", [("error500", None), ("status", "HTTP 500"), ("null_content", "null content")])
def test_server_errors_retried_then_reported(params, in_tmp, capsys, mode, kind):
    perm = _perm(in_tmp, 3)
    with FakeOpenAI(mode, status=500) as srv:
        pfile = write_params(params, in_tmp / "p.yaml", base_url=srv.base_url)
        rc, out, _ = _mcq(in_tmp, pfile, perm)
        hits = sorted(srv.hits.values())
    err = capsys.readouterr().err
    assert hits == [2, 2, 2]  # every request retried once (llm.max_retries: 1)
    if kind is None:  # a transient 500: the retry answers
        assert rc == 0 and pl.read_parquet(out).height == 3
    else:
        assert rc == 2 and f"failures: {kind} x3" in err and not out.exists()


def test_partial_outage_fails_unless_tolerated(params, in_tmp, capsys):
    perm = _perm(in_tmp, 8, seed=3)
    with FakeOpenAI("fail_some", status=500) as srv:
        pfile = write_params(params, in_tmp / "p.yaml", base_url=srv.base_url, abort_after_failures=0)
        rc, out, _ = _mcq(in_tmp, pfile, perm, "strict")
        err = capsys.readouterr().err
        n_bad = sum(srv.fails(k) for k in set(srv.keys()))
        assert 0 < n_bad < 8  # a partial outage (the fixed seed makes it one)
        assert rc == 2 and f"no usable reply for {n_bad} of 8 question(s)" in err and not out.exists()
        params["mcq"]["min_kept_fraction"] = 0.0
        pfile = write_params(params, in_tmp / "p2.yaml", base_url=srv.base_url, abort_after_failures=0,
                             max_failed_fraction=0.9)
        rc, out, q = _mcq(in_tmp, pfile, perm, "tolerant")
    assert rc == 0 and pl.read_parquet(out).height == 8 - n_bad
    reasons = pl.read_parquet(q)["reason"].to_list()
    assert len(reasons) == n_bad and all("llm request failed" in r and "HTTP 500" in r for r in reasons)


def test_hanging_server_times_out(params, in_tmp, capsys):
    perm = _perm(in_tmp, 2)
    with FakeOpenAI("never", slow_s=1.2) as srv:
        pfile = write_params(params, in_tmp / "p.yaml", base_url=srv.base_url, timeout_s=0.2)
        t0 = time.monotonic()
        rc, _, _ = _mcq(in_tmp, pfile, perm)
        took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert rc == 2 and "failures: timeout x2" in err
    assert took < 5


def test_retry_after_is_honoured(params, in_tmp):
    perm = _perm(in_tmp, 2)
    with FakeOpenAI("rate_limit", retry_after="1") as srv:
        pfile = write_params(params, in_tmp / "p.yaml", base_url=srv.base_url)
        rc, out, _ = _mcq(in_tmp, pfile, perm)
        by_key: dict[str, list[float]] = {}
        for rec, t in zip(srv.log, srv.times):
            by_key.setdefault(rec["key"], []).append(t)
    assert rc == 0 and pl.read_parquet(out).height == 2
    gaps = [ts[1] - ts[0] for ts in by_key.values()]
    assert len(gaps) == 2 and all(g >= 0.95 for g in gaps), gaps  # backoff_s alone would be 0.01 s


def test_retry_after_is_bounded(params, in_tmp, monkeypatch):
    from nast.text import llm

    waits = []
    monkeypatch.setattr(llm, "_sleep", waits.append)  # record, do not sleep (an unbounded wait is an hour)
    perm = _perm(in_tmp, 1)
    with FakeOpenAI("rate_limit", retry_after="3600") as srv:
        pfile = write_params(params, in_tmp / "p.yaml", base_url=srv.base_url, max_retry_after_s=0.3)
        rc, _, _ = _mcq(in_tmp, pfile, perm)
    assert rc == 0 and waits == [0.3]


def test_parse_retry_after_forms():
    from nast.text.llm import parse_retry_after

    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 55 <= parse_retry_after("Wed, 02 Dec 2026 12:01:00 GMT", now=1796212800.0) <= 65  # noon + 60 s


def test_killed_server_then_resume_sends_only_the_missing(params, in_tmp, capsys):
    perm = _perm(in_tmp, 8, seed=5)
    cache = in_tmp / "cache" / "responses.jsonl"
    with FakeOpenAI("die_after", die_after=3) as srv:
        pfile = write_params(params, in_tmp / "p.yaml", base_url=srv.base_url, max_concurrency=1)
        rc, out, _ = _mcq(in_tmp, pfile, perm, "killed")
    err = capsys.readouterr().err
    assert rc == 2 and "connection" in err and not out.exists()
    first = {r["key"] for r in _lines(cache)}
    assert len(first) == 3
    with FakeOpenAI("correct") as srv:  # restarted (on another port: the port is not in the request key)
        pfile = write_params(params, in_tmp / "p.yaml", base_url=srv.base_url)
        rc, out, _ = _mcq(in_tmp, pfile, perm, "resumed")
        sent = srv.keys()
        pref = write_params(params, in_tmp / "ref.yaml", base_url=srv.base_url, cache_dir=str(in_tmp / "c2"))
        assert _mcq(in_tmp, pref, perm, "reference")[0] == 0
    assert rc == 0
    assert len(sent[:5]) == len(set(sent[:5])) == 5 and not set(sent[:5]) & first  # only the 5 missing
    assert len(_lines(cache)) == 8  # nothing duplicated
    assert out.read_bytes() == (in_tmp / "reference" / "mcq.parquet").read_bytes()


# --------------------------------------------------------------------------- unusable replies
def test_prose_replies_are_not_cached_and_are_asked_again(params, in_tmp, capsys):
    perm = _perm(in_tmp, 4)
    cache_dir = in_tmp / "cache"
    with FakeOpenAI("prose") as srv:
        pfile = write_params(params, in_tmp / "p.yaml", base_url=srv.base_url)
        rc, out, q = _mcq(in_tmp, pfile, perm)
        err = capsys.readouterr().err
        assert rc == 2 and "only 0 of 4 rows kept" in err and "min_kept_fraction" in err and str(q) in err
        assert not out.exists() and pl.read_parquet(q).height == 4  # the quarantine says why
        assert (in_tmp / "run" / "mcq.summary.json").exists()
        assert _lines(cache_dir / "responses.jsonl") == []
        rejects = _lines(cache_dir / "rejects.jsonl")
        assert len(rejects) == 8 and all("unparseable" in r["reason"] and r["content"] for r in rejects)
        n = len(srv.log)
        srv.mode = "correct"  # the server is fixed: the rerun asks again instead of serving garbage
        rc, out, _ = _mcq(in_tmp, pfile, perm, "fixed")
        assert rc == 0 and pl.read_parquet(out).height == 4
        assert len(srv.log) - n == 4 and {r["seed"] for r in srv.log[n:]} == {0}


def test_a_cached_reply_that_fails_is_dropped_for_good(tmp_path):
    from nast.text.llm import ResponseCache

    c = ResponseCache(tmp_path)
    c.put("k", "garbage from an older version")
    c.drop("k", "unparseable reply")
    assert "k" not in c and "k" not in ResponseCache(tmp_path)  # a tombstone, also after a reload
    c.put("k", "good")
    assert ResponseCache(tmp_path).get("k") == "good"


def test_wrong_replies_below_min_kept_fraction_stop_and_zero_allows(params, in_tmp, capsys):
    perm = _perm(in_tmp, 3)
    with FakeOpenAI("always_wrong") as srv:
        pfile = write_params(params, in_tmp / "p.yaml", base_url=srv.base_url)
        rc, out, _ = _mcq(in_tmp, pfile, perm)
        assert rc == 2 and "expected" in capsys.readouterr().err and not out.exists()
        params["mcq"]["min_kept_fraction"] = 0.0
        pfile = write_params(params, in_tmp / "p0.yaml", base_url=srv.base_url)
        (in_tmp / "reports").exists() and __import__("shutil").rmtree(in_tmp / "reports")
        rc, out, q = _mcq(in_tmp, pfile, perm, "allowed")
    assert rc == 0 and pl.read_parquet(out).height == 0 and pl.read_parquet(q).height == 3
    assert (in_tmp / "reports" / "validation" / "mcq.md").exists()  # the gate ran on the empty table


def test_affirm_outage_stops_too(params, in_tmp, capsys):
    from nast.text.mcq import build_mcq

    p = {**params, "mcq": {**params["mcq"], "backend": "template"}}
    mcq, _, _ = build_mcq(make_permutations(3, seed=2, conditions=CHECKER_NORMAL_CONDITIONS), p)
    write_parquet(mcq, in_tmp / "mcq.parquet")
    pfile = write_params(params, in_tmp / "p.yaml", base_url=f"http://127.0.0.1:{free_port()}/v1")
    rc = main(["affirm", "--params", str(pfile), "--mcq", str(in_tmp / "mcq.parquet"),
               "--out", str(in_tmp / "b.parquet"), "--quarantine", str(in_tmp / "bq.parquet")])
    err = capsys.readouterr().err
    assert rc == 2 and "affirm: the LLM server" in err and "connection refused" in err
    assert not (in_tmp / "b.parquet").exists()


# --------------------------------------------------------------------------- PHI guard
@pytest.fixture()
def no_network(monkeypatch):
    """Record (and refuse) every name resolution and connection attempt."""
    calls = []

    def refuse(name):
        def f(*a, **k):
            calls.append((name, a[:2]))
            raise OSError(f"test: {name} must not be called")
        return f

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    return calls


@pytest.mark.parametrize("allow_remote_phi, key, expect", [
    (False, False, "credentialed"),     # MIMIC-derived labels never leave the machine
    (False, True, "credentialed"),
    (True, True, "plain http"),         # allowed to leave, but not with the key in clear text
])
def test_phi_guard_refuses_before_any_connection(params, in_tmp, capsys, monkeypatch, no_network,
                                                 allow_remote_phi, key, expect):
    if not key:
        monkeypatch.delenv("NAST_TEST_FAKE_KEY")
    perm = _perm(in_tmp, 2)
    params["data"]["source"] = "mimic"
    pfile = write_params(params, in_tmp / "p.yaml", base_url="http://example.invalid/v1",
                         allow_remote_phi=allow_remote_phi)
    rc, out, _ = _mcq(in_tmp, pfile, perm)
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and "example.invalid" in err and "nothing was sent" in err
    assert no_network == []  # not even a DNS lookup
    assert not out.exists()


def test_phi_guard_covers_affirm_and_every_request(params, tmp_path, no_network, monkeypatch):
    from nast.text.llm import LLMClient, PHIError

    client = LLMClient.from_params({**params["llm"], "base_url": "http://example.invalid/v1"}, credentialed=True)
    with pytest.raises(PHIError):
        client.complete_many([([{"role": "user", "content": "x"}], 0)])  # labels only, still credentialed
    with pytest.raises(PHIError):  # the per-request guard, not only the batch entry point
        client._post_once([{"role": "user", "content": "x"}], 0, False)
    assert client.stats["requests"] == 0 and no_network == []


def test_a_damaged_cache_line_is_skipped_not_repaired(tmp_path):
    from nast.text.llm import ResponseCache

    c = ResponseCache(tmp_path)
    c.put("a", "fine")
    with open(c.path, "ab") as fh:
        fh.write(b'{"key": "b", "content": "bad \xff byte"}\n')
    again = ResponseCache(tmp_path)
    assert again.get("a") == "fine" and "b" not in again
