"""Which provider runs a workflow, and with what config: decided from the workflow YAML. Free of I/O.

The first key under the workflow's top-level ``tack:`` mapping names the
provider and its value is that provider's config. Workflow YAML comes from
users: it is parsed by ``workflow_yaml`` (bounded: size, aliases, depth,
duplicate keys), and the result is walked with a node budget so aliases cannot
expand it either.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tack_control.ingest.workflow_yaml import MAX_DEPTH, WorkflowYAMLError, load_workflow


MAX_NODES = 100_000


MAX_INT_BITS = 1024


def _key(key: object) -> str:
    if isinstance(key, int) and key.bit_length() > MAX_INT_BITS:
        raise WorkflowYAMLError(f"an integer is larger than {MAX_INT_BITS} bits")
    return str(key)


def _jsonable(value: object, budget: list[int] | None = None, depth: int = 0) -> object:
    """A JSON-able copy; WorkflowYAMLError when aliases would expand it past MAX_NODES values or MAX_DEPTH levels."""
    if budget is None:
        budget = [MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise WorkflowYAMLError(f"the workflow expands to more than {MAX_NODES} values (YAML aliases?)")
    if depth > MAX_DEPTH:
        # Reachable only through aliases, e.g. the recursive `a: &a [*a]`.
        raise WorkflowYAMLError(f"nested deeper than {MAX_DEPTH} levels (recursive YAML aliases?)")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        # A hex literal can be huge; str() and json.dumps() of it raise ValueError.
        raise WorkflowYAMLError(f"an integer is larger than {MAX_INT_BITS} bits")
    if isinstance(value, dict):
        return {_key(k): _jsonable(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v, budget, depth + 1) for v in value]
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value != value:
        return None
    return value


def _env_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(_jsonable(value))
    return str(_jsonable(value))


@dataclass(frozen=True)
class Route:
    """Where a workflow goes: a provider and its config, or the error that keeps it from running."""

    provider: str | None
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    error: str = ""


def route(raw: str, providers: Sequence[str], default: str | None) -> Route:
    """Decide the provider for a workflow file (the ``engine`` field plays no part)."""
    configured = ", ".join(providers) or "none"
    try:
        doc = load_workflow(raw)
        _jsonable(doc)
    except WorkflowYAMLError as exc:
        return Route(None, error=f"cannot read the workflow: {exc}")
    environment: dict[str, str] = {}
    env_doc = doc.get("environment")
    if env_doc is not None:
        if not isinstance(env_doc, dict):
            return Route(None, error="environment: must be a mapping of names to values")
        environment = {str(k): _env_value(v) for k, v in env_doc.items()}
    tack = doc.get("tack")
    if tack is None:
        if default:
            return Route(default, {}, environment)
        return Route(
            None,
            error="the workflow has no `tack:` block naming a provider and TACK_DEFAULT_PROVIDER is not set"
            f" (configured providers: {configured})",
        )
    if not isinstance(tack, dict) or not tack:
        return Route(None, error=f"`tack:` must be a mapping whose first key names a provider ({configured})")
    name = str(next(iter(tack)))
    if name not in providers:
        return Route(
            None, error=f"unknown provider {name!r} under `tack:` (configured providers: {configured})"
        )
    config = tack[name]
    if config is None:
        config = {}
    if not isinstance(config, dict):
        return Route(None, error=f"`tack.{name}` must be a mapping of provider options")
    jsonable = _jsonable(config)
    assert isinstance(jsonable, dict)
    return Route(name, jsonable, environment)
