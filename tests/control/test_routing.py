"""Routing a workflow to its provider by its ``tack:`` block (tack_control.ingest.routing)."""

from __future__ import annotations

import json

import pytest

from tack_control.ingest.routing import MAX_NODES, Route
from tack_control.ingest.workflow_yaml import MAX_ALIASES, MAX_DEPTH, MAX_YAML_BYTES
from tests.support.samples import (
    PROVIDERS,
    timed_route,
)


# routing


def test_first_key_under_tack_picks_the_provider() -> None:
    """The first key under `tack:` names the provider; later keys do not matter."""
    raw = "engine: nixery\ntack:\n  buildkite:\n    pipeline: deploy\n  stub: {}\n"
    assert timed_route(raw, PROVIDERS, "stub") == Route("buildkite", {"pipeline": "deploy"}, {})


def test_provider_config_mapping_is_passed_through_as_json() -> None:
    """The provider's mapping is passed through, keys stringified and dates made text."""
    raw = (
        "tack:\n  stub:\n    steps:\n      - name: a\n        lines: [x, y]\n        seconds: 0.5\n"
        "    outcome: failed\n    exit_code: 3\n    1: one\n    when: 2025-12-01\n    empty: null\n"
    )
    result = timed_route(raw, PROVIDERS, None)
    assert result.provider == "stub" and result.error == ""
    assert result.config == {
        "steps": [{"name": "a", "lines": ["x", "y"], "seconds": 0.5}],
        "outcome": "failed",
        "exit_code": 3,
        "1": "one",
        "when": "2025-12-01",
        "empty": None,
    }
    json.dumps(result.config)


def test_null_provider_config_is_an_empty_mapping() -> None:
    """`tack: {stub: }` routes to stub with an empty config."""
    assert timed_route("tack:\n  stub:\n", PROVIDERS, None) == Route("stub", {}, {})


def test_environment_values_are_stringified() -> None:
    """Workflow `environment:` values become strings: scalars as text, null empty, collections as JSON."""
    raw = (
        "environment:\n  A: 1\n  B: true\n  C: null\n  D: 1.5\n  E: [1, x]\n  F: {k: v}\n"
        "  G: 2024-01-02\n  H: text\n  7: seven\n  I: off\ntack: {stub: {}}\n"
    )
    assert timed_route(raw, PROVIDERS, None).environment == {
        "A": "1",
        "B": "true",
        "C": "",
        "D": "1.5",
        "E": '[1, "x"]',
        "F": '{"k": "v"}',
        "G": "2024-01-02",
        "H": "text",
        "7": "seven",
        "I": "false",
    }


def test_environment_must_be_a_mapping() -> None:
    """A non-mapping `environment:` fails the workflow with a clear error."""
    result = timed_route("environment: [A=1]\ntack: {stub: {}}\n", PROVIDERS, None)
    assert result.provider is None and result.error.startswith("environment: must be a mapping")


def test_no_tack_block_uses_the_default_provider() -> None:
    """A workflow without `tack:` goes to TACK_DEFAULT_PROVIDER with an empty config; engine plays no part."""
    raw = "engine: buildkite\nenvironment: {X: y}\nsteps: []\n"
    assert timed_route(raw, PROVIDERS, "stub") == Route("stub", {}, {"X": "y"})


def test_empty_workflow_uses_the_default_provider() -> None:
    """An empty workflow file is an empty mapping and goes to the default provider."""
    assert timed_route("", PROVIDERS, "stub").provider == "stub"
    assert timed_route("# only a comment\n", PROVIDERS, "stub").provider == "stub"


def test_no_tack_block_and_no_default_lists_configured_providers() -> None:
    """Without `tack:` and without a default the error says so and lists the configured providers."""
    result = timed_route("engine: nixery\n", PROVIDERS, None)
    assert result.provider is None
    assert "no `tack:` block" in result.error and "TACK_DEFAULT_PROVIDER" in result.error
    assert "configured providers: stub, buildkite" in result.error
    assert "configured providers: none" in timed_route("engine: nixery\n", [], None).error


