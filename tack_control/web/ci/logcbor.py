"""Log lines as ``sh.tangled.ci.subscribePipelineLogs`` messages: atproto event-stream frames (sans I/O).

Each message is one binary WebSocket frame holding two DAG-CBOR values back to
back: the header ``{"t": "#control" | "#data", "op": 1}`` and the body. Bodies
carry no ``$type``. libipld writes canonical DAG-CBOR (map keys by length,
then bytewise; shortest integer and length forms), which is what the appview's
cbor-gen decoder expects: control ``kind, step, time, status, command,
content, workflow``; data ``step, time, stream, content, workflow``.

As stock spindles send them: a control line's ``kind`` is always there
(``system`` or ``user``), ``status`` and ``command`` only when set; a data
line's content ends with the newline the provider stripped; ``time`` is whole
seconds in RFC 3339 (UTC), and a line without a time gets the current one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from libipld import encode_dag_cbor

from tack_common.pb import provider_pb2 as pb
from tack_common.timefmt import NS_PER_SECOND, utc_second_text
from tack_control.web.sender import Framed, frame_binaries


CONTROL_HEADER = encode_dag_cbor({"t": "#control", "op": 1})
DATA_HEADER = encode_dag_cbor({"t": "#data", "op": 1})
ERROR_HEADER = encode_dag_cbor({"op": -1})
MAX_TEXT_BYTES = 1_000_000
"""The longest string the appview's decoder reads (cbor-gen's limit); longer content is cut."""
NOTE_STEP = -1
"""The step of tack's own notes in a workflow's log (provider step ids are never negative)."""

_STATUS = {pb.STEP_STATUS_START: "start", pb.STEP_STATUS_END: "end"}


def _bounded(text: str) -> str:
    if len(text) <= MAX_TEXT_BYTES // 4:
        return text
    data = text.encode()
    if len(data) <= MAX_TEXT_BYTES:
        return text
    return data[:MAX_TEXT_BYTES].decode(errors="ignore")


_CONTROL = pb.LOG_KIND_CONTROL
_SYSTEM = pb.STEP_KIND_SYSTEM
_STDERR = pb.LOG_STREAM_STDERR
_SHORT = MAX_TEXT_BYTES // 4 - 1
"""Text at most this long (in characters) is within the byte limit whatever it holds."""


def cbor_messages(lines: Sequence[pb.LogLine], workflow: str) -> list[bytes]:
    """One message per line of ``workflow``'s log, in order.

    This runs once per line served (a provider message is encoded once for
    all its viewers), so the loop reads each protobuf field once, reuses one
    body dict per stream for data lines (the encoder sorts keys itself, so a
    dict's own order plays no part) and makes the time text once per second.
    """
    out: list[bytes] = []
    add = out.append
    encode = encode_dag_cbor
    stdout: dict[str, Any] = {"step": 0, "time": "", "stream": "stdout", "content": "", "workflow": workflow}
    stderr = {**stdout, "stream": "stderr"}
    second, stamp = -1, ""
    for line in lines:
        now = (line.time_unix_nano or time.time_ns()) // NS_PER_SECOND
        if now != second:
            second, stamp = now, utc_second_text(now) + "Z"
            stdout["time"] = stderr["time"] = stamp
        content = line.content
        if line.kind != _CONTROL:
            body = stderr if line.stream == _STDERR else stdout
            body["step"] = line.step_id
            body["content"] = content + "\n" if len(content) < _SHORT else _bounded(content + "\n")
            add(DATA_HEADER + encode(body))
            continue
        control: dict[str, Any] = {
            "kind": "system" if line.step_kind == _SYSTEM else "user",
            "step": line.step_id,
            "time": stamp,
            "content": _bounded(content),
            "workflow": workflow,
        }
        status = _STATUS.get(line.step_status)
        if status is not None:
            control["status"] = status
        if line.step_command:
            control["command"] = _bounded(line.step_command)
        add(CONTROL_HEADER + encode(control))
    return out


@dataclass(frozen=True)
class CborEncoding:
    """The subscription's encoding of one workflow's lines (a :data:`logframes.Encoding`, hashable by workflow)."""

    workflow: str

    def __call__(self, lines: Sequence[pb.LogLine]) -> Framed:
        return frame_binaries(cbor_messages(lines, self.workflow))


def note_messages(workflow: str, message: str, ns: int | None = None) -> list[bytes]:
    """tack's own note in ``workflow``'s log: a visible step ``tack`` (step -1) whose lines say ``message``."""
    stamp = utc_second_text((time.time_ns() if ns is None else ns) // NS_PER_SECOND) + "Z"
    edges = [
        CONTROL_HEADER
        + encode_dag_cbor(
            {
                "kind": "user",
                "step": NOTE_STEP,
                "time": stamp,
                "status": status,
                "content": "tack",
                "workflow": workflow,
            }
        )
        for status in ("start", "end")
    ]
    data = [
        DATA_HEADER
        + encode_dag_cbor(
            {
                "step": NOTE_STEP,
                "time": stamp,
                "stream": "stderr",
                "content": text + "\n",
                "workflow": workflow,
            }
        )
        for text in message.splitlines() or [""]
    ]
    return [edges[0], *data, edges[1]]


def error_message(error: str, message: str) -> bytes:
    """An error frame: header ``{"op": -1}`` and body ``{"error", "message"}``."""
    return ERROR_HEADER + encode_dag_cbor({"error": error, "message": message})
