"""Sentry's wire formats: envelopes as the real ``sentry-sdk`` writes them, the framing edge
cases of the envelope specification, the auth header, DSNs and event ids."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sentry_sdk.envelope import Envelope as SdkEnvelope
from sentry_sdk.envelope import Item as SdkItem

from api.sentry_envelope import (
    EnvelopeError,
    normalize_event_id,
    parse_auth_header,
    parse_dsn,
    parse_envelope,
)


def test_an_envelope_written_by_the_sdk_parses_back() -> None:
    event_id = uuid.uuid4().hex
    sdk = SdkEnvelope(headers={"event_id": event_id, "sent_at": "2026-01-01T00:00:00Z"})
    sdk.add_event({"event_id": event_id, "message": "hello", "level": "error"})
    sdk.add_item(SdkItem(payload=b"binary\n\x00with newlines\n\n", type="attachment", filename="dump.bin"))
    sdk.add_session({"sid": "s1", "status": "ok"})  # type: ignore[arg-type]
    envelope = parse_envelope(sdk.serialize())
    assert envelope.event_id == event_id
    assert [item.type for item in envelope.items] == ["event", "attachment", "session"]
    assert envelope.items[0].json() == {"event_id": event_id, "message": "hello", "level": "error"}
    assert envelope.items[1].payload == b"binary\n\x00with newlines\n\n"
    assert envelope.items[1].headers["filename"] == "dump.bin"
    assert [item.index for item in envelope.items] == [1, 2, 3]


def test_items_without_length_run_to_the_end_of_their_line() -> None:
    body = b'{"dsn":"https://k@h/1"}\n{"type":"event"}\n{"message":"a"}\n{"type":"session"}\n{"x":1}'
    envelope = parse_envelope(body)
    assert envelope.dsn == "https://k@h/1"
    assert envelope.event_id is None
    assert [(i.type, i.payload) for i in envelope.items] == [("event", b'{"message":"a"}'), ("session", b'{"x":1}')]


def test_framing_edge_cases_of_the_specification() -> None:
    # A zero-length payload, with and without the newline after it; a header-only envelope;
    # blank lines between items; CRLF inside JSON is whitespace.
    envelope = parse_envelope(b'{}\n{"type":"attachment","length":0}\n\n{"type":"attachment","length":0}')
    assert [i.payload for i in envelope.items] == [b"", b""]
    assert parse_envelope(b"{}").items == []
    assert parse_envelope(b"{}\n").items == []
    envelope = parse_envelope(b'{}\r\n\n\n{"type":"event","length":2}\n{}\n\n')
    assert [i.json() for i in envelope.items] == [{}]
    # An item without a payload line at the end: an empty payload.
    assert parse_envelope(b'{}\n{"type":"client_report"}').items[0].payload == b""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the envelope is empty"),
        (b"  \n ", "the envelope is empty"),
        (b"{oops}\n", "the envelope header (first line) is not valid JSON"),
        (b'"text"\n', "the envelope header (first line) must be a JSON object"),
        (b"{}\n[]\n", "the header of item 1 must be a JSON object"),
        (b'{}\n{"type":""}\n{}', "the header of item 1 has no type"),
        (b'{}\n{"type":7}\n{}', "the header of item 1 has no type"),
        (b'{}\n{"type":"event","length":"3"}\n{}', "item 1 (event): length must be a non-negative integer"),
        (b'{}\n{"type":"event","length":true}\n{}', "item 1 (event): length must be a non-negative integer"),
        (b'{}\n{"type":"event","length":3}\n{}', "item 1 (event) declares 3 bytes but only 2 remain in the envelope"),
        (b'{}\n{"type":"a","length":1}\nx\n{"type":"b","length":9}\n{}', "item 2 (b) declares 9 bytes"),
        (b'{}\n{"type":"event","length":2}\n{}{"type":"x"}', "item 1 (event): its payload is not followed by a newline"),
    ],
)
def test_malformed_envelopes_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(body)
    assert message in str(caught.value)


def test_payloads_are_decoded_only_when_asked() -> None:
    envelope = parse_envelope(b'{}\n{"type":"event"}\nnot json\n{"type":"replay_recording","length":3}\n\x00\x01\x02')
    assert envelope.items[1].payload == b"\x00\x01\x02"
    with pytest.raises(EnvelopeError, match=r"item 1 \(event\) is not valid JSON"):
        envelope.items[0].json()


def test_the_number_of_items_is_bounded() -> None:
    body = b"{}\n" + b'{"type":"session","length":0}\n\n' * 11
    assert len(parse_envelope(body, max_items=11).items) == 11
    with pytest.raises(EnvelopeError, match="more than 10 items"):
        parse_envelope(body, max_items=10)


_PAYLOADS = st.one_of(st.binary(max_size=300), st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")))


@given(st.lists(st.tuples(st.sampled_from(["event", "attachment", "session", "replay_recording", "x-new"]), _PAYLOADS), max_size=8))
def test_whatever_the_sdk_frames_parses_back_to_the_same_items(items: list[tuple[str, bytes]]) -> None:
    sdk = SdkEnvelope(headers={"event_id": "9ec79c33ec9942ab8353589fcb2e04dc"})
    for kind, payload in items:
        sdk.add_item(SdkItem(payload=payload, type=kind))
    envelope = parse_envelope(sdk.serialize())
    assert [(i.type, i.payload) for i in envelope.items] == items


@given(st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_raise_an_envelope_error(body: bytes) -> None:
    try:
        envelope = parse_envelope(body)
    except EnvelopeError:
        return
    for item in envelope.items:
        assert isinstance(item.headers, dict) and isinstance(item.type, str)


def test_the_auth_header() -> None:
    header = "Sentry sentry_version=7, sentry_client=sentry.python/2.75.0, sentry_key=0123abcd, sentry_secret=s"
    assert parse_auth_header(header) == {
        "sentry_version": "7",
        "sentry_client": "sentry.python/2.75.0",
        "sentry_key": "0123abcd",
        "sentry_secret": "s",
    }
    assert parse_auth_header("sentry_key=abc,sentry_version=7")["sentry_key"] == "abc"
    assert parse_auth_header("SENTRY Sentry_Key = abc")["sentry_key"] == "abc"
    assert parse_auth_header("Bearer xyz") == {}
    assert parse_auth_header("Sentry sentry_key=a b, sentry_version=7") == {"sentry_version": "7"}


def test_dsns() -> None:
    assert parse_dsn("https://0123@o1.ingest.example.com/42") == ("0123", "42")
    assert parse_dsn("http://key:secret@localhost:8080/prefix/path/7/") == ("key", "7")
    assert parse_dsn("http://localhost:8080/7") is None
    assert parse_dsn("key@host/7") is None
    assert parse_dsn("http://key@host/") is None
    assert parse_dsn("http://[::1") is None


def test_event_ids() -> None:
    assert normalize_event_id("9EC79C33EC9942AB8353589FCB2E04DC") == "9ec79c33ec9942ab8353589fcb2e04dc"
    assert normalize_event_id("12c2d058-d584-4270-9aa2-eca08bf20986") == "12c2d058d58442709aa2eca08bf20986"
    for bad in (None, 12, "", "xyz", "9ec79c33ec9942ab8353589fcb2e04d", "g" * 32):
        assert normalize_event_id(bad) is None
