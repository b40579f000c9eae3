"""Glob matching as doublestar v4.9.1 decides it (tack_control.ingest.doublestar)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tack_control.ingest.doublestar import BadPattern, GlobTooComplex, match


VECTORS = Path(__file__).parent / "data" / "doublestar_vectors.json"


def outcome(pattern: str, name: str) -> bool | str:
    try:
        return match(pattern, name)
    except BadPattern:
        return "error"


def test_agrees_with_doublestar_on_every_recorded_case() -> None:
    """Every case answered by doublestar itself (corner cases and seeded random patterns) gets the same answer."""
    cases = json.loads(VECTORS.read_text())["cases"]
    assert len(cases) > 3000
    wrong = [(p, n, want, outcome(p, n)) for p, n, want in cases if outcome(p, n) != want]
    assert wrong == []


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        # anchored, `*` and `?` stay inside a segment
        ("main", "main", True),
        ("main", "main2", False),
        ("ma*", "main", True),
        ("*", "feat/x", False),
        ("feat/*", "feat/x", True),
        ("feat/*", "feat/x/y", False),
        ("v?", "v1", True),
        ("?", "/", False),
        # `**` as a whole segment: zero or more segments, and the parent itself
        ("**", "", True),
        ("**", "a/b/c", True),
        ("release/**", "release", True),
        ("release/**", "release/1/2", True),
        ("release/**", "releases", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("**/*.md", "README.md", True),
        ("**/*.md", "docs/a/b.md", True),
        # `**` inside a segment is a single `*`
        ("v**", "v1/x", False),
        ("**.yml", "a/b.yml", False),
        ("src**", "srcx", True),
        # classes: ranges, negation (which does not exclude `/`), escapes, a trailing `-`
        ("v[0-9]", "v7", True),
        ("v[!0-9]", "v7", False),
        ("v[^0-9]", "vx", True),
        ("[!a]", "/", True),
        ("[a-]", "-", True),
        ("[\\]a]", "]", True),
        ("[α-ω]", "β", True),  # noqa: RUF001
        # alternation, nested, empty alternatives, alternatives with `/`
        ("{main,dev}", "dev", True),
        ("{main,dev}", "feat", False),
        ("{a/{b,c},abc}", "a/c", True),
        ("a{,bc}", "a", True),
        ("{,feat/}x", "feat/x", True),
        # escapes
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        # case-sensitive, rune-wise
        ("Main", "main", False),
        ("a?b", "a☺b", True),
        # malformed patterns are errors once matching reaches them, not before
        ("[", "[", "error"),
        ("[]a]", "]", "error"),
        ("a[", "a", "error"),
        ("{a", "{a", "error"),
        ("\\", "\\", "error"),
        ("ma[", "dev", "error"),
        ("{main,[}", "main", True),
        ("{main,[}", "dev", "error"),
    ],
)
def test_doublestar_semantics(pattern: str, name: str, expected: bool | str) -> None:
    """The semantics workflow authors rely on, one case per line (each also checked against doublestar)."""
    assert outcome(pattern, name) == expected


def test_exponential_alternation_stops_quickly_with_a_clear_error() -> None:
    """Forty `{a,a}` groups against a non-matching name hit the work budget instead of running for hours."""
    started = time.monotonic()
    with pytest.raises(GlobTooComplex, match="steps"):
        match("{a,a}" * 40 + "c", "a" * 40 + "d")
    assert time.monotonic() - started < 5


def test_deeply_nested_alternation_is_refused() -> None:
    """Alternatives nested deeper than the limit are refused rather than recursing without bound."""
    with pytest.raises(GlobTooComplex, match="nest"):
        match("{" * 200 + "a" + "}" * 200, "a")


def test_long_star_patterns_are_bounded() -> None:
    """A pathological `*a*a*a…` pattern against a long name is answered quickly (one backtrack point, as in doublestar)."""
    started = time.monotonic()
    assert match("*a" * 500 + "b", "a" * 4000) is False
    assert time.monotonic() - started < 5
