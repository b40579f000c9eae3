"""`when:` as current Tangled evaluates it, and workflow decoding as yaml.v3 does it (tack_control.ingest.when)."""

from __future__ import annotations

import pytest

from tack_control.ingest.when import (
    CloneOptions,
    Constraint,
    Decision,
    Trigger,
    WorkflowSpec,
    WorkflowSpecError,
    decide,
    decide_one,
    parse_spec,
    short_ref_name,
)


def push(ref: str = "refs/heads/main", *changed: str) -> Trigger:
    return Trigger("push", ref=ref, changed_files=changed)


def pull(target: str = "main", action: str = "") -> Trigger:
    return Trigger("pull_request", target_branch=target, action=action)


def outcome(when_yaml: str, trigger: Trigger) -> str:
    """'run', 'skipped' or 'invalid' for a workflow whose `when:` is ``when_yaml``."""
    return decide_one("ci.yml", f"engine: tack\nwhen:\n{when_yaml}", trigger).outcome


# --- decoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("main", ("main",)),
        ("[main, dev]", ("main", "dev")),
        ("\n      - main\n      - 'release/*'", ("main", "release/*")),
        ("1", ("1",)),
        ("yes", ("yes",)),
        ("1.50", ("1.50",)),
        ("~", ()),
        ("", ()),
        ("'null'", ("null",)),
        ("[]", ()),
        ("[main, yes, 'x', \"1\", v1.2, 1e, -]", ("main", "yes", "x", "1", "v1.2", "1e", "-")),
        ('["2024-01-02"]', ("2024-01-02",)),
    ],
)
def test_string_lists_read_scalars_as_their_text(value: str, expected: tuple[str, ...]) -> None:
    """A scalar is a one-item list of its source text (`yes`, `1`); null is empty; list items that yaml.v3 reads as strings pass."""
    spec = parse_spec(f"when:\n  - event: push\n    branch: {value}\n")
    assert spec.when == (Constraint(event=("push",), branch=expected),)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("[main, 1]", "int"),
        ("[0x1F]", "int"),
        ("[1_000]", "int"),
        ("[1.5]", "float"),
        ("[1e3]", "float"),
        ("[08]", "float"),
        ("[.inf]", "float"),
        ("[true]", "bool"),
        ("[main, ~]", "null"),
        ("[2024-01-02]", "timestamp"),
        ("[2024-1-2T10:00:00Z]", "timestamp"),
        ("[[main]]", "collection"),
        ("[{a: b}]", "collection"),
    ],
)
def test_non_string_list_items_drop_the_workflow(value: str, kind: str) -> None:
    """A list item yaml.v3 decodes as a number, bool, null, timestamp or collection is an error naming its type."""
    with pytest.raises(WorkflowSpecError, match=f"of type {kind} into a string value"):
        parse_spec(f"when:\n  - event: push\n    branch: {value}\n")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("when: {event: push}\n", "`when` must be a list of constraints"),
        ("when: push\n", "`when` must be a list of constraints"),
        ("when: [push]\n", "each `when` entry must be a mapping"),
        ("when:\n  - branch: {a: b}\n", "failed to unmarshal StringOrSlice"),
        ("engine: [tack]\n", "`engine` must be a string"),
        ("clone: yes\n", "`clone` must be a mapping"),
        ("clone: {skip: 'true'}\n", "`clone.skip` must be true or false"),
        ("clone: {skip: 2}\n", "`clone.skip` must be true or false"),
        ("clone: {depth: '2'}\n", "`clone.depth` must be an integer"),
        ("clone: {depth: [1]}\n", "`clone.depth` must be an integer"),
        ("when: []\nwhen: []\n", "duplicate key 'when'"),
        ("when: [\n", "invalid YAML"),
        ("- a\n", "must be a mapping"),
    ],
)
def test_undecodable_workflows_are_refused_with_the_reason(raw: str, message: str) -> None:
    """Type errors Tangled's decoder reports (and YAML tack's loader refuses) raise WorkflowSpecError saying what is wrong."""
    with pytest.raises(WorkflowSpecError, match=message):
        parse_spec(raw)


def test_engine_clone_and_defaults() -> None:
    """`engine` is its text, clone booleans accept yes/on, depth truncates floats, submodules/tags default to true."""
    assert parse_spec("") == WorkflowSpec("", (), CloneOptions(False, 0, True, True))
    assert parse_spec("engine: 1\n").engine == "1"
    assert parse_spec("engine: ~\n").engine == ""
    spec = parse_spec("engine: tack\nclone:\n  skip: on\n  depth: 2.9\n  submodules: no\n  tags: ~\n")
    assert spec == WorkflowSpec("tack", (), CloneOptions(skip=True, depth=2, submodules=False, tags=True))
    assert parse_spec("clone: {depth: 0x10, tags: false}\n").clone == CloneOptions(depth=16, tags=False)


