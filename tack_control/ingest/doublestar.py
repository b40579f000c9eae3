"""Glob matching with the answers of Go's doublestar v4.9.1 ``Match``.

Tangled matches the ``when:`` branch, tag and path globs of a workflow with
doublestar, so tack must give the same answers: ``*``, ``?``, whole-segment
``**``, character classes, nestable ``{a,b}`` alternation, ``\\`` escapes, and
doublestar's lazy reporting of malformed patterns.

This module was written from doublestar's documented and observed behaviour
(answers recorded from doublestar itself), not from its code.  It does not use
a library because ``wcmatch`` 12.0.1 disagrees with doublestar in ways users
meet: ``release/**`` does not match ``release``, ``[!a]`` does not match
``/``, and malformed patterns are taken as literals instead of being errors.

Matching works on code points, is anchored and case-sensitive, and uses ``/``
as the separator.  Its work is bounded: a match that would need more than
``MAX_STEPS`` units of work, or alternatives nested deeper than
``MAX_ALTERNATION_DEPTH``, raises ``GlobTooComplex``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


__all__ = ["MAX_ALTERNATION_DEPTH", "MAX_STEPS", "BadPattern", "GlobTooComplex", "match"]

MAX_STEPS: int = 200_000
MAX_ALTERNATION_DEPTH: int = 64

_SEPARATOR = "/"
_COPY_UNITS_PER_STEP = 16


class BadPattern(ValueError):
    """The pattern is malformed and matching reached the malformed part or failed."""

    def __init__(self) -> None:
        """Carry doublestar's message."""
        super().__init__("syntax error in pattern")


class GlobTooComplex(ValueError):
    """Matching would take more work than allowed."""


class _Step(enum.Enum):
    """What one matching step did."""

    ADVANCED = enum.auto()
    MISMATCH = enum.auto()
    MATCHED = enum.auto()
    BRANCHED = enum.auto()


class _Budget:
    """Counts units of work for one call of ``match``."""

    def __init__(self) -> None:
        """Start with nothing spent."""
        self.spent = 0

    def spend(self, units: int) -> None:
        """Spend ``units`` of work or raise once the limit is passed."""
        self.spent += units
        if self.spent > MAX_STEPS:
            msg = f"glob needs more than {MAX_STEPS} steps to match"
            raise GlobTooComplex(msg)


@dataclass(frozen=True)
class _CharClass:
    """A parsed ``[...]`` class and the index just after its ``]``."""

    end: int
    negated: bool
    ranges: tuple[tuple[str, str], ...]

    def accepts(self, char: str) -> bool:
        """Whether ``char`` is in the class (negation does not exclude ``/``)."""
        inside = any(low <= char <= high for low, high in self.ranges)
        return inside != self.negated


def _escaped_char(pattern: str, index: int) -> tuple[str, int]:
    """Read one possibly escaped character of a class; return it and the next index."""
    if pattern[index] == "\\":
        index += 1
        if index >= len(pattern):
            raise BadPattern
    return pattern[index], index + 1


def _parse_class(pattern: str, start: int) -> _CharClass:
    """Parse the class opening at ``pattern[start] == '['``; raise if malformed."""
    index = start + 1
    negated = index < len(pattern) and pattern[index] in "!^"
    if negated:
        index += 1
    ranges: list[tuple[str, str]] = []
    while index < len(pattern):
        if pattern[index] == "]":
            if not ranges:
                raise BadPattern  # `[]` and `[!]` are empty classes, not a literal `]`
            return _CharClass(index + 1, negated, tuple(ranges))
        low, index = _escaped_char(pattern, index)
        high = low
        if index + 1 < len(pattern) and pattern[index] == "-" and pattern[index + 1] != "]":
            high, index = _escaped_char(pattern, index + 1)
        ranges.append((low, high))
    raise BadPattern


@dataclass(frozen=True)
class _Alternation:
    """The alternatives of a ``{...}`` group and the index just after its ``}``."""

    alternatives: tuple[str, ...]
    end: int


