"""Reading a workflow file's YAML safely: the one loader behind routing (``tack:``) and ``when:``. Free of I/O.

Workflow YAML comes from users. It is parsed with PyYAML's safe loader (libyaml's when available)
behind limits: at most ``MAX_YAML_BYTES``, ``MAX_ALIASES`` aliases (alias bombs), ``MAX_DEPTH``
levels of nesting, and no repeated mapping key (Tangled's yaml.v3 refuses those too). Both the
composed node tree (``when:`` needs each scalar's source text and style, as yaml.v3 sees it) and
the constructed Python values (routing) come from one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml


MAX_YAML_BYTES = 128 << 10
MAX_ALIASES = 64
MAX_DEPTH = 64


class WorkflowYAMLError(ValueError):
    """The workflow file cannot be used; the message says why."""


@dataclass(frozen=True)
class WorkflowDocument:
    """A parsed workflow file: its root node (None when the file is empty) and its values."""

    node: yaml.Node | None
    data: dict[str, Any]


# libyaml's parser when PyYAML was built with it (about 8x faster: parsing runs on the event loop).
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


def parse_workflow(raw: str) -> WorkflowDocument:
    """The workflow file's node tree and values; WorkflowYAMLError explains what is wrong."""
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise WorkflowYAMLError(f"workflow file larger than {MAX_YAML_BYTES} bytes")
    try:
        _check_structure(raw)
        loader = _GuardedLoader(raw)
        try:
            node = loader.get_single_node()
            doc = loader.construct_document(node) if node is not None else None
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
        return WorkflowDocument(None, {})
    if not isinstance(doc, dict):
        raise WorkflowYAMLError(f"the workflow must be a mapping, not {type(doc).__name__}")
    return WorkflowDocument(node, doc)


def load_workflow(raw: str) -> dict[str, Any]:
    """The workflow file as a mapping; WorkflowYAMLError explains what is wrong."""
    return parse_workflow(raw).data
