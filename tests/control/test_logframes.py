"""Provider Logs messages framed once per encoding for every viewer (tack_control.web.logframes, sender framing)."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError

from tack_common import loglines
from tack_common.pb import provider_pb2 as pb
from tack_control.web import tangled_json
from tack_control.web.ci.logcbor import CborEncoding
from tack_control.web.logframes import LogFrames
from tack_control.web.sender import Framed, frame_binaries


# /logs frames


def _logs_message(i: int, lines: int = 10) -> bytes:
    return pb.LogsResponse(
        lines=[
            loglines.data_line(0, f"message {i} line {n}", ns=1_700_000_000_000_000_000) for n in range(lines)
        ]
    ).SerializeToString()


def _unframe(framed: Framed) -> list[str]:
    """The text frames in ``framed``, read back by RFC 6455's header rules."""
    data = b"".join(chunk for chunk, _ in framed.chunks)
    texts, pos = [], 0
    while pos < len(data):
        assert data[pos] == 0x81
        length, pos = data[pos + 1], pos + 2
        if length == 126:
            length, pos = int.from_bytes(data[pos : pos + 2]), pos + 2
        elif length == 127:
            length, pos = int.from_bytes(data[pos : pos + 8]), pos + 8
        texts.append(data[pos : pos + length].decode())
        pos += length
    assert sum(count for _, count in framed.chunks) == len(texts)
    return texts


def test_log_frames_are_the_tangled_frames_of_each_line() -> None:
    """A message becomes one text frame per line, the line's Tangled JSON, whatever the frame length."""
    lines = [loglines.data_line(0, "x" * n, ns=1_700_000_000_000_000_000) for n in (0, 100, 200, 70_000)]
    message = pb.LogsResponse(lines=lines).SerializeToString()
    assert _unframe(LogFrames(1 << 20).get(message)) == tangled_json.tangled_frames(lines)


def test_log_frames_share_a_recent_message_and_forget_the_oldest_past_the_budget() -> None:
    """A message seen again is served from memory; the bytes held stay within the budget, oldest out first."""
    frames = LogFrames(budget=20_000)
    first = frames.get(_logs_message(0))
    assert frames.get(_logs_message(0)) is first
    for i in range(1, 50):
        frames.get(_logs_message(i))
        assert frames.held <= frames.budget
    assert frames.get(_logs_message(49)) is frames.get(_logs_message(49))
    assert frames.get(_logs_message(0)) is not first
    assert 1 < len(frames) < 50


def test_log_frames_do_not_keep_a_message_bigger_than_a_quarter_of_the_budget() -> None:
    """One huge message cannot flush everything else: it is encoded for its viewer and not kept."""
    frames = LogFrames(budget=20_000)
    frames.get(_logs_message(0))
    frames.get(_logs_message(1, lines=200))
    assert len(frames) == 1


def test_log_frames_raise_decode_error_on_a_malformed_message_and_keep_nothing() -> None:
    """Bytes that are not a LogsResponse raise DecodeError and are not remembered."""
    frames = LogFrames(budget=20_000)
    with pytest.raises(DecodeError):
        frames.get(b"\x0a\x7f\x08\x01")


def test_each_encoding_of_a_message_is_kept_apart() -> None:
    """One message in two encodings (the /logs JSON, CBOR for a workflow) is two entries; each is shared."""
    frames = LogFrames(budget=1 << 20)
    message = _logs_message(0)
    text = frames.get(message)
    cbor = frames.get(message, CborEncoding("build.yml"))
    assert frames.get(message, CborEncoding("build.yml")) is cbor and frames.get(message) is text
    assert frames.get(message, CborEncoding("lint.yml")) is not cbor
    assert len(frames) == 3
    assert b"".join(c for c, _ in text.chunks)[0] == 0x81 and b"".join(c for c, _ in cbor.chunks)[0] == 0x82
    assert text.frames == cbor.frames == 10


def test_binary_frames_use_the_extended_lengths_of_rfc_6455() -> None:
    """Payloads of 125, 126 and 65,536 bytes get 7-bit, 16-bit and 64-bit lengths, with the binary opcode."""
    framed = frame_binaries([b"a" * 125, b"b" * 126, b"c" * 65_536])
    data = b"".join(c for c, _ in framed.chunks)
    assert data[:2] == bytes((0x82, 125))
    assert data[127:131] == bytes((0x82, 126)) + (126).to_bytes(2, "big")
    rest = data[127 + 4 + 126 :]
    assert rest[:10] == bytes((0x82, 127)) + (65_536).to_bytes(8, "big") and len(rest) == 10 + 65_536
    assert framed.frames == 3 and framed.size == len(data)
