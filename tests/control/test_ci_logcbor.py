"""Log lines as subscribePipelineLogs messages, byte for byte (tack_control.web.ci.logcbor).

Golden vectors are the research notes' (encoded by libipld and cross-checked
with cbrrr, cbor2 in canonical mode and a reference encoder); each is also
decoded with cbor2 and checked canonical independently of them.
"""

from __future__ import annotations

import datetime as dt

import cbor2
import pytest
from hypothesis import given, settings, strategies as strat

from tack_common import loglines
from tack_common.pb import provider_pb2 as pb
from tack_control.web.ci.logcbor import (
    MAX_TEXT_BYTES,
    NOTE_STEP,
    CborEncoding,
    cbor_messages,
    error_message,
    note_messages,
)
from tests.fakes.ci_appview import NotCanonical, decode_message
from tests.support.lexicon import Lexicons


# 2026-07-22T08:35:10+03:00, the instant of the vectors; tack writes it in UTC.
NS = int(dt.datetime(2026, 7, 22, 5, 35, 10, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
GOLDEN_TIME = b"2026-07-22T08:35:10+03:00".hex()
TACK_TIME = b"2026-07-22T05:35:10Z".hex()
DATA_HEADER = "a26174652364617461626f7001"
CONTROL_HEADER = "a261746823636f6e74726f6c626f7001"
GOLDEN_DATA = (
    "a56473746570006474696d657819323032362d30372d32325430383a33353a31302b30333a30306673747265616d66737464"
    "6f757467636f6e74656e746c68656c6c6f20776f726c640a68776f726b666c6f77696275696c642e796d6c"
)
GOLDEN_SYSTEM_START = (
    "a6646b696e646673797374656d6473746570206474696d657819323032362d30372d32325430383a33353a31302b30333a3030"
    "6673746174757365737461727467636f6e74656e74716e697865727920696d6167652070756c6c68776f726b666c6f7769627569"
    "6c642e796d6c"
)
GOLDEN_COMMAND = (
    "a7646b696e6464757365726473746570006474696d657819323032362d30372d32325430383a33353a31302b30333a303066737461"
    "74757365737461727467636f6d6d616e64646d616b6567636f6e74656e74656275696c6468776f726b666c6f776663692e796d6c"
)


def in_utc(golden_body: str) -> str:
    """A golden body with its +03:00 time item (text of 25 bytes) replaced by tack's UTC text of the same instant."""
    assert ("7819" + GOLDEN_TIME) in golden_body
    return golden_body.replace("7819" + GOLDEN_TIME, "74" + TACK_TIME)


def test_a_data_line_is_the_golden_data_frame() -> None:
    """A data line: the #data header then {step, time, stream, content + newline, workflow} in canonical order."""
    [message] = cbor_messages([loglines.data_line(0, "hello world", ns=NS)], "build.yml")
    assert message.hex() == DATA_HEADER + in_utc(GOLDEN_DATA)


def test_a_system_step_start_without_command_is_the_golden_control_frame() -> None:
    """A system step's start: kind system, status start, no command key at all."""
    line = loglines.control_start(0, "nixery image pull", kind=pb.STEP_KIND_SYSTEM, ns=NS)
    [message] = cbor_messages([line], "build.yml")
    # The vector's step is -1 (stock's setup step); a provider's step ids are never negative, so only it differs.
    expected = CONTROL_HEADER + in_utc(GOLDEN_SYSTEM_START).replace("6473746570" + "20", "6473746570" + "00")
    assert message.hex() == expected


def test_a_user_step_start_with_command_is_the_golden_control_frame() -> None:
    """A user step's start with its command: all seven keys, length-first."""
    [message] = cbor_messages([loglines.control_start(0, "build", "make", ns=NS)], "ci.yml")
    assert message.hex() == CONTROL_HEADER + in_utc(GOLDEN_COMMAND)


def test_a_step_end_carries_status_end_and_no_command() -> None:
    """An end line: status end, kind kept, no command."""
    [message] = cbor_messages([loglines.control_end(3, "test", ns=NS)], "ci.yml")
    header, body = decode_message(message)
    assert header == {"t": "#control", "op": 1}
    assert body == {
        "kind": "user",
        "step": 3,
        "time": "2026-07-22T05:35:10Z",
        "status": "end",
        "content": "test",
        "workflow": "ci.yml",
    }


def test_stderr_lines_and_lines_without_time() -> None:
    """stderr is named; a line without a time gets the current second (as stock spindles do)."""
    [message] = cbor_messages([loglines.data_line(2, "oops", loglines.STDERR, ns=0)], "w")
    _, body = decode_message(message)
    assert body["stream"] == "stderr"
    assert abs(dt.datetime.fromisoformat(body["time"]).timestamp() - dt.datetime.now(dt.UTC).timestamp()) < 5


def test_the_error_frame_is_the_atproto_error_header_and_body() -> None:
    """{op: -1} then {error, message}; the body is the notes' golden error body."""
    message = error_message("InvalidRequest", "bad")
    assert (
        message.hex() == "a1626f7020" + "a2656572726f726e496e76616c696452657175657374676d65737361676563626164"
    )
    assert cbor2.loads(message[:5]) == {"op": -1}


def test_text_longer_than_the_appviews_limit_is_cut_on_a_character_boundary() -> None:
    """Content over 1,000,000 UTF-8 bytes is cut to at most that, never inside a character."""
    [message] = cbor_messages([loglines.data_line(0, "é" * 600_000, ns=NS)], "w")
    _, body = decode_message(message)
    assert len(body["content"].encode()) <= MAX_TEXT_BYTES
    assert body["content"] == "é" * (MAX_TEXT_BYTES // 2)


def test_notes_are_a_visible_step_of_their_own() -> None:
    """tack's note: a user step -1 named tack, opened, its lines on stderr, closed; valid lexicon messages."""
    lexicons = Lexicons()
    messages = [decode_message(m) for m in note_messages("ci.yml", "first\nsecond", ns=NS)]
    assert [(h["t"], b.get("status"), b["content"]) for h, b in messages] == [
        ("#control", "start", "tack"),
        ("#data", None, "first\n"),
        ("#data", None, "second\n"),
        ("#control", "end", "tack"),
    ]
    for header, body in messages:
        assert body["step"] == NOTE_STEP
        lexicons.validate(body, f"sh.tangled.ci.subscribePipelineLogs{header['t']}")


def test_the_encoding_frames_each_line_as_one_binary_frame_and_is_hashable_by_workflow() -> None:
    """CborEncoding: one binary WebSocket frame per line; equal workflows are equal keys (shared encodings)."""
    lines = [loglines.data_line(0, f"line {i}", ns=NS) for i in range(300)]
    framed = CborEncoding("w")(lines)
    assert framed.frames == 300
    data = b"".join(chunk for chunk, _ in framed.chunks)
    assert data[0] == 0x82
    assert CborEncoding("w") == CborEncoding("w") and hash(CborEncoding("w")) == hash(CborEncoding("w"))
    assert CborEncoding("w") != CborEncoding("v")


def test_the_independent_decoder_rejects_non_canonical_messages() -> None:
    """The test decoder is strict: unsorted keys, long-form integers and trailing bytes are refused."""
    good = cbor_messages([loglines.data_line(0, "x", ns=NS)], "w")[0]
    unsorted = bytes.fromhex(DATA_HEADER) + cbor2.dumps(
        {"time": "t", "step": 0, "stream": "stdout", "content": "x", "workflow": "w"}
    )
    long_int = good.replace(bytes.fromhex("6473746570" + "00"), bytes.fromhex("6473746570" + "1800"))
    for bad in (unsorted, long_int, good + b"\x00"):
        with pytest.raises((NotCanonical, cbor2.CBORDecodeError)):
            decode_message(bad)


LINES = strat.builds(
    pb.LogLine,
    kind=strat.sampled_from([pb.LOG_KIND_DATA, pb.LOG_KIND_CONTROL, pb.LOG_KIND_UNSPECIFIED]),
    content=strat.text(max_size=300),
    time_unix_nano=strat.integers(1, 2**63 - 1),
    step_id=strat.integers(0, 2**32 - 1),
    stream=strat.sampled_from([pb.LOG_STREAM_STDOUT, pb.LOG_STREAM_STDERR, pb.LOG_STREAM_UNSPECIFIED]),
    step_status=strat.sampled_from([pb.STEP_STATUS_START, pb.STEP_STATUS_END, pb.STEP_STATUS_UNSPECIFIED]),
    step_kind=strat.sampled_from([pb.STEP_KIND_USER, pb.STEP_KIND_SYSTEM, pb.STEP_KIND_UNSPECIFIED]),
    step_command=strat.text(max_size=50),
)


@settings(max_examples=300, deadline=None)
@given(lines=strat.lists(LINES, max_size=5), workflow=strat.text(min_size=1, max_size=40))
def test_any_lines_encode_as_canonical_lexicon_messages(lines: list[pb.LogLine], workflow: str) -> None:
    """Whatever a provider sends, each line is one canonical message valid against the lexicon, its fields kept."""
    lexicons = Lexicons()
    messages = cbor_messages(lines, workflow)
    assert len(messages) == len(lines)
    for line, message in zip(lines, messages, strict=True):
        header, body = decode_message(message)
        lexicons.validate(body, f"sh.tangled.ci.subscribePipelineLogs{header['t']}")
        assert body["workflow"] == workflow and body["step"] == line.step_id
        if line.kind == pb.LOG_KIND_CONTROL:
            assert header["t"] == "#control" and body["content"] == line.content
            assert ("command" in body) == bool(line.step_command)
        else:
            assert header["t"] == "#data" and body["content"] == line.content + "\n"