def test_null_and_empty_when() -> None:
    """No `when`, `when: ~` and `when: []` give no constraints; a null entry is an empty constraint."""
    for raw in ("engine: x\n", "when: ~\n", "when: []\n"):
        assert parse_spec(raw).when == ()
    assert parse_spec("when: [~]\n").when == (Constraint(),)


def test_unknown_keys_are_ignored() -> None:
    """Keys Tangled does not know (steps, tack, environment, constraint extras) are ignored."""
    spec = parse_spec(
        "tack: {stub: {}}\nsteps: [x]\nwhen:\n  - event: push\n    branch: main\n    other: 1\n"
    )
    assert spec.when == (Constraint(event=("push",), branch=("main",)),)


# --- matching -----------------------------------------------------------------------------------

PUSH_MAIN = "  - event: push\n    branch: main\n"


@pytest.mark.parametrize(
    ("when_yaml", "trigger", "expected"),
    [
        # event and branch
        (PUSH_MAIN, push(), "run"),
        (PUSH_MAIN, push("refs/heads/dev"), "skipped"),
        (
            "  - event: [push, pull_request]\n    branch: [main, 'release/**']\n",
            push("refs/heads/release"),
            "run",
        ),
        ("  - event: push\n    branch: 'release/**'\n", push("refs/heads/release/1/2"), "run"),
        ("  - event: push\n    branch: 'feat/*'\n", push("refs/heads/feat/a/b"), "skipped"),
        ("  - branch: main\n", push(), "skipped"),
        ("  - event: Push\n    branch: main\n", push(), "skipped"),
        ("  - event: push\n", push(), "skipped"),
        # tags are matched by `tag`, branches only by `branch`
        ("  - event: push\n    tag: 'v*'\n", push("refs/tags/v1.2.0"), "run"),
        ("  - event: push\n    tag: 'v*'\n", push("refs/heads/v1"), "skipped"),
        (PUSH_MAIN, push("refs/tags/main"), "skipped"),
        # refs that are neither heads nor tags never match a constraint
        ("  - event: push\n    branch: '**'\n    tag: '**'\n", push("refs/notes/commits"), "skipped"),
        ("  - event: push\n    branch: '['\n", push("refs/pull/1/head"), "skipped"),
        # any constraint may match
        ("  - event: push\n    branch: dev\n" + PUSH_MAIN, push(), "run"),
        # pull requests: target branch and action
        ("  - event: pull_request\n    branch: main\n", pull(), "run"),
        ("  - event: pull_request\n    branch: main\n", pull("dev"), "skipped"),
        ("  - event: pull_request\n    branch: main\n", pull(action="synchronize"), "run"),
        ("  - event: pull_request\n    branch: main\n", pull(action="reopened"), "run"),
        ("  - event: pull_request\n    branch: main\n", pull(action="closed"), "skipped"),
        ("  - event: pull_request\n    branch: main\n", pull(action="merged"), "skipped"),
        (
            "  - event: pull_request\n    branch: main\n    types: [closed, merged]\n",
            pull(action="merged"),
            "run",
        ),
        ("  - event: pull_request\n    branch: main\n    types: closed\n", pull(), "skipped"),
        ("  - event: pull_request\n    branch: main\n    types: opened\n", pull(), "run"),
        ("  - event: pull_request\n", pull(), "skipped"),
        (PUSH_MAIN, pull(), "skipped"),
        ("  - event: pull_request\n    branch: main\n", push(), "skipped"),
        # paths against the changed files
        (PUSH_MAIN + "    paths: ['src/**']\n", push("refs/heads/main", "src/a/b.py"), "run"),
        (PUSH_MAIN + "    paths: ['src/**']\n", push("refs/heads/main", "docs/a.md"), "skipped"),
        (PUSH_MAIN + "    paths: ['src/**']\n", push(), "skipped"),
        (PUSH_MAIN + "    paths: '*.md'\n", push("refs/heads/main", "docs/a.md", "README.md"), "run"),
        (PUSH_MAIN + "    paths: '*.md'\n", push("refs/heads/main", "docs/a.md"), "skipped"),
        ("  - event: pull_request\n    branch: main\n    paths: ['**']\n", pull(), "skipped"),
        # manual always runs; so does a workflow without constraints
        ("  - event: push\n    branch: nope\n", Trigger("manual"), "run"),
        ("  []\n", push("refs/notes/x"), "run"),
        ("  ~\n", pull("anything", "closed"), "run"),
        ("  [~]\n", push(), "skipped"),
    ],
)
def test_when_matches_as_tangled(when_yaml: str, trigger: Trigger, expected: str) -> None:
    """Each row: a `when:` block, a trigger, and whether Tangled would run the workflow."""
    assert outcome(when_yaml, trigger) == expected


