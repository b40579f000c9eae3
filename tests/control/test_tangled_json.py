"""Log lines as the JSON frames of Tangled's legacy /logs (tack_control.web.tangled_json)."""

from __future__ import annotations

import datetime
import json

from hypothesis import given, strategies as st_

from tack_common import loglines
from tack_common.pb import provider_pb2 as pb
from tack_common.timefmt import (
    NS_PER_SECOND,
)
from tack_control.web import tangled_json


# 2023-11-14T22:13:20Z
BASE_NS = 1_700_000_000 * NS_PER_SECOND


def test_tangled_dict_of_data_line_omits_control_fields() -> None:
    """A data line's Tangled object has kind, content, time, step_id and stream, nothing empty."""
    line = loglines.data_line(2, "out", loglines.STDERR, ns=BASE_NS + 5_000_000)
    assert tangled_json.tangled_dict(line) == {
        "kind": "data",
        "content": "out",
        "time": "2023-11-14T22:13:20.005Z",
        "step_id": 2,
        "stream": "stderr",
    }


def test_tangled_dict_keeps_empty_content_and_step_zero() -> None:
    """content and step_id are always present, even when empty or zero."""
    out = tangled_json.tangled_dict(loglines.data_line(0, "", ns=BASE_NS))
    assert out["content"] == "" and out["step_id"] == 0


def test_tangled_dict_user_step_kind_is_integer_one() -> None:
    """A user step's control start carries step_status, step_kind 1 and step_command."""
    line = loglines.control_start(0, "build", "make", loglines.USER, ns=BASE_NS)
    assert tangled_json.tangled_dict(line) == {
        "kind": "control",
        "content": "build",
        "time": "2023-11-14T22:13:20Z",
        "step_id": 0,
        "step_status": "start",
        "step_kind": 1,
        "step_command": "make",
    }


def test_tangled_dict_system_step_omits_step_kind() -> None:
    """A system step's control lines omit step_kind, and an empty command is omitted."""
    start = tangled_json.tangled_dict(loglines.control_start(0, "clone", "", loglines.SYSTEM, ns=BASE_NS))
    end = tangled_json.tangled_dict(loglines.control_end(0, "clone", loglines.SYSTEM, ns=BASE_NS))
    assert "step_kind" not in start and "step_command" not in start and "stream" not in start
    assert end == {
        "kind": "control",
        "content": "clone",
        "time": "2023-11-14T22:13:20Z",
        "step_id": 0,
        "step_status": "end",
    }


def test_tangled_frames_are_compact_utf8() -> None:
    """A frame is compact JSON that keeps non-ASCII text as is."""
    [text] = tangled_json.tangled_frames([loglines.data_line(0, "héllo ✓", ns=BASE_NS)])
    assert (
        text
        == '{"kind":"data","content":"héllo ✓","time":"2023-11-14T22:13:20Z","step_id":0,"stream":"stdout"}'
    )
    assert json.loads(text)["content"] == "héllo ✓"


def _go_rfc3339_nano(ns: int) -> str:
    """Go's RFC3339Nano in UTC, written independently of the code under test; 0 is Go's zero time."""
    if ns == 0:
        return "0001-01-01T00:00:00Z"
    seconds, nanos = divmod(ns, NS_PER_SECOND)
    whole = (datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)).isoformat()
    fraction = str(nanos).rjust(9, "0").rstrip("0")
    return whole + ("." + fraction if fraction else "") + "Z"


