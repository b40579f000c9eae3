"""Which workflows a trigger runs: ``when:`` evaluated exactly as current Tangled does. Free of I/O.

Tangled's spindle decodes each ``.tangled/workflows/*`` file with yaml.v3 into ``engine``, ``when``
(a list of constraints) and ``clone``, then keeps a workflow if the trigger is manual, if ``when`` is
absent or empty, or if any constraint matches (research note 13 §5). A constraint matches when all of:

* ``event`` lists the trigger's kind (``push``, ``pull_request``; exact strings);
* push: the ref is ``refs/heads/X`` and a ``branch`` glob matches ``X``, or ``refs/tags/X`` and a
  ``tag`` glob matches ``X``; any other ref never matches;
* pull request: a ``branch`` glob matches the *target* branch, and the action is in ``types``
  (default ``opened, reopened, synchronize``; a missing action counts as ``opened``);
* if ``paths`` is given: some changed file matches a ``paths`` glob (no changed files: no match).

``branch``, ``tag``, ``paths``, ``event`` and ``types`` are a string or a list of strings. Globs are
doublestar's (``tack_control.ingest.doublestar``). A malformed glob that matching reaches drops the
workflow with "syntax error in pattern", even when its constraint's event did not match, exactly as
Tangled evaluates them (branch/tag, then paths, constraint by constraint, stopping at the first match).

Scalars follow yaml.v3, not PyYAML: ``branch: yes`` is the branch ``yes``, a list item that yaml.v3
reads as a number, boolean, null or timestamp (``[main, 1]``) is an error that drops the file, and
``clone.skip: on`` is true. (One known difference: an explicit tag on a plain list item, as in
``[!!str 1]``, is judged by its text.)

**``engine:``** Tangled's compiler drops a matching workflow without ``engine:`` ("missing
engine"), and the knot prints that error to the pusher. tack runs every matching workflow and
routes it by its ``tack:`` block whatever ``engine`` says; the documented form is ``engine: tack``,
which keeps the knot's push output clean and tells a reader which spindle the file is for. A file
without ``engine:`` still runs on tack.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import yaml

from tack_control.ingest.doublestar import BadPattern, GlobTooComplex, match
from tack_control.ingest.workflow_yaml import WorkflowYAMLError, parse_workflow


TriggerKind = Literal["push", "pull_request", "manual"]
DEFAULT_PULL_REQUEST_ACTIONS = ("opened", "reopened", "synchronize")


@dataclass(frozen=True)
class Trigger:
    """What happened: a push of ``ref``, a pull request into ``target_branch`` (``action``), or a manual run."""

    kind: TriggerKind
    ref: str = ""
    target_branch: str = ""
    action: str = ""
    changed_files: tuple[str, ...] = ()
    changed_files_known: bool = True
    """False for a push recovered from the knot's refs (no event, so no changed files): ``paths`` then
    match, as tack's recovery promises (Tangled has no such pushes)."""


@dataclass(frozen=True)
class Constraint:
    """One entry of ``when:``; every field a list of strings (empty when absent)."""

    event: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    branch: tuple[str, ...] = ()
    tag: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class CloneOptions:
    """The ``clone:`` block as the pipeline record carries it (submodules and tags default to true)."""

    skip: bool = False
    depth: int = 0
    submodules: bool = True
    tags: bool = True


@dataclass(frozen=True)
class WorkflowSpec:
    """The parts of a workflow file that Tangled reads."""

    engine: str = ""
    when: tuple[Constraint, ...] = ()
    clone: CloneOptions = CloneOptions()


class WorkflowSpecError(ValueError):
    """The workflow file cannot be decoded as Tangled decodes it; the message says why."""


class WhenError(ValueError):
    """Evaluating ``when:`` failed (a malformed or too complex glob)."""


