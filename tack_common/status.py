"""Tangled's workflow statuses and how they order, free of I/O."""

from __future__ import annotations

from typing import TypeAlias

from tack_common.pb import provider_pb2 as pb


Status: TypeAlias = pb.Status.ValueType

PENDING = pb.STATUS_PENDING
RUNNING = pb.STATUS_RUNNING
SUCCESS = pb.STATUS_SUCCESS
FAILED = pb.STATUS_FAILED
TIMEOUT = pb.STATUS_TIMEOUT
CANCELLED = pb.STATUS_CANCELLED

TERMINAL: frozenset[Status] = frozenset({SUCCESS, FAILED, TIMEOUT, CANCELLED})

_NAMES: dict[Status, str] = {
    PENDING: "pending",
    RUNNING: "running",
    SUCCESS: "success",
    FAILED: "failed",
    TIMEOUT: "timeout",
    CANCELLED: "cancelled",
}
_BY_NAME = {name: value for value, name in _NAMES.items()}

ALL_NAMES: tuple[str, ...] = tuple(_NAMES.values())
TERMINAL_NAMES: tuple[str, ...] = tuple(n for s, n in _NAMES.items() if s in TERMINAL)


def name(status: Status) -> str:
    """Tangled's name for a status, e.g. ``"running"``; ValueError for UNSPECIFIED or unknown values."""
    try:
        return _NAMES[status]
    except KeyError:
        raise ValueError(f"not a Tangled status: {status}") from None


def from_name(text: str) -> Status:
    """The status called ``text`` by Tangled; ValueError for anything else."""
    try:
        return _BY_NAME[text]
    except KeyError:
        raise ValueError(f"not a Tangled status: {text!r}") from None


def is_terminal(status: Status) -> bool:
    """Whether a workflow in this status is finished for good."""
    return status in TERMINAL


def rank(status: Status) -> int:
    """Position in the lifecycle pending < running < any terminal status."""
    if status == PENDING:
        return 0
    if status == RUNNING:
        return 1
    if status in TERMINAL:
        return 2
    raise ValueError(f"not a Tangled status: {status}")


def advances(current: Status | None, new: Status) -> bool:
    """Whether moving from ``current`` (None: no status yet) to ``new`` is a forward move."""
    return current is None or rank(new) > rank(current)
