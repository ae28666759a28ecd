"""read_header and open_envelope are bounded and total: EnvelopeError("malformed"), nothing else.

Every hostile envelope here is signed by the enrolled key (``seal_raw``), so
the bounds hold behind a valid signature too (issue 43).
"""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clinibox_common.contracts import envelope as env
from clinibox_common.contracts.envelope import EnvelopeError, Header, open_envelope, read_header
from tests.envelope_forge import deep_header, long_seq_header, seal_raw
from tests.telemetry_payloads import alert_payload, hospital_keys, status_payload

KEY = Ed25519PrivateKey.generate()
HOSPITAL_PRIVATE, HOSPITAL = hospital_keys()


def _header(seq: int = 1) -> bytes:
    return Header("clinic-a", "box-1", "alert", seq).to_bytes()


def _refused(envelope: bytes, *, opened: bool = False) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as caught:
        if opened:
            open_envelope(envelope, KEY.public_key(), HOSPITAL_PRIVATE)
        else:
            read_header(envelope)
    assert caught.value.reason == "malformed"
    return caught.value


@pytest.mark.parametrize("header", [deep_header(5000), long_seq_header("clinic-a", "box-1",
                                                                        "alert", 5000)],
                         ids=["5000-levels", "5000-digits"])
def test_the_two_findings_are_malformed_both_when_read_and_when_opened(header):
    envelope = seal_raw(header, b"{}", HOSPITAL, KEY)
    assert "header longer than" in str(_refused(envelope))
    _refused(envelope, opened=True)


def test_depth_and_digits_are_refused_before_parsing_within_the_length_bound():
    deep = seal_raw(deep_header(200), b"{}", HOSPITAL, KEY)  # 400 bytes: under the length bound
    assert "nests deeper" in str(_refused(deep))
    digits = seal_raw(long_seq_header("clinic-a", "box-1", "alert", 20), b"{}", HOSPITAL, KEY)
    assert "more than 19 digits" in str(_refused(digits))
    beyond = seal_raw(_header(2**63), b"{}", HOSPITAL, KEY)  # 19 digits, past a BIGINT
    _refused(beyond)
    largest = seal(_header(2**63 - 1), alert_payload())
    assert read_header(largest).seq == 2**63 - 1


@pytest.mark.parametrize("header", [
    b'{"clinic":"clinic-a","device":"box-1","kind":"alert","seq":NaN,"v":1}',
    b'{"clinic":"clinic-a","device":"box-1","kind":"alert","seq":1e999,"v":1}',
    b'{"clinic":"clinic-a","device":"box-1","kind":"alert","seq":1,"v":1,"x":[1]}',
    b'{"clinic":"clinic-a","device":"box-1","kind":"alert","seq":1,"v":true}',
    b'{"clinic":"' + b"a" * 300 + b'","device":"box-1","kind":"alert","seq":1,"v":1}',
    b'{"clinic":"clinic-a","device":"box-1","kind":"alert","seq":1,"v":1',
    b"\xff\xfe", b"", b"[]", b'"\\', b'"' + b'\\"' * 200,
], ids=["nan", "huge-float", "extra-field", "bool-version", "long-field", "truncated",
        "not-ascii", "empty", "array", "open-string", "escaped-quotes"])
def test_odd_headers_are_malformed(header):
    _refused(seal_raw(header, b"{}", HOSPITAL, KEY))


def seal(header: bytes, payload: dict) -> bytes:
    return seal_raw(header, json.dumps(payload).encode(), HOSPITAL, KEY)


@pytest.mark.parametrize("plaintext", [
    b"[" * 5000 + b"]" * 5000,
    b'{"seq":' + b"9" * 5000 + b"}",
    b'{"a":' * 9 + b"1" + b"}" * 9,
    b'{"score":' + b"1." + b"0" * 100 + b"}",
    b'{"score":NaN}', b'{"score":-Infinity}',
    b'{"model":"' + b"m" * 300 + b'"}',
    b'{"' + b"k" * 300 + b'":1}',
    b'{"h":[' + b"1," * 300 + b"1]}",
    b"\xff", b"", b"[1]", b"{",
], ids=["deep", "long-int", "depth-9", "long-float", "nan", "infinity", "long-string",
        "long-key", "long-list", "not-utf8", "empty", "not-object", "truncated"])
def test_odd_payloads_behind_a_valid_signature_are_malformed(plaintext):
    _refused(seal_raw(_header(), plaintext, HOSPITAL, KEY), opened=True)


def test_real_payloads_still_open():
    audited = status_payload("heartbeat", audit={"row": 7, "hash": "a" * 64, "since_row": 3,
                                                 "since_hash": "b" * 64})
    for payload in (alert_payload(), audited):
        opened = open_envelope(env.seal(Header("clinic-a", "box-1", "alert", 3), payload,
                                        HOSPITAL, KEY), KEY.public_key(), HOSPITAL_PRIVATE)
        assert opened.payload == payload and opened.header.seq == 3


def test_nesting_depth_ignores_brackets_inside_strings_and_stops_early():
    assert env.nesting_depth(b'{"a":"[[[[{{{{","b":[{"c":"\\"]"}]}', 8) == 3
    assert env.nesting_depth(b"[" * 100_000, 8) == 9  # counted only to one past the limit


@pytest.mark.parametrize("fault", [RecursionError, ValueError, OverflowError, TypeError])
def test_an_unexpected_parse_fault_still_comes_out_as_malformed(monkeypatch, fault):
    def broken(*_args, **_kwargs):
        raise fault("boom")

    envelope = env.seal(Header("clinic-a", "box-1", "alert", 1), alert_payload(), HOSPITAL, KEY)
    monkeypatch.setattr(env, "_read_header", broken)
    assert "unreadable header" in str(_refused(envelope))
    monkeypatch.undo()
    monkeypatch.setattr(env, "_open", broken)
    assert "unreadable envelope" in str(_refused(envelope, opened=True))