@dataclass(frozen=True)
class Decision:
    """What becomes of one workflow file: it runs, it is skipped (no match), or it is invalid (dropped)."""

    name: str
    outcome: Literal["run", "skipped", "invalid"]
    reason: str = ""
    spec: WorkflowSpec | None = None


def decide(files: Iterable[tuple[str, str]], trigger: Trigger) -> list[Decision]:
    """The decision for each (file name, text), in the given order."""
    return [decide_one(name, raw, trigger) for name, raw in files]


def decide_one(name: str, raw: str, trigger: Trigger) -> Decision:
    """The decision for one workflow file, with Tangled's wording for why it does not run."""
    try:
        spec = parse_spec(raw)
    except WorkflowSpecError as exc:
        return Decision(name, "invalid", f"{name}: {exc}")
    try:
        matched = matches(spec, trigger)
    except WhenError as exc:
        return Decision(name, "invalid", f"{name}: failed to execute workflow: {exc}", spec)
    if not matched:
        kind = trigger.kind.replace("_", " ")
        return Decision(name, "skipped", f"{name}: workflow skipped: did not match trigger {kind}", spec)
    return Decision(name, "run", "", spec)


# --- matching ---------------------------------------------------------------------------------


def matches(spec: WorkflowSpec, trigger: Trigger) -> bool:
    """``Workflow.Match``: manual always; otherwise the first matching constraint, or no constraints."""
    if trigger.kind == "manual":
        return True
    for constraint in spec.when:
        if constraint_matches(constraint, trigger):
            return True
    return not spec.when


def constraint_matches(c: Constraint, trigger: Trigger) -> bool:
    """``Constraint.Match``; every glob list it reaches is evaluated (so its errors surface) in Tangled's order."""
    if trigger.kind == "manual":
        return True
    result = trigger.kind in c.event
    if trigger.kind == "pull_request":
        branch = _any_glob(c.branch, trigger.target_branch)
        action = trigger.action or "opened"
        result = result and branch and action in (c.types or DEFAULT_PULL_REQUEST_ACTIONS)
    if trigger.kind == "push":
        result = _ref_matches(c, trigger.ref) and result
    if c.paths and trigger.changed_files_known:
        changed = any(_any_glob(c.paths, path) for path in trigger.changed_files)
        result = result and changed
    return result


def _ref_matches(c: Constraint, ref: str) -> bool:
    if ref.startswith("refs/heads/"):
        return _any_glob(c.branch, short_ref_name(ref))
    if ref.startswith("refs/tags/"):
        return _any_glob(c.tag, short_ref_name(ref))
    return False


def short_ref_name(ref: str) -> str:
    """go-git's ``ReferenceName.Short()`` for branch and tag refs: the name after the prefix.

    go-git scans the rest with ``fmt.Sscanf("%s")``, which stops at whitespace (git refuses such
    names, but a knot's event is input); an empty rest leaves the previous rule's answer.
    """
    result = ref
    for prefix in ("refs/", "refs/tags/", "refs/heads/"):
        if ref.startswith(prefix):
            rest = ref[len(prefix) :].lstrip(" \t\r\v\f")
            words = rest.split(maxsplit=1)
            if words and not rest.startswith("\n"):
                result = words[0]
    return result


def _any_glob(patterns: tuple[str, ...], name: str) -> bool:
    """``matchesPattern``: patterns in order, stopping at the first match or error."""
    for pattern in patterns:
        try:
            if match(pattern, name):
                return True
        except (BadPattern, GlobTooComplex) as exc:
            raise WhenError(str(exc)) from None
    return False


# --- decoding, as yaml.v3 decodes into Tangled's Workflow struct -------------------------------------

_STR = "tag:yaml.org,2002:str"


