"""Parsing YAML that users wrote, safely: PyYAML's safe loader (libyaml's when available) behind limits. Free of I/O.

At most ``max_bytes`` of text, ``MAX_ALIASES`` aliases (alias bombs), ``MAX_DEPTH`` levels of nesting, and
no repeated mapping key (Go's yaml.v3 refuses those too). Used for workflow files by the control plane and
for manifests by providers that take YAML from a workflow (sourcehut).
"""

from __future__ import annotations

from typing import Any

import yaml


MAX_ALIASES = 64
MAX_DEPTH = 64


class UnsafeYAMLError(ValueError):
    """The YAML cannot be used; the message says why."""


# libyaml's parser when PyYAML was built with it (about 8x faster: parsing runs on the event loop).
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_structure(raw: str) -> None:
    """Refuse alias bombs and deep nesting from the event stream, before anything is built."""
    aliases = depth = 0
    for event in yaml.parse(raw, Loader=_BaseLoader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise UnsafeYAMLError(f"more than {MAX_ALIASES} YAML aliases")
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise UnsafeYAMLError(f"nested deeper than {MAX_DEPTH} levels")
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
                raise UnsafeYAMLError(
                    f"unhashable mapping key at line {key_node.start_mark.line + 1}"
                ) from None
            if duplicate:
                raise UnsafeYAMLError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def parse(raw: str, max_bytes: int, what: str = "YAML document") -> tuple[yaml.Node | None, Any]:
    """The document's node tree and value (both None when it is empty); UnsafeYAMLError explains what is wrong."""
    if len(raw.encode("utf-8", "surrogatepass")) > max_bytes:
        raise UnsafeYAMLError(f"{what} larger than {max_bytes} bytes")
    try:
        _check_structure(raw)
        loader = _GuardedLoader(raw)
        try:
            node = loader.get_single_node()
            doc = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except UnsafeYAMLError:
        raise
    except RecursionError:
        raise UnsafeYAMLError(f"nested deeper than {MAX_DEPTH} levels") from None
    except Exception as exc:
        # Besides YAMLError, SafeLoader's constructors raise whatever a bad scalar provokes:
        # ValueError (`2001-13-01`), KeyError (`!!bool maybe`), IndexError (`!!int ''`),
        # AttributeError (`!!timestamp ''`), ...
        raise UnsafeYAMLError(f"invalid YAML: {' '.join(str(exc).split())[:300]}") from None
    return node, doc
