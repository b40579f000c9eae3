"""Log lines as the JSON text frames of Tangled's legacy ``/logs`` stream."""

from __future__ import annotations

import json
from collections.abc import Iterable

from tack_common.pb import provider_pb2 as pb
from tack_common.timefmt import utc_second_text


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