def parse_spec(raw: str) -> WorkflowSpec:
    """The ``engine``, ``when`` and ``clone`` of a workflow file; WorkflowSpecError when Tangled would drop it."""
    try:
        doc = parse_workflow(raw)
    except WorkflowYAMLError as exc:
        raise WorkflowSpecError(str(exc)) from None
    if not isinstance(doc.node, yaml.MappingNode):
        return WorkflowSpec()
    fields = _fields(doc.node)
    return WorkflowSpec(
        engine=_string_field(fields.get("engine"), "engine"),
        when=_constraints(fields.get("when")),
        clone=_clone(fields.get("clone")),
    )


def _fields(node: yaml.MappingNode) -> dict[str, yaml.Node]:
    """The mapping's values by key text (the loader has already refused repeated keys)."""
    return {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _is_null(node: yaml.Node | None) -> bool:
    return node is None or (isinstance(node, yaml.ScalarNode) and _scalar(node)[0] == "null")


def _constraints(node: yaml.Node | None) -> tuple[Constraint, ...]:
    if _is_null(node):
        return ()
    assert node is not None
    if not isinstance(node, yaml.SequenceNode):
        raise WorkflowSpecError(f"line {_line(node)}: `when` must be a list of constraints")
    constraints = []
    for item in node.value:
        if _is_null(item):
            constraints.append(Constraint())  # yaml.v3 decodes a null entry as an empty constraint
            continue
        if not isinstance(item, yaml.MappingNode):
            raise WorkflowSpecError(f"line {_line(item)}: each `when` entry must be a mapping")
        fields = _fields(item)
        constraints.append(
            Constraint(
                event=_string_list(fields.get("event")),
                types=_string_list(fields.get("types")),
                branch=_string_list(fields.get("branch")),
                tag=_string_list(fields.get("tag")),
                paths=_string_list(fields.get("paths")),
            )
        )
    return tuple(constraints)


def _string_list(node: yaml.Node | None) -> tuple[str, ...]:
    """Tangled's ``StringList``: a scalar is a one-item list (of its text), a list must hold only strings."""
    if _is_null(node):
        return ()
    assert node is not None
    if isinstance(node, yaml.ScalarNode):
        return (node.value,)
    if isinstance(node, yaml.SequenceNode):
        items = []
        for item in node.value:
            kind = _scalar(item)[0] if isinstance(item, yaml.ScalarNode) else "collection"
            if kind != "str":
                text = item.value if isinstance(item, yaml.ScalarNode) else "a list or mapping"
                raise WorkflowSpecError(
                    f"line {_line(item)}: cannot unmarshal {text!r} of type {kind} into a string value"
                )
            items.append(item.value)
        return tuple(items)
    raise WorkflowSpecError(f"line {_line(node)}: failed to unmarshal StringOrSlice")


def _string_field(node: yaml.Node | None, name: str) -> str:
    if _is_null(node):
        return ""
    if not isinstance(node, yaml.ScalarNode):
        assert node is not None
        raise WorkflowSpecError(f"line {_line(node)}: `{name}` must be a string")
    return str(node.value)


def _clone(node: yaml.Node | None) -> CloneOptions:
    if _is_null(node):
        return CloneOptions()
    if not isinstance(node, yaml.MappingNode):
        assert node is not None
        raise WorkflowSpecError(f"line {_line(node)}: `clone` must be a mapping")
    fields = _fields(node)
    skip = _bool(fields.get("skip"), "clone.skip")
    submodules = _bool(fields.get("submodules"), "clone.submodules")
    tags = _bool(fields.get("tags"), "clone.tags")
    return CloneOptions(
        skip=bool(skip),
        depth=_int(fields.get("depth"), "clone.depth"),
        submodules=submodules is None or submodules,
        tags=tags is None or tags,
    )


_TRUE_WORDS = {"y", "Y", "yes", "Yes", "YES", "on", "On", "ON"}
_FALSE_WORDS = {"n", "N", "no", "No", "NO", "off", "Off", "OFF"}


def _bool(node: yaml.Node | None, name: str) -> bool | None:
    """A yaml.v3 bool field: booleans, and the YAML 1.1 words yes/no/on/off...; None when absent or null."""
    if _is_null(node):
        return None
    assert node is not None
    if isinstance(node, yaml.ScalarNode):
        kind, value = _scalar(node)
        if kind == "bool":
            return bool(value)
        if kind == "str" and node.value in _TRUE_WORDS | _FALSE_WORDS:
            return node.value in _TRUE_WORDS
    raise WorkflowSpecError(f"line {_line(node)}: `{name}` must be true or false")


def _int(node: yaml.Node | None, name: str) -> int:
    """A yaml.v3 int field: integers, and floats truncated (as yaml.v3 does); 0 when absent or null."""
    if _is_null(node):
        return 0
    assert node is not None
    if isinstance(node, yaml.ScalarNode):
        kind, value = _scalar(node)
        if kind == "int" and isinstance(value, int) and -(2**63) <= value < 2**63:
            return value
        if kind == "float" and isinstance(value, float) and -(2.0**63) <= value < 2.0**63:
            return int(value)
    raise WorkflowSpecError(f"line {_line(node)}: `{name}` must be an integer")


def _scalar(node: yaml.ScalarNode) -> tuple[str, object]:
    """yaml.v3's reading of a scalar: (null|bool|int|float|timestamp|str, value)."""
    if node.style:  # plain style is None (PyYAML) or "" (libyaml)
        # Quoted or block scalars are strings, unless explicitly tagged otherwise.
        return ("str", node.value) if node.tag == _STR else _resolve_plain(node.value)
    return _resolve_plain(node.value)


_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INT = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_DATETIME = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[Tt](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})"
    r"| (\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.\d+)?)"
)
_SPECIAL: dict[str, tuple[str, object]] = {
    **dict.fromkeys(("true", "True", "TRUE"), ("bool", True)),
    **dict.fromkeys(("false", "False", "FALSE"), ("bool", False)),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), ("null", None)),
    **dict.fromkeys(
        (
            ".nan",
            ".NaN",
            ".NAN",
            ".inf",
            ".Inf",
            ".INF",
            "+.inf",
            "+.Inf",
            "+.INF",
            "-.inf",
            "-.Inf",
            "-.INF",
        ),
        ("float", float("nan")),
    ),
}