def _parse_alternation(pattern: str, start: int) -> _Alternation:
    """Split the group opening at ``pattern[start] == '{'``; raise if unclosed or too deep."""
    depth, deepest = 0, 1
    index = piece = start + 1
    alternatives: list[str] = []
    # Classes are not skipped here: `{main,[}` is the alternatives `main` and `[`.
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            depth += 1
            deepest = max(deepest, depth + 1)
        elif char == "}" and depth:
            depth -= 1
        elif char in ",}" and not depth:
            alternatives.append(pattern[piece:index])
            piece = index + 1
            if char == "}":
                _check_nesting(deepest)
                return _Alternation(tuple(alternatives), index + 1)
        index += 1
    raise BadPattern


def _check_nesting(depth: int) -> None:
    """Refuse alternatives nested deeper than ``MAX_ALTERNATION_DEPTH``."""
    if depth > MAX_ALTERNATION_DEPTH:
        msg = f"glob alternatives nested {depth} deep, more than {MAX_ALTERNATION_DEPTH}"
        raise GlobTooComplex(msg)


def _is_valid(pattern: str) -> bool:
    """Whether the pattern is well formed (a stray `}` is not, a stray `]` is)."""
    depth = 0
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            if index + 1 == len(pattern):
                return False
            index += 2
            continue
        if char == "[":
            try:
                index = _parse_class(pattern, index).end
            except BadPattern:
                return False
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            if not depth:
                return False
            depth -= 1
        index += 1
    return not depth


def _star_run_end(pattern: str, start: int) -> int:
    """Index just after the run of `*` starting at ``start``."""
    end = start
    while end < len(pattern) and pattern[end] == "*":
        end += 1
    return end


def _is_whole_segment(pattern: str, start: int, end: int) -> bool:
    """Whether ``pattern[start:end]`` is exactly `**` filling a path segment."""
    after_boundary = start == 0 or pattern[start - 1] == _SEPARATOR
    before_boundary = end == len(pattern) or pattern[end] == _SEPARATOR
    return end - start == 2 and after_boundary and before_boundary


