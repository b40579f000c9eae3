"""Building a run's log lines: steps opened before their data and closed once (tack_common.loglines)."""

from __future__ import annotations

import pytest

from tack_common import loglines
from tack_common.pb import provider_pb2 as pb
from tack_common.timefmt import (
    NS_PER_SECOND,
)
from tack_control.web import tangled_json


# 2023-11-14T22:13:20Z
BASE_NS = 1_700_000_000 * NS_PER_SECOND


# loglines


def test_steplog_opens_each_step_before_its_data_and_closes_it_once() -> None:
    """StepLog numbers steps from 0, closes the open step when the next starts, and ends it once."""
    log = loglines.StepLog()
    first = log.start("one", "echo one")
    assert [(x.kind, x.step_id, x.step_status) for x in first] == [
        (pb.LOG_KIND_CONTROL, 0, pb.STEP_STATUS_START)
    ]
    assert first[0].content == "one" and first[0].step_command == "echo one"
    data = log.data("hello")
    assert (data.kind, data.step_id, data.content, data.stream) == (
        pb.LOG_KIND_DATA,
        0,
        "hello",
        loglines.STDOUT,
    )
    second = log.start("two")
    assert [(x.step_id, x.step_status, x.content) for x in second] == [
        (0, pb.STEP_STATUS_END, "one"),
        (1, pb.STEP_STATUS_START, "two"),
    ]
    assert log.data("err", loglines.STDERR).step_id == 1
    ending = log.end()
    assert [(x.step_id, x.step_status) for x in ending] == [(1, pb.STEP_STATUS_END)]
    assert log.end() == []


def test_steplog_refuses_data_outside_a_step() -> None:
    """A data line before any start, or after the step ended, raises RuntimeError."""
    log = loglines.StepLog()
    with pytest.raises(RuntimeError, match="outside a step"):
        log.data("orphan")
    log.start("s")
    log.end()
    with pytest.raises(RuntimeError, match="outside a step"):
        log.data("late")


def test_steplog_continues_from_a_given_step_id() -> None:
    """A StepLog created with next_step_id allocates from there."""
    log = loglines.StepLog(next_step_id=3)
    assert log.start("resumed")[0].step_id == 3


def test_explicit_ns_sets_the_line_time() -> None:
    """Lines built with ns carry exactly that time."""
    line = loglines.data_line(0, "x", ns=BASE_NS + 7)
    assert line.time_unix_nano == BASE_NS + 7


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("", []),
        ("one", ["one"]),
        ("one\n", ["one"]),
        ("one\r\ntwo\r\n", ["one", "two"]),
        ("one\rtwo\nthree", ["one", "two", "three"]),
        ("a\n\nb", ["a", "", "b"]),
        ("a\n\n", ["a", ""]),
        ("\n", [""]),
        ("\r\n\r", ["", ""]),
    ],
)
def test_output_lines_splits_crlf_cr_and_lf(text: str, lines: list[str]) -> None:
    """output_lines ends a line at CRLF, lone CR or LF and drops only one trailing newline."""
    assert list(loglines.output_lines(text)) == lines


def test_synthetic_log_is_start_data_end() -> None:
    """synthetic_log is one user step: control start, a stderr data line with the message, control end."""
    lines = loglines.synthetic_log("setup", "could not start", ns=BASE_NS)
    assert [tangled_json.tangled_dict(x) for x in lines] == [
        {
            "kind": "control",
            "content": "setup",
            "time": "2023-11-14T22:13:20Z",
            "step_id": 0,
            "step_status": "start",
            "step_kind": 1,
        },
        {
            "kind": "data",
            "content": "could not start",
            "time": "2023-11-14T22:13:20Z",
            "step_id": 0,
            "stream": "stderr",
        },
        {
            "kind": "control",
            "content": "setup",
            "time": "2023-11-14T22:13:20Z",
            "step_id": 0,
            "step_status": "end",
            "step_kind": 1,
        },
    ]


def test_synthetic_log_splits_a_multiline_message_and_keeps_an_empty_one() -> None:
    """A multi-line message becomes one data line each; an empty message still gets one data line."""
    many = loglines.synthetic_log("s", "a\nb\n")
    assert [x.content for x in many if x.kind == pb.LOG_KIND_DATA] == ["a", "b"]
    empty = loglines.synthetic_log("s", "")
    assert [x.kind for x in empty] == [pb.LOG_KIND_CONTROL, pb.LOG_KIND_DATA, pb.LOG_KIND_CONTROL]
