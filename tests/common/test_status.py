"""Tangled's workflow statuses and their forward-only order (tack_common.status)."""

from __future__ import annotations

import pytest

from tack_common import status as st
from tack_common.pb import provider_pb2 as pb


# status


def test_status_ranks_pending_running_terminal() -> None:
    """pending ranks below running, which ranks below every terminal status; UNSPECIFIED has no rank."""
    assert st.rank(st.PENDING) == 0
    assert st.rank(st.RUNNING) == 1
    assert {st.rank(s) for s in st.TERMINAL} == {2}
    with pytest.raises(ValueError, match="not a Tangled status"):
        st.rank(pb.STATUS_UNSPECIFIED)


@pytest.mark.parametrize(
    ("current", "new", "forward"),
    [
        (None, st.PENDING, True),
        (None, st.SUCCESS, True),
        (st.PENDING, st.RUNNING, True),
        (st.PENDING, st.CANCELLED, True),
        (st.RUNNING, st.FAILED, True),
        (st.PENDING, st.PENDING, False),
        (st.RUNNING, st.PENDING, False),
        (st.RUNNING, st.RUNNING, False),
        (st.SUCCESS, st.RUNNING, False),
        (st.SUCCESS, st.FAILED, False),
        (st.CANCELLED, st.SUCCESS, False),
    ],
)
def test_status_advances_only_forward(current: st.Status | None, new: st.Status, forward: bool) -> None:
    """advances allows only pending → running → terminal moves, never between terminal statuses."""
    assert st.advances(current, new) is forward


def test_status_names_round_trip() -> None:
    """Every status has its Tangled name and back; unknown names and values raise ValueError."""
    assert st.ALL_NAMES == ("pending", "running", "success", "failed", "timeout", "cancelled")
    for text in st.ALL_NAMES:
        assert st.name(st.from_name(text)) == text
    assert st.is_terminal(st.TIMEOUT) and not st.is_terminal(st.RUNNING)
    with pytest.raises(ValueError, match="not a Tangled status"):
        st.name(pb.STATUS_UNSPECIFIED)
    with pytest.raises(ValueError, match="'done'"):
        st.from_name("done")
