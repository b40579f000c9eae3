"""The watch wire: events, bookmarks and 410 decoded; lines split across chunks and bounded (docs/tekton-api.md §2)."""

from __future__ import annotations

import json

import pytest

from tack_provider_tekton.watchwire import Lines, LineTooLong, Malformed, decode


def line(kind: str, obj: dict[str, object]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode()


def test_events_carry_the_version_to_resume_from() -> None:
    """ADDED/MODIFIED/DELETED give the object's resourceVersion; a bookmark gives its own."""
    event = decode(line("MODIFIED", {"metadata": {"name": "pr", "resourceVersion": "17"}}))
    assert event is not None and (event.kind, event.name, event.version) == ("MODIFIED", "pr", "17")
    mark = decode(line("BOOKMARK", {"metadata": {"resourceVersion": "40"}}))
    assert mark is not None and (mark.kind, mark.version) == ("BOOKMARK", "40")


def test_an_error_event_with_410_is_gone() -> None:
    """An ERROR event whose Status has code 410 means: list again."""
    event = decode(line("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}))
    assert event is not None and (event.kind, event.code, event.version) == ("GONE", 410, None)
    other = decode(line("ERROR", {"kind": "Status", "code": 500, "message": "boom"}))
    assert other is not None and other.kind == "ERROR"


@pytest.mark.parametrize(
    "raw",
    [b"not json", b'{"type": "ADDED"}', line("SURPRISE", {}), line("BOOKMARK", {"metadata": {}})],
    ids=["not_json", "no_object", "unknown_type", "bookmark_without_version"],
)
def test_malformed_lines_are_refused(raw: bytes) -> None:
    """Anything that is not a watch event raises Malformed (the watcher then starts over)."""
    with pytest.raises(Malformed):
        decode(raw)


def test_blank_lines_are_skipped() -> None:
    """Keep-alive blank lines are no event."""
    assert decode(b"  ") is None


def test_lines_split_anywhere_and_bounded() -> None:
    """Chunks cut mid-line are joined; the tail waits; a line over the bound is an error."""
    lines = Lines(limit=10)
    assert lines.feed(b"ab") == []
    assert lines.feed(b"c\nde\nf") == [b"abc", b"de"]
    assert lines.flush() == b"f"
    with pytest.raises(LineTooLong):
        lines.feed(b"x" * 11)