@pytest.mark.parametrize(
    ("when_yaml", "trigger", "expected"),
    [
        # a bad glob reached while matching drops the workflow...
        ("  - event: push\n    branch: '['\n", push(), "invalid"),
        # ...even when the constraint's event is another one
        ("  - event: pull_request\n    branch: '['\n", push(), "invalid"),
        # ...and it stops the later constraints from being tried
        ("  - event: push\n    branch: '['\n" + PUSH_MAIN, push(), "invalid"),
        # but an earlier match wins, and patterns after a matching one are never read
        (PUSH_MAIN + "  - event: push\n    branch: '['\n", push(), "run"),
        ("  - event: push\n    branch: [main, '[']\n", push(), "run"),
        ("  - event: push\n    branch: ['{main,[}']\n", push(), "run"),
        ("  - event: push\n    branch: ['{main,[}']\n", push("refs/heads/dev"), "invalid"),
        # tag globs are only read for tag pushes
        ("  - event: push\n    branch: main\n    tag: '['\n", push(), "run"),
        ("  - event: push\n    tag: '['\n", push("refs/tags/v1"), "invalid"),
        # paths are read even when the branch did not match, once per changed file
        ("  - event: push\n    branch: main\n    paths: '['\n", push("refs/heads/dev", "a"), "invalid"),
        ("  - event: push\n    branch: main\n    paths: '['\n", push("refs/heads/dev"), "skipped"),
        # a glob too costly to evaluate is refused the same way
        (
            "  - event: push\n    branch: '" + "{a,a}" * 40 + "c'\n",
            push("refs/heads/" + "a" * 40 + "d"),
            "invalid",
        ),
    ],
)
def test_glob_errors_follow_tangled_evaluation_order(when_yaml: str, trigger: Trigger, expected: str) -> None:
    """A malformed glob drops the workflow exactly when Tangled's evaluation order reaches it."""
    assert outcome(when_yaml, trigger) == expected


def test_decisions_keep_order_and_say_why() -> None:
    """`decide` answers per file in order, with Tangled's wording for skipped and invalid workflows."""
    files = [
        ("a.yml", "engine: tack\nwhen:\n" + PUSH_MAIN),
        ("b.yml", "when:\n  - event: pull_request\n    branch: main\n"),
        ("c.yml", "when:\n  - event: push\n    branch: '['\n"),
        ("d.yml", "when: {bad: shape}\n"),
        ("e.yml", "tack: {stub: {}}\n"),
    ]
    decisions = decide(files, Trigger("pull_request", target_branch="dev"))
    assert [(d.name, d.outcome) for d in decisions] == [
        ("a.yml", "skipped"),
        ("b.yml", "skipped"),
        ("c.yml", "invalid"),
        ("d.yml", "invalid"),
        ("e.yml", "run"),
    ]
    assert decisions[0].reason == "a.yml: workflow skipped: did not match trigger pull request"
    assert decisions[2].reason == "c.yml: failed to execute workflow: syntax error in pattern"
    assert decisions[3].reason.startswith("d.yml: line 1: `when` must be a list")
    assert decisions[4] == Decision("e.yml", "run", "", WorkflowSpec())


def test_paths_match_when_the_changed_files_are_unknown() -> None:
    """A recovered push (changed files unknown) passes `paths`; branch and event still decide."""
    when = PUSH_MAIN + "    paths: ['src/**']\n"
    unknown = Trigger("push", ref="refs/heads/main", changed_files_known=False)
    assert outcome(when, unknown) == "run"
    assert outcome(when, Trigger("push", ref="refs/heads/dev", changed_files_known=False)) == "skipped"
    assert outcome(when, push()) == "skipped"


def test_a_workflow_without_engine_runs() -> None:
    """Unlike Tangled's compiler ("missing engine"), tack runs a matching workflow whatever its engine says."""
    assert decide_one("x.yml", "when:\n" + PUSH_MAIN, push()).outcome == "run"
    assert decide_one("x.yml", "engine: nixery\nwhen:\n" + PUSH_MAIN, push()).outcome == "run"


@pytest.mark.parametrize(
    ("ref", "short"),
    [
        ("refs/heads/main", "main"),
        ("refs/heads/feat/x", "feat/x"),
        ("refs/tags/v1.0", "v1.0"),
        ("refs/heads/tags/x", "tags/x"),
        ("refs/heads/a b", "a"),
        ("refs/heads/", "heads/"),
    ],
)
def test_short_ref_name_is_go_gits(ref: str, short: str) -> None:
    """The branch or tag name matched against globs is go-git's ``Short()`` of the ref, quirks included."""
    assert short_ref_name(ref) == short
