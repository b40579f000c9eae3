"""Tangled LogLine framing: building a run's log lines and encoding them as Tangled JSON.

Tangled shows a step only after a control ``start`` line for its ``step_id``;
data lines without one are invisible. :class:`StepLog` makes the start / data /
end order the only order a provider can produce.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator

from tack_provider_kit.pb import provider_pb2 as pb
from tack_provider_kit.timefmt import utc_second_text


STDOUT = pb.LOG_STREAM_STDOUT
STDERR = pb.LOG_STREAM_STDERR
USER = pb.STEP_KIND_USER
SYSTEM = pb.STEP_KIND_SYSTEM


def _control(
    step_id: int,
    name: str,
    edge: pb.StepStatus.ValueType,
    kind: pb.StepKind.ValueType,
    command: str,
    ns: int | None,
) -> pb.LogLine:
    return pb.LogLine(
        kind=pb.LOG_KIND_CONTROL,
        content=name,
        time_unix_nano=time.time_ns() if ns is None else ns,
        step_id=step_id,
        step_status=edge,
        step_kind=kind,
        step_command=command,
    )


def control_start(
    step_id: int, name: str, command: str = "", kind: pb.StepKind.ValueType = USER, ns: int | None = None
) -> pb.LogLine:
    """The control line that opens step ``step_id``."""
    return _control(step_id, name, pb.STEP_STATUS_START, kind, command, ns)


def control_end(
    step_id: int, name: str, kind: pb.StepKind.ValueType = USER, ns: int | None = None
) -> pb.LogLine:
    """The control line that closes step ``step_id``."""
    return _control(step_id, name, pb.STEP_STATUS_END, kind, "", ns)


def data_line(
    step_id: int, content: str, stream: pb.LogStream.ValueType = STDOUT, ns: int | None = None
) -> pb.LogLine:
    """One line of a step's output."""
    return pb.LogLine(
        kind=pb.LOG_KIND_DATA,
        content=content,
        time_unix_nano=time.time_ns() if ns is None else ns,
        step_id=step_id,
        stream=stream,
    )


def output_lines(text: str) -> Iterator[str]:
    """Split process output into lines: CRLF, lone CR and LF all end a line; no trailing newline kept."""
    if not text:
        return
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    if normalised.endswith("\n"):
        normalised = normalised[:-1]
    yield from normalised.split("\n")


class StepLog:
    """Frames one run's log: each step is opened before its data and closed once.

    Step ids are allocated in order from 0, as Tangled expects.
    """

    def __init__(self, next_step_id: int = 0) -> None:
        self.next_step_id = next_step_id
        self.open_step: tuple[int, str, pb.StepKind.ValueType] | None = None

    def start(
        self, name: str, command: str = "", kind: pb.StepKind.ValueType = USER, ns: int | None = None
    ) -> list[pb.LogLine]:
        """Close the open step, if any, and open the next one."""
        lines = self.end(ns=ns)
        step_id = self.next_step_id
        self.next_step_id += 1
        self.open_step = (step_id, name, kind)
        lines.append(control_start(step_id, name, command, kind, ns))
        return lines

    def data(
        self, content: str, stream: pb.LogStream.ValueType = STDOUT, ns: int | None = None
    ) -> pb.LogLine:
        """A data line of the open step; RuntimeError when no step is open."""
        if self.open_step is None:
            raise RuntimeError("data line outside a step")
        return data_line(self.open_step[0], content, stream, ns)

    def end(self, ns: int | None = None) -> list[pb.LogLine]:
        """Close the open step; nothing when none is open."""
        if self.open_step is None:
            return []
        step_id, name, kind = self.open_step
        self.open_step = None
        return [control_end(step_id, name, kind, ns)]


def tangled_dict(line: pb.LogLine) -> dict[str, object]:
    """The Tangled LogLine object for ``line``, parsed from its frame (:func:`tangled_frames` is the one encoder)."""
    out: dict[str, object] = json.loads(tangled_frames((line,))[0])
    return out