def test_unknown_provider_is_an_error_listing_providers() -> None:
    """A provider name that is not configured fails the workflow, naming it and the configured ones."""
    result = timed_route("tack:\n  jenkins: {job: x}\n", PROVIDERS, "stub")
    assert result.provider is None
    assert "unknown provider 'jenkins'" in result.error and "stub, buildkite" in result.error


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("tack: stub\n", "`tack:` must be a mapping"),
        ("tack: [stub]\n", "`tack:` must be a mapping"),
        ("tack: {}\n", "`tack:` must be a mapping"),
        ("tack: 3\n", "`tack:` must be a mapping"),
        ("tack:\n  stub: [a, b]\n", "`tack.stub` must be a mapping"),
        ("tack:\n  stub: fast\n", "`tack.stub` must be a mapping"),
    ],
)
def test_malformed_tack_block_is_an_error(raw: str, message: str) -> None:
    """A `tack:` that is not a non-empty mapping, or a provider config that is not a mapping, is an error."""
    result = timed_route(raw, PROVIDERS, "stub")
    assert result.provider is None and message in result.error


def _alias_levels(levels: int, width: int) -> str:
    """A YAML alias bomb: each level lists the previous one ``width`` times."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\ntack: {stub: {}}\n"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("tack: [unclosed\n", "invalid YAML"),
        ("tack:\n  stub: {a: 1\n", "invalid YAML"),
        ("a: 1\n---\nb: 2\n", "invalid YAML"),
        ("\tstub: 1\n", "invalid YAML"),
        ("a: !!python/object:os.system {}\n", "invalid YAML"),
        ("- a\n- b\n", "the workflow must be a mapping, not list"),
        ("just text\n", "the workflow must be a mapping, not str"),
        ("42\n", "the workflow must be a mapping, not int"),
        ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3"),
        ("tack:\n  stub: {x: 1, x: 2}\n", "duplicate key 'x' at line 2"),
        ("? [a]\n: 1\n", "unhashable mapping key"),
        (_alias_levels(9, 9), f"more than {MAX_ALIASES} YAML aliases"),
        (_alias_levels(6, 10), f"more than {MAX_NODES} values"),
        ("a: " + "[" * 200 + "]" * 200 + "\n", f"nested deeper than {MAX_DEPTH} levels"),
        ("".join("  " * i + f"k{i}:\n" for i in range(100)), f"nested deeper than {MAX_DEPTH} levels"),
        ("a: &a [*a]\n", f"nested deeper than {MAX_DEPTH} levels"),
        ("a: &a {b: *a}\n", f"nested deeper than {MAX_DEPTH} levels"),
        ("a: x\n" + "#" * MAX_YAML_BYTES + "\n", f"larger than {MAX_YAML_BYTES} bytes"),
        ("a: é\n#" + "é" * (MAX_YAML_BYTES // 2), f"larger than {MAX_YAML_BYTES} bytes"),
        ("a: 2001-13-01\n", "invalid YAML"),
        ("a: !!bool maybe\n", "invalid YAML"),
        ("a: !!int ''\n", "invalid YAML"),
        ("a: !!float x\n", "invalid YAML"),
        ("a: !!timestamp ''\n", "invalid YAML"),
        ("a: " + "9" * 5000 + "\n", "invalid YAML"),
        ("tack:\n  stub:\n    n: 0x" + "f" * 5000 + "\n", "integer"),
        ("environment:\n  N: 0x" + "f" * 5000 + "\ntack: {stub: {}}\n", "integer"),
        ("a: b\ud800\n", "invalid YAML"),
        ("a: b\x00\n", "invalid YAML"),
    ],
)
def test_unusable_workflow_yaml_is_a_clear_bounded_error(raw: str, message: str) -> None:
    """Unparsable, non-mapping, duplicate-key, alias-bomb, deep, oversized or odd YAML fails fast, saying why."""
    result = timed_route(raw, PROVIDERS, "stub")
    assert result.provider is None
    assert result.error.startswith("cannot read the workflow: ")
    assert message in result.error
    assert len(result.error) < 600


def test_aliases_within_budget_are_accepted() -> None:
    """A few ordinary YAML anchors and aliases are fine."""
    raw = "common: &env {A: 1}\nenvironment: *env\ntack:\n  stub:\n    env: *env\n"
    assert timed_route(raw, PROVIDERS, None) == Route("stub", {"env": {"A": 1}}, {"A": "1"})