def _reference_frame(line: pb.LogLine) -> dict[str, object]:
    """The Tangled LogLine object for ``line`` by docs/tangled-protocol.md's table, built as a dict."""
    control = line.kind == pb.LOG_KIND_CONTROL
    out: dict[str, object] = {
        "kind": "control" if control else "data",
        "content": line.content,
        "time": _go_rfc3339_nano(line.time_unix_nano),
        "step_id": line.step_id,
    }
    if not control and line.stream:
        out["stream"] = {pb.LOG_STREAM_STDOUT: "stdout", pb.LOG_STREAM_STDERR: "stderr"}[line.stream]
    if control and line.step_status:
        out["step_status"] = {pb.STEP_STATUS_START: "start", pb.STEP_STATUS_END: "end"}[line.step_status]
    if control and line.step_kind == pb.STEP_KIND_USER:
        out["step_kind"] = 1
    if control and line.step_command:
        out["step_command"] = line.step_command
    return out


_log_lines = st_.builds(
    pb.LogLine,
    kind=st_.sampled_from(list(pb.LogKind.values())),
    content=st_.text(),
    time_unix_nano=st_.one_of(
        st_.integers(0, 2 * NS_PER_SECOND), st_.integers(0, 4_102_444_800 * NS_PER_SECOND)
    ),
    step_id=st_.integers(0, 2**32 - 1),
    stream=st_.sampled_from(list(pb.LogStream.values())),
    step_status=st_.sampled_from(list(pb.StepStatus.values())),
    step_kind=st_.sampled_from(list(pb.StepKind.values())),
    step_command=st_.text(),
)


@given(st_.lists(_log_lines, max_size=20))
def test_tangled_frames_match_the_protocol_table(lines: list[pb.LogLine]) -> None:
    """Any batch of lines encodes, in order, to compact JSON objects equal to the protocol's table."""
    frames = tangled_json.tangled_frames(lines)
    assert [json.loads(frame) for frame in frames] == [_reference_frame(line) for line in lines]
    assert all(
        frame == json.dumps(json.loads(frame), ensure_ascii=False, separators=(",", ":")) for frame in frames
    )


def test_tangled_frames_time_follows_each_line_across_seconds() -> None:
    """Lines whose seconds go forward, back and repeat each get their own time, not a neighbour's."""
    times = [BASE_NS + 5, BASE_NS + NS_PER_SECOND, BASE_NS + 7, BASE_NS + 7, 0, BASE_NS]
    frames = tangled_json.tangled_frames([loglines.data_line(0, "x", ns=ns) for ns in times])
    assert [json.loads(f)["time"] for f in frames] == [
        "2023-11-14T22:13:20.000000005Z",
        "2023-11-14T22:13:21Z",
        "2023-11-14T22:13:20.000000007Z",
        "2023-11-14T22:13:20.000000007Z",
        "0001-01-01T00:00:00Z",
        "2023-11-14T22:13:20Z",
    ]


def test_tangled_frames_send_only_the_fields_of_the_line_kind() -> None:
    """A data line carrying step fields sends none of them; a control line carrying a stream omits it."""
    data = pb.LogLine(
        kind=pb.LOG_KIND_DATA,
        content="out",
        time_unix_nano=BASE_NS,
        step_id=1,
        stream=pb.LOG_STREAM_STDOUT,
        step_status=pb.STEP_STATUS_START,
        step_kind=pb.STEP_KIND_USER,
        step_command="make",
    )
    control = pb.LogLine(
        kind=pb.LOG_KIND_CONTROL,
        content='say "hi"\n',
        time_unix_nano=BASE_NS,
        step_id=1,
        stream=pb.LOG_STREAM_STDERR,
        step_status=pb.STEP_STATUS_END,
    )
    unspecified = pb.LogLine(content="plain", time_unix_nano=BASE_NS)
    assert tangled_json.tangled_frames([data, control, unspecified]) == [
        '{"kind":"data","content":"out","time":"2023-11-14T22:13:20Z","step_id":1,"stream":"stdout"}',
        '{"kind":"control","content":"say \\"hi\\"\\n","time":"2023-11-14T22:13:20Z","step_id":1,"step_status":"end"}',
        '{"kind":"data","content":"plain","time":"2023-11-14T22:13:20Z","step_id":0}',
    ]
