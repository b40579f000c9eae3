"""The provider's settings, read from ``TACK_SOURCEHUT_*`` environment variables (docs/sourcehut-api.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tack_common import env
from tack_common.env import ConfigError


DEFAULT_INSTANCE = "https://builds.sr.ht"


@dataclass(frozen=True)
class Settings:
    """Where builds.sr.ht is and how to pace the provider's use of it; the token never appears in ``repr``."""

    token: str = field(repr=False)
    instance: str = DEFAULT_INSTANCE
    request_timeout: float = 20.0
    submit_timeout: float = 30.0
    poll_interval: float = 10.0
    """Seconds between status reads of one unfinished job (doubling while it does not change)."""
    log_poll_interval: float = 3.0
    """Seconds between reads of a running job's logs while someone watches them."""
    api_budget: float = 60.0
    """GraphQL requests per minute the provider's background work (polls, log reads) may use."""
    untrusted: bool = False
    """Whether untrusted runs (a fork's pull request run through Run CI) may be submitted at all."""

    @classmethod
    def from_env(cls, e: Mapping[str, str]) -> Settings:
        """Validate the environment; ConfigError names the variable at fault."""
        instance = env.text(e, "TACK_SOURCEHUT_INSTANCE", DEFAULT_INSTANCE).rstrip("/")
        if not instance.startswith(("https://", "http://")):
            raise ConfigError(f"TACK_SOURCEHUT_INSTANCE must be an http(s) URL, got {instance!r}")
        token = env.text(e, "TACK_SOURCEHUT_TOKEN")
        if any(c.isspace() for c in token):
            raise ConfigError("TACK_SOURCEHUT_TOKEN must be one token (it contains white space)")
        return cls(
            token=token,
            instance=instance,
            request_timeout=env.number(e, "TACK_SOURCEHUT_REQUEST_TIMEOUT", 20.0, 0.5, 600.0),
            submit_timeout=env.number(e, "TACK_SOURCEHUT_SUBMIT_TIMEOUT", 30.0, 0.5, 600.0),
            poll_interval=env.number(e, "TACK_SOURCEHUT_POLL_INTERVAL", 10.0, 0.05, 3600.0),
            log_poll_interval=env.number(e, "TACK_SOURCEHUT_LOG_POLL_INTERVAL", 3.0, 0.05, 600.0),
            api_budget=env.number(e, "TACK_SOURCEHUT_API_BUDGET", 60.0, 1.0, 100_000.0),
            untrusted=env.flag(e, "TACK_SOURCEHUT_UNTRUSTED"),
        )
