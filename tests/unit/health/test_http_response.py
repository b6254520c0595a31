"""The HTTP check's response reader (sans-IO): fed bytes as they arrive, it gives a
verdict as soon as one is known, and reads a body only for a regex or a digest."""

from __future__ import annotations

import hashlib

import pytest

from hadirector.health.probes import MAX_BODY, HttpResponse, HttpRules, request_bytes
from hadirector.model import HttpProbe, StatusRange

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"


def feed(probe, *parts, eof=False):
    r = HttpResponse(probe)
    verdict = None
    for p in parts:
        verdict = r.feed(p)
        if verdict is not None:
            return verdict
    return r.eof() if eof else verdict


def test_a_status_check_decides_on_the_head_without_waiting_for_the_body():
    assert feed(HttpProbe(), OK_HEAD + b"Content-Length: 100\r\n\r\n") == (True, "status 200")


def test_the_head_may_arrive_in_pieces():
    assert feed(HttpProbe(), b"HTTP/1.1 20", b"0 OK\r\n", b"\r\n") == (True, "status 200")


def test_an_unexpected_status_fails_with_the_status():
    assert feed(HttpProbe(), b"HTTP/1.0 503 Busy\r\n\r\n") == (False, "status 503")
    ranged = HttpProbe(status_codes=(StatusRange(200, 299),))
    assert feed(ranged, b"HTTP/1.1 204 No Content\r\n\r\n") == (True, "status 204")


@pytest.mark.parametrize("head", [b"SSH-2.0-OpenSSH_9.2\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n",
                                  b"HTTP/1.1 abc OK\r\n\r\n", b"\r\n\r\n"])
def test_a_response_that_is_not_http_is_a_bad_response(head):
    assert feed(HttpProbe(), head) == (False, "bad response")


def test_a_server_closing_before_the_head_is_complete_is_disconnected():
    assert feed(HttpProbe(), eof=True) == (False, "disconnected")
    assert feed(HttpProbe(), b"HTTP/1.1 200 OK\r\n", eof=True) == (False, "disconnected")


def test_an_endless_head_is_a_bad_response():
    assert feed(HttpProbe(), b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000) == (False, "bad response")


def test_a_body_regex_reads_exactly_content_length_bytes():
    probe = HttpProbe(body_regex="all good")
    assert feed(probe, OK_HEAD + b"Content-Length: 8\r\n\r\nall", b" good") == (True, "status 200")
    assert feed(probe, OK_HEAD + b"Content-Length: 8\r\n\r\nall bad!") == (False, "body mismatch")


def test_a_body_cut_short_of_its_content_length_is_a_bad_body():
    probe = HttpProbe(body_regex="x")
    assert feed(probe, OK_HEAD + b"Content-Length: 10\r\n\r\nxx", eof=True) == (False, "bad body")


def test_without_a_length_the_body_runs_until_the_server_closes():
    probe = HttpProbe(body_regex="end$")
    r = HttpResponse(probe)
    assert r.feed(b"HTTP/1.0 200 OK\r\n\r\nthe ") is None
    assert r.feed(b"end") is None
    assert r.eof() == (True, "status 200")


def test_a_chunked_body_is_decoded_before_the_digest_is_taken():
    body = b"hello, chunked world"
    probe = HttpProbe(digest=hashlib.md5(body).hexdigest())
    wire = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"5\r\nhello\r\n" + b"f;ext=1\r\n, chunked world\r\n" + b"0\r\n\r\n"
    # byte by byte: every prefix is "not yet", the last byte decides
    r = HttpResponse(probe)
    verdicts = [r.feed(wire[i:i + 1]) for i in range(len(wire))]
    assert verdicts[:-1] == [None] * (len(wire) - 1) and verdicts[-1] == (True, "status 200")


def test_a_malformed_or_unfinished_chunked_body_is_a_bad_body():
    probe = HttpProbe(body_regex="x")
    head = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    assert feed(probe, head + b"zz\r\nxx\r\n") == (False, "bad body")
    assert feed(probe, head + b"2\r\nxx\r\n", eof=True) == (False, "bad body")


def test_a_digest_mismatch_is_reported():
    probe = HttpProbe(digest="0" * 32)
    assert feed(probe, OK_HEAD + b"Content-Length: 2\r\n\r\nok") == (False, "digest mismatch")


def test_a_body_larger_than_the_limit_is_refused_without_reading_it():
    probe = HttpProbe(body_regex="x")
    assert feed(probe, OK_HEAD + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode()) == (False, "body too large")


