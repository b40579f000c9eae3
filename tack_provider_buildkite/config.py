"""The provider's settings, read from ``TACK_BUILDKITE_*`` environment variables."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tack_common import env
from tack_common.env import ConfigError


SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
WEBHOOK_MODES = ("token", "signature")


@dataclass(frozen=True)
class Settings:
    """Everything the provider needs to talk to Buildkite; the token never appears in ``repr``."""

    token: str = field(repr=False)
    org: str
    webhook_secret: str = field(repr=False)
    webhook_mode: str = "token"
    api_url: str = "https://api.buildkite.com"
    poll_interval: float = 15.0
    log_poll_interval: float = 3.0
    api_budget: float = 40.0
    create_timeout: float = 30.0
    webhook_max_bytes: int = 1 << 20
    untrusted_pipelines: frozenset[str] = frozenset()
    """``org/pipeline`` slugs that may build untrusted code (a fork's pull request run through Run CI)."""

    @classmethod
    def from_env(cls, e: Mapping[str, str]) -> Settings:
        """Validate the environment; ConfigError names the variable at fault."""
        org = env.text(e, "TACK_BUILDKITE_ORG")
        if SLUG.fullmatch(org) is None:
            raise ConfigError(f"TACK_BUILDKITE_ORG must be a Buildkite organization slug, got {org!r}")
        api_url = env.text(e, "TACK_BUILDKITE_API_URL", "https://api.buildkite.com").rstrip("/")
        if not api_url.startswith(("https://", "http://")):
            raise ConfigError(f"TACK_BUILDKITE_API_URL must be an http(s) URL, got {api_url!r}")
        return cls(
            token=env.text(e, "TACK_BUILDKITE_TOKEN"),
            org=org,
            webhook_secret=env.text(e, "TACK_BUILDKITE_WEBHOOK_SECRET"),
            webhook_mode=env.choice(e, "TACK_BUILDKITE_WEBHOOK_MODE", "token", WEBHOOK_MODES),
            api_url=api_url,
            poll_interval=env.number(e, "TACK_BUILDKITE_POLL_INTERVAL", 15.0, 0.05, 3600.0),
            log_poll_interval=env.number(e, "TACK_BUILDKITE_LOG_POLL_INTERVAL", 3.0, 0.05, 600.0),
            api_budget=env.number(e, "TACK_BUILDKITE_API_BUDGET", 40.0, 1.0, 100_000.0),
            create_timeout=env.number(e, "TACK_BUILDKITE_CREATE_TIMEOUT", 30.0, 0.5, 600.0),
            webhook_max_bytes=env.integer(e, "TACK_BUILDKITE_WEBHOOK_MAX_BYTES", 1 << 20, 1024, 64 << 20),
            untrusted_pipelines=_pipelines(e, org),
        )


def _pipelines(e: Mapping[str, str], org: str) -> frozenset[str]:
    """TACK_BUILDKITE_UNTRUSTED_PIPELINES: ``pipeline`` (in the default org) or ``org/pipeline``, comma-separated."""
    slugs = set()
    for item in e.get("TACK_BUILDKITE_UNTRUSTED_PIPELINES", "").split(","):
        item = item.strip()
        if not item:
            continue
        owner, _, pipeline = item.rpartition("/")
        owner = owner or org
        if SLUG.fullmatch(owner) is None or SLUG.fullmatch(pipeline) is None:
            raise ConfigError(
                f"TACK_BUILDKITE_UNTRUSTED_PIPELINES entries must be pipeline or org/pipeline slugs, got {item!r}"
            )
        slugs.add(f"{owner}/{pipeline}")
    return frozenset(slugs)
