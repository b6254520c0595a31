"""The DNS wire format of the dns probe (RFC 1035 4.1): queries as keepalived sends
them, replies parsed without ever raising."""

from __future__ import annotations

import random
import struct

import pytest

from hadirector.health.dns import (
    FLAG_QR, FLAG_RD, FLAG_TC, RCODES, TYPES, Answer, Reply, decode_reply, encode_name, encode_query, judge,
    reply_id,
)
from hadirector.model import DnsProbe


def rr(name: bytes, rtype: int, rdata: bytes, ttl: int = 60) -> bytes:
    return name + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def reply(qid=0x1234, flags=FLAG_QR | FLAG_RD, rcode=0, question=b"\x07example\x03com\x00\x00\x01\x00\x01",
          answers=(), qd=1) -> bytes:
    return struct.pack("!HHHHHH", qid, flags | rcode, qd, len(answers), 0, 0) + question + b"".join(answers)


def test_query_for_the_root_soa_is_keepalived_s_default_packet():  # RFC 1035 4.1.1, 4.1.2
    assert encode_query(0xBEEF, ".", TYPES["SOA"]) == bytes.fromhex("beef 0100 0001 0000 0000 0000 00 0006 0001")


def test_query_encodes_each_label_with_its_length_and_ignores_a_final_dot():  # RFC 1035 3.1
    assert encode_name("www.example.com") == b"\x03www\x07example\x03com\x00"
    assert encode_name("www.example.com.") == encode_name("www.example.com")
    assert encode_name("") == encode_name(".") == b"\x00"


@pytest.mark.parametrize("name", ["a..b", "x" * 64, ".".join(["abcdefghi"] * 26)])
def test_query_refuses_an_empty_or_long_label_or_a_name_over_255_bytes(name):  # RFC 1035 2.3.4
    with pytest.raises(ValueError):
        encode_name(name)


def test_reply_with_addresses_gives_each_answer_as_text():
    data = reply(answers=[rr(b"\xc0\x0c", 1, bytes([192, 0, 2, 7])),
                          rr(b"\xc0\x0c", 28, bytes.fromhex("20010db8" + "0" * 23 + "1"))])
    assert decode_reply(data) == Reply(0x1234, 0, False, (
        Answer("example.com.", 1, "192.0.2.7"), Answer("example.com.", 28, "2001:db8::1")))


def test_reply_follows_compression_pointers_in_names_and_rdata():  # RFC 1035 4.1.4
    soa = b"\x02ns\xc0\x0c" + b"\x05admin\xc0\x0c" + struct.pack("!IIIII", 2026120601, 3600, 600, 86400, 300)
    data = reply(answers=[rr(b"\xc0\x0c", 6, soa), rr(b"\xc0\x0c", 15, b"\x00\x0a\x04mail\xc0\x0c"),
                          rr(b"\xc0\x0c", 16, b"\x05hello\x05world")])
    texts = [a.text for a in decode_reply(data).answers]
    assert texts == ["ns.example.com. admin.example.com. 2026120601 3600 600 86400 300",
                     "10 mail.example.com.", "hello world"]


def test_reply_rcode_and_truncation_bit_are_read_from_the_header():  # RFC 1035 4.1.1
    r = decode_reply(reply(flags=FLAG_QR | FLAG_TC, rcode=RCODES["NXDOMAIN"]))
    assert (r.rcode_name, r.truncated, r.answers) == ("NXDOMAIN", True, ())


@pytest.mark.parametrize("data, why", [
    (b"\x12\x34\x81", "short header"),
    (reply(flags=FLAG_RD), "not a response"),
    (reply(question=b"\x07exam"), "truncated name"),
    (reply(question=b"\x07example\x03com\x00\x00"), "truncated question"),
    (reply(answers=[b"\xc0\x0c\x00\x01\x00"]), "truncated record"),
    (reply(answers=[rr(b"\xc0\x0c", 1, b"\x01\x02\x03\x04")[:-2]]), "truncated record"),
    (reply(answers=[rr(b"\xc0\x0c", 2, b"\xc0\x2b")]), "truncated name"),
    (reply(question=b"\xc0\x0c\x00\x01\x00\x01"), "name pointer loop"),
    (reply(question=b"\x80abc\x00\x00\x01\x00\x01"), "bad name label"),
])
def test_a_malformed_reply_gives_the_reason_instead_of_raising(data, why):
    assert decode_reply(data) == why


def test_garbage_of_every_length_never_makes_the_decoder_raise():
    rng = random.Random(13)
    good = reply(answers=[rr(b"\xc0\x0c", 6, b"\x02ns\xc0\x0c\xc0\x0c" + bytes(20))])
    for _ in range(3000):
        n = rng.randrange(0, 80)
        blob = bytes(rng.randrange(256) for _ in range(n))
        mutated = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        for data in (blob, bytes(mutated), good[:n]):
            assert isinstance(decode_reply(data), (Reply, str))


def test_reply_id_is_only_read_from_responses():
    assert reply_id(reply(qid=7)) == 7
    assert reply_id(reply(qid=7, flags=0)) is None
    assert reply_id(b"\x00\x07") is None


def test_judge_wants_the_expected_rcode_then_a_matching_answer():
    ok = Reply(1, 0, False, (Answer("x.", 1, "192.0.2.7"),))
    assert judge(ok, DnsProbe()) == (True, "rcode NOERROR")
    assert judge(Reply(1, 2, False, ()), DnsProbe()) == (False, "rcode SERVFAIL")
    assert judge(Reply(1, 3, False, ()), DnsProbe(rcode="NXDOMAIN")) == (True, "rcode NXDOMAIN")
    assert judge(ok, DnsProbe(answer_regex=r"^192\.0\.2\.")) == (True, "rcode NOERROR")
    assert judge(ok, DnsProbe(answer_regex=r"^198\.51\.")) == (False, "answer mismatch")
    assert judge(Reply(1, 0, True, ()), DnsProbe(answer_regex="x")) == (False, "answer mismatch (truncated)")
