"""Validating a workflow's ``tack: {sourcehut: {...}}`` mapping, free of I/O (docs/sourcehut-api.md §5).

Keys: ``manifest`` (required: YAML text or a mapping), ``tags`` (extra job tags after tack's own; ``tack``
and ``tack-*`` are tack's), ``note`` (replaces tack's description; the line naming the run stays), ``visibility`` (``PUBLIC``, ``UNLISTED`` or ``PRIVATE``) and
``secrets`` (``false``: builds.sr.ht gives the job none of the secrets its manifest lists; unset:
builds.sr.ht's default, which gives them when the token may read secrets).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from tack_provider_kit.provider import InvalidArgument
from tack_provider_sourcehut.manifest import Manifest, load


WHERE = "tack.sourcehut"
KEYS = ("manifest", "tags", "note", "visibility", "secrets")
VISIBILITIES = ("PUBLIC", "UNLISTED", "PRIVATE")
TAG = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_TAGS = 8
RESERVED_TAG = "tack"
MAX_NOTE = 4096


@dataclass(frozen=True)
class SourcehutConfig:
    """A validated ``tack.sourcehut`` mapping."""

    manifest: Manifest
    tags: tuple[str, ...] = ()
    note: str | None = None
    visibility: str | None = None
    secrets: bool | None = None


def parse(config: object) -> SourcehutConfig:
    """Validate a ``tack.sourcehut`` mapping (already decoded from JSON)."""
    if config is None:
        config = {}
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        raise InvalidArgument(f"{WHERE}: must be a mapping")
    for key in config:
        if key not in KEYS:
            raise InvalidArgument(f"{WHERE}.{key}: unknown key (known: {', '.join(KEYS)})")
    tags = config.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidArgument(f"{WHERE}.tags: must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(f"{WHERE}.tags: at most {MAX_TAGS} tags")
    for tag in tags:
        if TAG.fullmatch(tag) is None:
            raise InvalidArgument(f"{WHERE}.tags: {tag!r} must be 1-128 letters, digits, '_', '.' or '-'")
        if tag == RESERVED_TAG or tag.startswith(f"{RESERVED_TAG}-"):
            raise InvalidArgument(
                f"{WHERE}.tags: {tag!r}: '{RESERVED_TAG}' and '{RESERVED_TAG}-*' tags are set by tack"
            )
    note = config.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise InvalidArgument(f"{WHERE}.note: must be a string of at most {MAX_NOTE} characters")
    visibility = config.get("visibility")
    if visibility is not None and visibility not in VISIBILITIES:
        raise InvalidArgument(f"{WHERE}.visibility: must be one of {', '.join(VISIBILITIES)}")
    secrets = config.get("secrets")
    if secrets is not None and not isinstance(secrets, bool):
        raise InvalidArgument(f"{WHERE}.secrets: must be true or false")
    return SourcehutConfig(
        manifest=load(config.get("manifest")),
        tags=tuple(tags),
        note=note,
        visibility=visibility,
        secrets=secrets,
    )


def parse_json(config_json: str) -> SourcehutConfig:
    """Validate the Workflow's ``config_json`` (the JSON of the ``tack.sourcehut`` mapping)."""
    try:
        decoded = json.loads(config_json or "{}")
    except ValueError as exc:
        raise InvalidArgument(f"config_json: not JSON ({exc})") from None
    return parse(decoded)
