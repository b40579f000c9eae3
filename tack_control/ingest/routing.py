"""Which provider runs a workflow, and with what config: decided from the workflow YAML. Free of I/O.

The first key under the workflow's top-level ``tack:`` mapping names the
provider and its value is that provider's config. Workflow YAML comes from
users: it is parsed with a loader that refuses aliases beyond a small budget
(alias bombs), duplicate keys, deep nesting and oversized documents, and the
result is walked with a node budget so aliases cannot expand it either.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml


MAX_YAML_BYTES = 128 << 10
MAX_ALIASES = 64
MAX_DEPTH = 64


class WorkflowYAMLError(ValueError):
    """The workflow file cannot be used; the message says why."""


# libyaml's parser when PyYAML was built with it (about 8x faster: routing runs on the event loop).
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_structure(raw: str) -> None:
    """Refuse alias bombs and deep nesting from the event stream, before anything is built."""
    aliases = depth = 0
    for event in yaml.parse(raw, Loader=_BaseLoader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise WorkflowYAMLError(f"more than {MAX_ALIASES} YAML aliases")
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise WorkflowYAMLError(f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


class _GuardedLoader(_BaseLoader):  # type: ignore[valid-type, misc]
    """The safe loader refusing duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise WorkflowYAMLError(
                    f"unhashable mapping key at line {key_node.start_mark.line + 1}"
                ) from None
            if duplicate:
                raise WorkflowYAMLError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def load_workflow(raw: str) -> dict[str, Any]:
    """The workflow file as a mapping; WorkflowYAMLError explains what is wrong."""
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise WorkflowYAMLError(f"workflow file larger than {MAX_YAML_BYTES} bytes")
    try:
        _check_structure(raw)
        loader = _GuardedLoader(raw)
        try:
            doc = loader.get_single_data()
        finally:
            loader.dispose()
    except WorkflowYAMLError:
        raise
    except RecursionError:
        raise WorkflowYAMLError(f"nested deeper than {MAX_DEPTH} levels") from None
    except Exception as exc:
        # Besides YAMLError, SafeLoader's constructors raise whatever a bad scalar provokes:
        # ValueError (`2001-13-01`), KeyError (`!!bool maybe`), IndexError (`!!int ''`),
        # AttributeError (`!!timestamp ''`), ...
        raise WorkflowYAMLError(f"invalid YAML: {' '.join(str(exc).split())[:300]}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise WorkflowYAMLError(f"the workflow must be a mapping, not {type(doc).__name__}")
    return doc


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
