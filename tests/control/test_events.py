"""Where an /events subscriber starts from its cursor (tack_control.web.events)."""

from __future__ import annotations

import pytest

from tack_control.web.events import start_cursor


# events_ws.start_cursor

HEAD = 1_764_753_711_000_000_000
REWIND = 2_000_000_000


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "0",
        "-1",
        "-99999999999",
        "abc",
        "1e9",
        "12.5",
        "9" * 5000,
        "0x10",
        " 5000000000 ",
        "\u0661\u0662",
    ],
)
def test_start_cursor_without_a_usable_cursor_is_live(raw: str | None) -> None:
    """A missing, zero, negative or unparsable cursor (as Go's ParseInt sees it: no spaces, ASCII digits,
    int64) starts at the head: live only."""
    assert start_cursor(raw, HEAD, REWIND) == HEAD


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (str(HEAD - 10_000_000_000), HEAD - 10_000_000_000 - REWIND),
        (str(HEAD), HEAD - REWIND),
        ("1", 0),
    ],
)
def test_start_cursor_in_the_past_is_rewound_by_the_margin(raw: str, expected: int) -> None:
    """A past cursor is rewound by the margin (never below zero)."""
    assert start_cursor(raw, HEAD, REWIND) == expected


@pytest.mark.parametrize(
    "cursor",
    [HEAD + 1, HEAD + REWIND, HEAD + REWIND + 1, HEAD + 3_600_000_000_000, 2**63 - 1],
)
def test_start_cursor_ahead_of_the_newest_event_starts_at_the_newest_event(cursor: int) -> None:
    """A cursor from a clock running ahead (even past the rewind) starts at the head, so later events are sent."""
    assert start_cursor(str(cursor), HEAD, REWIND) == min(cursor - REWIND, HEAD)
    assert start_cursor(str(cursor), HEAD, REWIND) <= HEAD