def test_no_body_statuses_have_an_empty_body():
    probe = HttpProbe(status_codes=(204,), digest=hashlib.md5(b"").hexdigest())
    assert feed(probe, b"HTTP/1.1 204 No Content\r\n\r\n") == (True, "status 204")


def test_the_request_closes_the_connection_and_names_the_host_with_its_port():
    req = request_bytes("10.0.0.1", 8080, HttpProbe(path="/health"))
    assert req.startswith(b"GET /health HTTP/1.1\r\n")
    assert b"\r\nHost: 10.0.0.1:8080\r\n" in req and b"\r\nConnection: close\r\n" in req
    assert b"accept-encoding" not in req.lower() and req.endswith(b"\r\n\r\n")
    assert b"\r\nHost: [2001:db8::1]\r\n" in request_bytes("2001:db8::1", 80, HttpProbe())
    assert b"\r\nHost: www.example.test\r\n" in request_bytes("10.0.0.1", 80, HttpProbe(host="www.example.test"))


def test_interim_1xx_responses_are_skipped_for_the_final_one():
    assert feed(HttpProbe(), b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                b"HTTP/1.1 200 OK\r\n\r\n") == (True, "status 200")
    assert feed(HttpProbe(), b"HTTP/1.1 100 Continue\r\n\r\n" * 100) == (False, "bad response")


# -- what the parser teaches HttpRules.heads (HttpCheck's lookup of a whole first read)


def learnt(probe, *responses):
    rules = HttpRules(probe)
    for data in responses:
        HttpResponse(probe, rules).feed(data)
    return rules.heads


def test_a_plain_final_status_line_teaches_its_verdict_by_its_first_13_bytes():
    assert learnt(HttpProbe(), b"HTTP/1.1 200 OK\r\n\r\n", b"HTTP/1.0 503 Busy\r\nA: b\r\n\r\n") == {
        b"HTTP/1.1 200 ": (True, "status 200"), b"HTTP/1.0 503 ": (False, "status 503")}


@pytest.mark.parametrize("probe, data", [
    (HttpProbe(), b"HTTP/1.1 100 Continue\r\n\r\n"),           # interim: the real answer follows
    (HttpProbe(), b" HTTP/1.1 200 OK\r\n\r\n"),                 # accepted, but not plain
    (HttpProbe(), b"HTTP/1.1 200\r\n\r\n"),                     # no reason phrase: 12 bytes decide
    (HttpProbe(), b"HTTP/1.1  200 OK\r\n\r\n"),
    (HttpProbe(body_regex="ok"), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),  # the body decides
])
def test_a_status_line_whose_verdict_needs_more_than_13_bytes_teaches_nothing(probe, data):
    assert learnt(probe, data) == {}


def test_a_failing_status_is_learnt_even_when_the_probe_reads_bodies():
    assert learnt(HttpProbe(digest="0" * 32), b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nno") == {
        b"HTTP/1.1 500 ": (False, "status 500")}


def test_a_learnt_verdict_is_the_parsers_for_every_whole_head_that_starts_like_it():
    import random

    rnd = random.Random(13)
    probes = [HttpProbe(), HttpProbe(status_codes=(StatusRange(200, 299), StatusRange(301, 302))),
              HttpProbe(body_regex="up"), HttpProbe(digest="0" * 32)]
    pieces = [b"HTTP/1.1 ", b"HTTP/1.0 ", b"HTTP/1.9 ", b"HTTP/2 ", b" ", b"  ", b"\t", b"200", b"204", b"302",
              b"404", b"500", b"100", b"101", b"103", b"2000", b"OK", b"X", b"\r\n", b"\r\n\r\n",
              b"Content-Length: 2", b"Transfer-Encoding: chunked", b"up", b"\n"]
    compared = 0
    for probe in probes:
        rules = HttpRules(probe)
        for _ in range(4000):
            data = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 12)))
            if rnd.random() < 0.7:
                data = rnd.choice([b"HTTP/1.1 ", b"HTTP/1.0 "]) + rnd.choice([b"200", b"404", b"500", b"101"]) \
                    + b" " + data
            parsed = HttpResponse(probe, rules).feed(data)      # and it teaches the rules
            looked_up = rules.heads.get(data[:13])
            if looked_up is not None and b"\r\n\r\n" in data:
                assert looked_up == parsed, data
                compared += 1
    assert compared > 2000
