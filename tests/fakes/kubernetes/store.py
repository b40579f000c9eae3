"""The fake API server's objects: one resourceVersion counter, every change kept as a watch event
(docs/tekton-api.md §2, §10).

History can be compacted (a knob): a watch from a version older than the compaction point is answered
410 Gone, as etcd's compaction makes the real API server answer.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


JSON = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One watch event as stored: after ``version``, ``obj`` was ``kind`` (ADDED, MODIFIED, DELETED)."""

    version: int
    plural: str
    namespace: str
    kind: str
    obj: JSON


def matches(obj: Mapping[str, Any], selector: str) -> bool:
    """Whether the object's labels satisfy an equality selector (``a=b,c=d``; ``a`` alone: has the label)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value.lstrip("="):
                return False
        elif term not in labels:
            return False
    return True


class Store:
    """Objects by (plural, namespace, name), with their change history."""

    def __init__(self) -> None:
        self.version = 1000
        self.objects: dict[tuple[str, str, str], JSON] = {}
        self.history: list[Change] = []
        self.compacted_at = 0
        self.changed = asyncio.Condition()

    def _bump(self) -> int:
        self.version += 1
        return self.version

    def _record(self, plural: str, namespace: str, kind: str, obj: JSON) -> None:
        self.history.append(Change(self.version, plural, namespace, kind, copy.deepcopy(obj)))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def get(self, plural: str, namespace: str, name: str) -> JSON | None:
        """A copy of the object, or None."""
        found = self.objects.get((plural, namespace, name))
        return None if found is None else copy.deepcopy(found)

    def put(self, plural: str, namespace: str, obj: JSON) -> JSON:
        """Create or replace the object (a new resourceVersion); returns a copy as stored."""
        name = obj["metadata"]["name"]
        key = (plural, namespace, name)
        kind = "MODIFIED" if key in self.objects else "ADDED"
        stored = copy.deepcopy(obj)
        stored["metadata"]["namespace"] = namespace
        stored["metadata"]["resourceVersion"] = str(self._bump())
        self.objects[key] = stored
        self._record(plural, namespace, kind, stored)
        return copy.deepcopy(stored)

    def delete(self, plural: str, namespace: str, name: str) -> JSON | None:
        """Remove the object; returns it as it was, or None."""
        stored = self.objects.pop((plural, namespace, name), None)
        if stored is not None:
            stored["metadata"]["resourceVersion"] = str(self._bump())
            self._record(plural, namespace, "DELETED", stored)
        return stored

    def items(self, plural: str, namespace: str, selector: str = "") -> list[JSON]:
        """Copies of every object of the collection that matches ``selector``, by name."""
        return [
            copy.deepcopy(obj)
            for (p, ns, _), obj in sorted(self.objects.items())
            if p == plural and ns == namespace and matches(obj, selector)
        ]

    def since(self, version: int, plural: str, namespace: str, selector: str) -> list[Change]:
        """Changes after ``version`` to the collection (matching ``selector``)."""
        return [
            c
            for c in self.history
            if c.version > version
            and c.plural == plural
            and c.namespace == namespace
            and matches(c.obj, selector)
        ]

    def compact(self) -> None:
        """Forget the history up to now: watches from any older version get 410."""
        self.compacted_at = self.version
        self.history.clear()
