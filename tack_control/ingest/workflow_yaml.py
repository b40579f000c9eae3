"""Reading a workflow file's YAML safely: the one loader behind routing (``tack:``) and ``when:``. Free of I/O.

Workflow YAML comes from users. It is parsed by :mod:`tack_common.safe_yaml` (aliases, nesting and
duplicate keys bounded) and is at most ``MAX_YAML_BYTES``. Both the
composed node tree (``when:`` needs each scalar's source text and style, as yaml.v3 sees it) and
the constructed Python values (routing) come from one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from tack_common import safe_yaml


MAX_YAML_BYTES = 128 << 10
MAX_ALIASES = safe_yaml.MAX_ALIASES
MAX_DEPTH = safe_yaml.MAX_DEPTH

WorkflowYAMLError = safe_yaml.UnsafeYAMLError
"""The workflow file cannot be used; the message says why."""


@dataclass(frozen=True)
class WorkflowDocument:
    """A parsed workflow file: its root node (None when the file is empty) and its values."""

    node: yaml.Node | None
    data: dict[str, Any]


def parse_workflow(raw: str) -> WorkflowDocument:
    """The workflow file's node tree and values; WorkflowYAMLError explains what is wrong."""
    node, doc = safe_yaml.parse(raw, MAX_YAML_BYTES, "workflow file")
    if doc is None:
        return WorkflowDocument(None, {})
    if not isinstance(doc, dict):
        raise WorkflowYAMLError(f"the workflow must be a mapping, not {type(doc).__name__}")
    return WorkflowDocument(node, doc)


def load_workflow(raw: str) -> dict[str, Any]:
    """The workflow file as a mapping; WorkflowYAMLError explains what is wrong."""
    return parse_workflow(raw).data
