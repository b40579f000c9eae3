"""Building a run's log lines (the contract's ``LogLine``) in the only order Tangled can show.

Tangled shows a step only after a control ``start`` line for its ``step_id``;
data lines without one are invisible. :class:`StepLog` makes the start / data /
end order the only order a provider can produce.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from tack_common.pb import provider_pb2 as pb


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


def synthetic_log(step_name: str, message: str, ns: int | None = None) -> list[pb.LogLine]:
    """A complete one-step log carrying ``message``, for runs that failed before producing any log."""
    log = StepLog()
    lines = log.start(step_name, kind=USER, ns=ns)
    lines.extend(log.data(text, STDERR, ns) for text in (list(output_lines(message)) or [""]))
    lines.extend(log.end(ns=ns))
    return lines
