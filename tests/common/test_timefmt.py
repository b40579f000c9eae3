"""Time formats: RFC 3339 as Go writes it, protobuf Timestamps (tack_common.timefmt)."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tack_common import loglines
from tack_common.timefmt import (
    NS_PER_SECOND,
    ns_from_timestamp,
    rfc3339_seconds,
    timestamp_from_ns,
)
from tack_control.web import tangled_json


# 2023-11-14T22:13:20Z
BASE_NS = 1_700_000_000 * NS_PER_SECOND


# timefmt


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (BASE_NS, "2023-11-14T22:13:20Z"),
        (BASE_NS + 500_000_000, "2023-11-14T22:13:20.5Z"),
        (BASE_NS + 120_000_000, "2023-11-14T22:13:20.12Z"),
        (BASE_NS + 123_456_000, "2023-11-14T22:13:20.123456Z"),
        (BASE_NS + 1, "2023-11-14T22:13:20.000000001Z"),
        (BASE_NS + 999_999_999, "2023-11-14T22:13:20.999999999Z"),
        (1, "1970-01-01T00:00:00.000000001Z"),
        (999_999_990, "1970-01-01T00:00:00.99999999Z"),
        (0, "0001-01-01T00:00:00Z"),
    ],
)
def test_log_line_time_is_rfc3339_nano_trimmed_like_go(ns: int, text: str) -> None:
    """A frame's time is UTC with Z, the fraction's trailing zeros trimmed, a zero fraction dropped; 0 (unset) is Go's zero time."""
    assert tangled_json.tangled_dict(loglines.data_line(0, "x", ns=ns))["time"] == text


def test_rfc3339_seconds_drops_the_fraction() -> None:
    """rfc3339_seconds gives whole-second UTC time with Z whatever the nanoseconds."""
    assert rfc3339_seconds(BASE_NS + 999_999_999) == "2023-11-14T22:13:20Z"


@pytest.mark.parametrize("ns", [0, 1, BASE_NS, BASE_NS + 123_456_789, -1, -NS_PER_SECOND - 5])
def test_timestamp_round_trips_nanoseconds(ns: int) -> None:
    """timestamp_from_ns and ns_from_timestamp are inverse, with nanos kept in [0, 1e9)."""
    ts = timestamp_from_ns(ns)
    assert isinstance(ts, Timestamp)
    assert 0 <= ts.nanos < NS_PER_SECOND
    assert ns_from_timestamp(ts) == ns
