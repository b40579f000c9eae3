"""Time formats of the Tangled wire protocol, free of I/O."""

from __future__ import annotations

import datetime as dt
import functools

from google.protobuf.timestamp_pb2 import Timestamp


NS_PER_SECOND = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@functools.lru_cache(maxsize=4096)
def utc_second_text(seconds: int) -> str:
    """Unix seconds as ``YYYY-MM-DDTHH:MM:SS`` in UTC (no offset); cached, as logs repeat seconds a lot."""
    return (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339_seconds(ns: int) -> str:
    """Format Unix nanoseconds as whole-second RFC 3339 in UTC with ``Z``, as stock spindles do."""
    return utc_second_text(ns // NS_PER_SECOND) + "Z"


def timestamp_from_ns(ns: int) -> Timestamp:
    """A protobuf Timestamp for Unix nanoseconds."""
    seconds, nanos = divmod(ns, NS_PER_SECOND)
    return Timestamp(seconds=seconds, nanos=nanos)


def ns_from_timestamp(ts: Timestamp) -> int:
    """Unix nanoseconds of a protobuf Timestamp."""
    return ts.seconds * NS_PER_SECOND + ts.nanos