_json_string = json.encoder.encode_basestring
_STREAM_FIELDS = {pb.LOG_STREAM_STDOUT: ',"stream":"stdout"', pb.LOG_STREAM_STDERR: ',"stream":"stderr"'}
_STEP_STATUS_FIELDS = {
    pb.STEP_STATUS_START: ',"step_status":"start"',
    pb.STEP_STATUS_END: ',"step_status":"end"',
}


def _first_second_stamp(digits: str) -> str:
    """The frame time (without ``Z``) of a time within 1970's first second; 0 is unset, Go's zero time."""
    if digits == "0":
        return "0001-01-01T00:00:00"
    return ("1970-01-01T00:00:00." + digits.rjust(9, "0")).rstrip("0")


def tangled_frames(lines: Iterable[pb.LogLine]) -> list[str]:
    """Each line as the compact JSON text of one Tangled /logs frame, in order.

    Empty optional fields are omitted, ``step_kind`` is an integer, ``time`` is
    Go's RFC3339Nano in UTC (an unset time is Go's zero time, as stock
    spindles send it), and fields that do not apply to a line's kind are
    not sent (``stream`` on control lines, ``step_*`` on data lines); a line of
    unspecified kind is data. This runs once per log line served: the text is
    built with one f-string per line, and the whole-second prefix of the time
    is computed once per second, because a dict and ``json.dumps`` per line
    cost more than everything else the control plane does with it.
    """
    frames: list[str] = []
    add = frames.append
    second, prefix = "", ""
    for line in lines:
        # The decimal digits of the nanoseconds are the whole seconds then the nine fraction digits.
        digits = str(line.time_unix_nano)
        if len(digits) < 10:
            stamp = _first_second_stamp(digits)
        else:
            if digits[:-9] != second:
                second = digits[:-9]
                prefix = utc_second_text(int(second)) + "."
            stamp = (prefix + digits[-9:]).rstrip("0").rstrip(".")
        if line.kind != pb.LOG_KIND_CONTROL:
            add(
                f'{{"kind":"data","content":{_json_string(line.content)},"time":"{stamp}Z",'
                f'"step_id":{line.step_id}{_STREAM_FIELDS.get(line.stream, "")}}}'
            )
            continue
        step_kind = ',"step_kind":1' if line.step_kind == pb.STEP_KIND_USER else ""
        command = line.step_command
        add(
            f'{{"kind":"control","content":{_json_string(line.content)},"time":"{stamp}Z",'
            f'"step_id":{line.step_id}{_STEP_STATUS_FIELDS.get(line.step_status, "")}{step_kind}'
            + (f',"step_command":{_json_string(command)}}}' if command else "}")
        )
    return frames


_VARINT_BYTE = [bytes((i,)) for i in range(0x80)]


def _length_prefix(size: int) -> bytes:
    if size < 0x80:
        return _VARINT_BYTE[size]
    out = bytearray()
    while size >= 0x80:
        out.append((size & 0x7F) | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out)


def logs_response(serialized: Iterable[bytes]) -> pb.LogsResponse:
    """A LogsResponse of lines stored serialized (``LogLine.SerializeToString()``), parsed in one call.

    For providers that keep lines serialized: far cheaper than parsing each
    line and copying it into a message.
    """
    # Field 1 (lines), wire type 2 (length-delimited): tag byte 0x0A, then the length.
    return pb.LogsResponse.FromString(b"".join([b"\n" + _length_prefix(len(s)) + s for s in serialized]))


def synthetic_log(step_name: str, message: str, ns: int | None = None) -> list[pb.LogLine]:
    """A complete one-step log carrying ``message``, for runs that failed before producing any log."""
    log = StepLog()
    lines = log.start(step_name, kind=USER, ns=ns)
    lines.extend(log.data(text, STDERR, ns) for text in (list(output_lines(message)) or [""]))
    lines.extend(log.end(ns=ns))
    return lines
