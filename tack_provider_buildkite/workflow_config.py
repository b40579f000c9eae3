"""Validating a workflow's ``tack: {buildkite: {...}}`` mapping, free of I/O.

Errors name the offending key the way a user wrote it, e.g.
``tack.buildkite.env.FOO: must be a string``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tack_provider_buildkite.config import SLUG
from tack_provider_kit.provider import InvalidArgument


WHERE = "tack.buildkite"
KEYS = (
    "pipeline",
    "org",
    "env",
    "message",
    "branch",
    "commit",
    "meta_data",
    "clean_checkout",
    "author",
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_ENV_PREFIX = "TANGLED_"
RESERVED_META_PREFIX = "tack:"
MAX_META_VALUE_BYTES = 100_000
MAX_TEXT = 4096


@dataclass(frozen=True)
class Author:
    """Who Buildkite shows as the build's author (instead of the API token's user)."""

    name: str
    email: str


@dataclass(frozen=True)
class BuildkiteConfig:
    """A validated ``tack.buildkite`` mapping."""

    pipeline: str
    org: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    message: str | None = None
    branch: str | None = None
    commit: str | None = None
    meta_data: Mapping[str, str] = field(default_factory=dict)
    clean_checkout: bool = False
    author: Author | None = None


def _string(value: object, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: must be a string")
    if not empty and not value.strip():
        raise InvalidArgument(f"{where}: must not be empty")
    if len(value) > MAX_TEXT:
        raise InvalidArgument(f"{where}: must be at most {MAX_TEXT} characters")
    return value


def _slug(value: object, where: str, what: str) -> str:
    text = _string(value, where)
    if SLUG.fullmatch(text) is None:
        raise InvalidArgument(f"{where}: must be a Buildkite {what} slug (letters, digits, '-', '_', '.')")
    return text


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{where}: must be a mapping")
    return value


def _env(value: object) -> dict[str, str]:
    where = f"{WHERE}.env"
    out: dict[str, str] = {}
    for name, item in _mapping(value, where).items():
        if not isinstance(name, str) or ENV_NAME.fullmatch(name) is None:
            raise InvalidArgument(f"{where}.{name}: not a valid environment variable name")
        if name.startswith(RESERVED_ENV_PREFIX):
            raise InvalidArgument(f"{where}.{name}: {RESERVED_ENV_PREFIX}* variables are set by tack")
        if not isinstance(item, str):
            raise InvalidArgument(f"{where}.{name}: must be a string")
        out[name] = item
    return out


def _meta_data(value: object) -> dict[str, str]:
    where = f"{WHERE}.meta_data"
    out: dict[str, str] = {}
    for name, item in _mapping(value, where).items():
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgument(f"{where}: keys must be non-empty strings")
        if name.startswith(RESERVED_META_PREFIX):
            raise InvalidArgument(f"{where}.{name}: {RESERVED_META_PREFIX}* keys are set by tack")
        if not isinstance(item, str):
            raise InvalidArgument(f"{where}.{name}: must be a string")
        if len(item.encode()) > MAX_META_VALUE_BYTES:
            raise InvalidArgument(f"{where}.{name}: must be at most {MAX_META_VALUE_BYTES} bytes")
        out[name] = item
    return out


def _author(value: object) -> Author:
    where = f"{WHERE}.author"
    raw = _mapping(value, where)
    for key in raw:
        if key not in ("name", "email"):
            raise InvalidArgument(f"{where}.{key}: unknown key (known: name, email)")
    if "name" not in raw or "email" not in raw:
        raise InvalidArgument(f"{where}: needs both name and email")
    return Author(_string(raw["name"], f"{where}.name"), _string(raw["email"], f"{where}.email"))


def parse(config: object) -> BuildkiteConfig:
    """Validate a ``tack.buildkite`` mapping (already decoded from JSON)."""
    raw = _mapping({} if config is None else config, WHERE)
    for key in raw:
        if key not in KEYS:
            raise InvalidArgument(f"{WHERE}.{key}: unknown key (known: {', '.join(KEYS)})")
    if "pipeline" not in raw:
        raise InvalidArgument(f"{WHERE}.pipeline: required (the Buildkite pipeline slug)")
    clean = raw.get("clean_checkout", False)
    if not isinstance(clean, bool):
        raise InvalidArgument(f"{WHERE}.clean_checkout: must be true or false")

    return BuildkiteConfig(
        pipeline=_slug(raw["pipeline"], f"{WHERE}.pipeline", "pipeline"),
        org=_slug(raw["org"], f"{WHERE}.org", "organization") if "org" in raw else None,
        env=_env(raw.get("env", {})),
        message=_string(raw["message"], f"{WHERE}.message") if "message" in raw else None,
        branch=_string(raw["branch"], f"{WHERE}.branch") if "branch" in raw else None,
        commit=_string(raw["commit"], f"{WHERE}.commit") if "commit" in raw else None,
        meta_data=_meta_data(raw.get("meta_data", {})),
        clean_checkout=clean,
        author=_author(raw["author"]) if "author" in raw else None,
    )


def parse_json(config_json: str) -> BuildkiteConfig:
    """Validate the Workflow's ``config_json`` (the JSON of the ``tack.buildkite`` mapping)."""
    try:
        decoded = json.loads(config_json or "{}")
    except ValueError as exc:
        raise InvalidArgument(f"config_json: not JSON ({exc})") from None
    return parse(decoded)