def _resolve_plain(text: str) -> tuple[str, object]:
    """yaml.v3 ``resolve("", text)`` for a plain scalar (YAML 1.2 core schema plus its compatibility rules)."""
    if text in _SPECIAL:
        return _SPECIAL[text]
    first = text[:1]
    if first == ".":
        return ("float", float(text)) if _FLOAT.fullmatch(text) else ("str", text)
    if not (first.isascii() and (first.isdigit() or first in "+-")):
        return "str", text
    if _timestamp(text):
        return "timestamp", text
    plain = text.replace("_", "")
    if _INT.fullmatch(plain):
        value = _go_int(plain)
        if -(2**63) <= value < 2**64 and not (value >= 2**63 and plain[0] in "+-"):
            return "int", value
    if _FLOAT.fullmatch(plain):
        return "float", float(plain)
    return "str", text


def _go_int(plain: str) -> int:
    """The value of an integer literal in Go's base-0 syntax (a leading 0 means octal)."""
    sign = -1 if plain[0] == "-" else 1
    digits = plain.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXoObB":
        return sign * int(digits, 8)
    return sign * int(digits, 0)


def _timestamp(text: str) -> bool:
    """Whether yaml.v3 reads ``text`` as a timestamp (its four layouts, with Go's range checks)."""
    m = _DATE.fullmatch(text) or _DATETIME.fullmatch(text)
    if m is None:
        return False
    numbers = [int(g) for g in m.groups() if g is not None]
    try:
        dt.date(numbers[0], numbers[1], numbers[2])
    except ValueError:
        return False
    if len(numbers) == 6:
        hour, minute, second = numbers[3:]
        return hour < 24 and minute < 60 and second < 60
    return True
