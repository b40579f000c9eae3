"""A small atproto lexicon validator for tests: checks JSON values against the lexicon files in tests/fixtures.

Written from the lexicon language's rules, not from tack's code: objects
(required properties; unknown properties allowed), strings (``format`` did,
datetime, tid, at-uri; ``minLength``/``maxLength`` in UTF-8 bytes;
``min``/``maxGraphemes`` counted in code points, exact for the ASCII names
used here; ``enum``), integers (``minimum``/``maximum``; a JSON boolean is not
an integer), booleans, arrays (``minLength``/``maxLength`` in items), refs
(``#def``, ``nsid#def``, ``nsid``), unions (``$type`` must name one of the
refs: tack's unions are closed in practice, so an unknown member is an error here),
records (their ``record`` object) and blob references (JSON form, ``accept``ed MIME type).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.fakes.appview import parse_at_uri, parse_rfc3339


LEXICONS = Path(__file__).resolve().parents[1] / "fixtures" / "lexicons"
_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$")
_TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
# atproto datetimes: RFC 3339 with an upper-case T and a time zone, which Go's parser also requires.
_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


class Invalid(AssertionError):
    """A value the lexicon does not allow; the message gives the path to it."""


def load(nsid: str) -> dict[str, Any]:
    """A lexicon document from tests/fixtures/lexicons."""
    doc: dict[str, Any] = json.loads((LEXICONS / f"{nsid}.json").read_text())
    return doc


class Lexicons:
    """Validates values against definitions of the lexicons in tests/fixtures/lexicons."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    def definition(self, ref: str, context: str = "") -> tuple[str, dict[str, Any]]:
        """(nsid, definition) for ``nsid#name``, ``#name`` (in ``context``) or ``nsid`` (its main)."""
        nsid, _, name = ref.partition("#")
        nsid = nsid or context
        if nsid not in self.docs:
            self.docs[nsid] = load(nsid)
        return nsid, self.docs[nsid]["defs"][name or "main"]

    def validate(self, value: Any, ref: str) -> None:
        """Raise Invalid unless ``value`` is a valid ``ref``."""
        nsid, schema = self.definition(ref)
        self._check(value, schema, nsid, ref)

    def output(self, nsid: str, value: Any) -> None:
        """Raise Invalid unless ``value`` is a valid output of the query ``nsid``."""
        _, main = self.definition(nsid)
        self._check(value, main["output"]["schema"], nsid, f"{nsid} output")

    def _check(self, value: Any, schema: dict[str, Any], nsid: str, path: str) -> None:
        kind = schema["type"]
        if kind == "record":
            self._check(value, schema["record"], nsid, path)
        elif kind == "blob":
            self._blob(value, schema, path)
        elif kind == "ref":
            ref_nsid, target = self.definition(schema["ref"], nsid)
            self._check(value, target, ref_nsid, path)
        elif kind == "union":
            if not isinstance(value, dict) or not isinstance(value.get("$type"), str):
                raise Invalid(f"{path}: a union member needs a $type, got {value!r}")
            refs = {self._full(r, nsid): r for r in schema["refs"]}
            if value["$type"] not in refs:
                raise Invalid(f"{path}: $type {value['$type']!r} is not one of {sorted(refs)}")
            ref_nsid, target = self.definition(value["$type"])
            self._check(value, target, ref_nsid, f"{path}<{value['$type']}>")
        elif kind == "object":
            self._object(value, schema, nsid, path)
        elif kind == "array":
            if not isinstance(value, list):
                raise Invalid(f"{path}: not an array: {value!r}")
            if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 1 << 62):
                raise Invalid(f"{path}: {len(value)} items is outside the lexicon's bounds")
            for i, item in enumerate(value):
                self._check(item, schema["items"], nsid, f"{path}[{i}]")
        elif kind == "string":
            self._string(value, schema, path)
        elif kind == "integer":
            if type(value) is not int:
                raise Invalid(f"{path}: not an integer: {value!r}")
            if not schema.get("minimum", -(1 << 63)) <= value <= schema.get("maximum", (1 << 63) - 1):
                raise Invalid(f"{path}: {value} is outside the lexicon's bounds")
        elif kind == "boolean":
            if type(value) is not bool:
                raise Invalid(f"{path}: not a boolean: {value!r}")
        else:
            raise Invalid(f"{path}: lexicon type {kind!r} is not supported by this validator")

    @staticmethod
    def _full(ref: str, nsid: str) -> str:
        return f"{nsid}{ref}" if ref.startswith("#") else ref

    def _object(self, value: Any, schema: dict[str, Any], nsid: str, path: str) -> None:
        if not isinstance(value, dict):
            raise Invalid(f"{path}: not an object: {value!r}")
        for name in schema.get("required", []):
            if name not in value:
                raise Invalid(f"{path}: missing required {name!r}")
        for name, item in value.items():
            if item is None and name not in schema.get("nullable", []):
                raise Invalid(f"{path}.{name}: null is not allowed")
            if name in schema.get("properties", {}):
                self._check(item, schema["properties"][name], nsid, f"{path}.{name}")

    @staticmethod
    def _blob(value: Any, schema: dict[str, Any], path: str) -> None:
        """A blob reference as JSON carries it: ``{$type: blob, ref: {$link: CID}, mimeType, size}``."""
        if not isinstance(value, dict) or value.get("$type") != "blob":
            raise Invalid(f"{path}: not a blob reference: {value!r}")
        ref = value.get("ref")
        if not isinstance(ref, dict) or not isinstance(ref.get("$link"), str) or not ref["$link"]:
            raise Invalid(f"{path}.ref: a blob's ref is a {{$link: CID}}, got {ref!r}")
        if type(value.get("size")) is not int or value["size"] < 0:
            raise Invalid(f"{path}.size: not a size: {value.get('size')!r}")
        mime = value.get("mimeType")
        accept = schema.get("accept")
        if not isinstance(mime, str) or (accept is not None and mime not in accept):
            raise Invalid(f"{path}.mimeType: {mime!r} is not accepted ({accept})")
        if type(value.get("size")) is int and value["size"] > schema.get("maxSize", 1 << 62):
            raise Invalid(f"{path}.size: {value['size']} is over the lexicon's maxSize")

    @staticmethod
    def _string(value: Any, schema: dict[str, Any], path: str) -> None:
        if not isinstance(value, str):
            raise Invalid(f"{path}: not a string: {value!r}")
        size = len(value.encode())
        if not schema.get("minLength", 0) <= size <= schema.get("maxLength", 1 << 62):
            raise Invalid(f"{path}: {size} bytes is outside the lexicon's bounds")
        if not schema.get("minGraphemes", 0) <= len(value) <= schema.get("maxGraphemes", 1 << 62):
            raise Invalid(f"{path}: {len(value)} graphemes is outside the lexicon's bounds")
        if "enum" in schema and value not in schema["enum"]:
            raise Invalid(f"{path}: {value!r} is not one of {schema['enum']}")
        fmt = schema.get("format")
        ok = {
            None: True,
            "did": _DID.fullmatch(value) is not None and len(value) <= 2048,
            "tid": _TID.fullmatch(value) is not None,
            "datetime": _DATETIME.fullmatch(value) is not None and parse_rfc3339(value) is not None,
            "at-uri": parse_at_uri(value) is not None,
            "uri": re.fullmatch(r"[a-z][a-z0-9+.-]*:\S+", value) is not None,
        }.get(fmt)
        if ok is None:
            raise Invalid(f"{path}: string format {fmt!r} is not supported by this validator")
        if not ok:
            raise Invalid(f"{path}: {value!r} is not a valid {fmt}")