@dataclass
class _Frame:
    """Matching state of one pattern against one name, with its backtrack points.

    An alternative is matched as a pattern of its own, the alternative's text
    followed by the rest of the enclosing pattern, against the rest of the name;
    so a `**` that starts that text counts as a whole segment (`x{,y}**`
    matches `xa/b`).
    """

    pattern: str
    name: str
    pi: int = 0
    ni: int = 0
    star: tuple[int, int] | None = None
    globstar: tuple[int, int] | None = None
    pending: list[str] = field(default_factory=list)
    rest: str = ""

    def run(self, budget: _Budget) -> _Step:
        """Match until the frame matches, fails, or branches into alternatives."""
        while True:
            budget.spend(1)
            if self.pi == len(self.pattern) and self.ni == len(self.name):
                return _Step.MATCHED
            step = self._step(budget)
            if step is _Step.MISMATCH and self.backtrack():
                continue
            if step is not _Step.ADVANCED:
                return step

    def backtrack(self) -> bool:
        """Resume from the latest `*`, else the latest `**`; False when none is left."""
        if self.star is not None:
            pi, ni = self.star
            if ni < len(self.name) and self.name[ni] != _SEPARATOR:
                self.star = (pi, ni + 1)
                self.pi, self.ni = pi, ni + 1
                return True
        if self.globstar is not None:
            pi, ni = self.globstar
            slash = self.name.find(_SEPARATOR, ni)
            if slash >= 0:
                self.globstar = (pi, slash + 1)
                self.star = None
                self.pi, self.ni = pi, slash + 1
                return True
        return False

    def next_alternative(self, budget: _Budget) -> _Frame | None:
        """A frame for the next untried alternative of the current group, if any."""
        if not self.pending:
            return None
        text = self.pending.pop(0) + self.rest
        name = self.name[self.ni :]
        # Copying is cheap next to a matching step, but it must still count so that
        # long patterns or names cannot make the copies themselves the unbounded work.
        budget.spend(1 + (len(text) + len(name)) // _COPY_UNITS_PER_STEP)
        return _Frame(text, name)

    def _step(self, budget: _Budget) -> _Step:
        """Try to advance over one pattern element."""
        char = self.pattern[self.pi] if self.pi < len(self.pattern) else ""
        if char == "*":
            return self._stars()
        if char == "{":
            return self._branch(budget)
        if self.ni == len(self.name):
            return self._at_name_end(char)
        if not char:
            return _Step.MISMATCH
        return self._one_char(char, budget)

    def _stars(self) -> _Step:
        """Record a backtrack point for `*`, or for a whole-segment `**`."""
        end = _star_run_end(self.pattern, self.pi)
        if not _is_whole_segment(self.pattern, self.pi, end):
            self.star = (end, self.ni)
            self.pi = end
            return _Step.ADVANCED
        if end == len(self.pattern):
            return _Step.MATCHED
        self.globstar = (end + 1, self.ni)
        self.star = None
        self.pi = end + 1
        return _Step.ADVANCED

    def _branch(self, budget: _Budget) -> _Step:
        """Queue the alternatives of the group at the current position."""
        group = _parse_alternation(self.pattern, self.pi)
        budget.spend(group.end - self.pi)
        self.pending = list(group.alternatives)
        self.rest = self.pattern[group.end :]
        return _Step.BRANCHED

    def _at_name_end(self, char: str) -> _Step:
        """Handle a pattern element once the name is used up."""
        if self.pi == len(self.pattern) - 3 and self.pattern.endswith("/**"):
            return _Step.MATCHED  # `release/**` matches `release`
        if char == "[":
            _parse_class(self.pattern, self.pi)
        elif char == "\\" and self.pi + 1 == len(self.pattern):
            raise BadPattern
        return _Step.MISMATCH

    def _one_char(self, char: str, budget: _Budget) -> _Step:
        """Match one pattern element that consumes exactly one name character."""
        target = self.name[self.ni]
        width = 1
        if char == "?":
            matched = target != _SEPARATOR
        elif char == "[":
            parsed = _parse_class(self.pattern, self.pi)
            budget.spend(parsed.end - self.pi)
            matched, width = parsed.accepts(target), parsed.end - self.pi
        elif char == "\\":
            if self.pi + 1 == len(self.pattern):
                raise BadPattern
            matched, width = self.pattern[self.pi + 1] == target, 2
        else:
            matched = char == target
        if not matched:
            return _Step.MISMATCH
        self.pi += width
        self.ni += 1
        return _Step.ADVANCED


def _search(root: _Frame, budget: _Budget) -> bool:
    """Run the root frame and, depth first, the alternatives it branches into."""
    stack = [root]
    step = root.run(budget)
    while step is not _Step.MATCHED:
        frame = stack[-1]
        if step is _Step.BRANCHED:
            child = frame.next_alternative(budget)
            if child is not None:
                stack.append(child)
                step = child.run(budget)
                continue
            # Every alternative failed: a mismatch at the `{`.
            if frame.backtrack():
                step = frame.run(budget)
                continue
        stack.pop()
        if not stack:
            return False
        step = _Step.BRANCHED  # the enclosing frame tries its next alternative
    return True


def match(pattern: str, name: str) -> bool:
    """Whether ``name`` matches ``pattern`` as doublestar v4.9.1 ``Match`` decides."""
    budget = _Budget()
    root = _Frame(pattern, name)
    if _search(root, budget):
        return True
    # Only the part from where matching stopped is checked: a stray `}` already matched
    # as a literal goes unreported (`}[^/]` against `}aa//` is False, as in doublestar).
    if not _is_valid(pattern[root.pi :]):
        raise BadPattern
    return False
