"""The control plane's configuration, read from ``TACK_*`` environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tack_common import env
from tack_common.env import ConfigError
from tack_control.identity.resolver import DEFAULT_PLC_URL
from tack_control.ingest.wire import is_did, is_host


DEFAULT_JETSTREAM = "wss://jetstream1.us-west.bsky.network/subscribe"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def parse_providers(value: str) -> dict[str, str]:
    """``name=host:port,…`` as a mapping; ConfigError naming TACK_PROVIDERS when malformed."""
    providers: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, address = item.partition("=")
        name, address = name.strip(), address.strip()
        host, colon, port = address.rpartition(":")
        if not sep or not _NAME.fullmatch(name) or not colon or not host or not port.isdigit():
            raise ConfigError(f"TACK_PROVIDERS entries must look like name=host:port, got {item!r}")
        if name in providers:
            raise ConfigError(f"TACK_PROVIDERS names provider {name!r} twice")
        providers[name] = address
    return providers


@dataclass(frozen=True)
class Settings:
    """Everything ``python -m tack_control`` is configured with."""

    hostname: str
    owner_did: str
    listen: tuple[str, int]
    db_path: str
    jetstream_url: str
    dev: bool
    providers: dict[str, str]
    default_provider: str | None
    spawn_timeout_s: float = 10.0
    dispatch_give_up_s: float = 600.0
    reconcile_after_s: float = 1800.0
    logs_connect_timeout_s: float = 10.0
    ping_interval_s: float = 20.0
    send_timeout_s: float = 60.0
    events_rewind_s: float = 2.0
    knot_rewind_s: float = 30.0
    jetstream_rewind_s: float = 5.0
    webhook_max_bytes: int = 1 << 20
    webhook_body_timeout_s: float = 10.0
    webhook_queue_bytes: int = 64 << 20
    retention_days: float = 21.0
    task_give_up_s: float = 300.0
    fault_injection: bool = False
    log_level: str = "info"
    provider_tls_ca: bytes | None = field(default=None, repr=False)
    plc_url: str = DEFAULT_PLC_URL
    did_cache_ttl_s: float = 3600.0
    reconcile_records_interval_s: float = 300.0
    reconcile_records_timeout_s: float = 60.0
    reconcile_refs_interval_s: float = 300.0
    git_cache_dir: str = ""
    """Where workflow files are fetched into ("" = ``git-cache`` beside the database)."""

    @property
    def git_cache(self) -> str:
        """The git cache directory to use."""
        return self.git_cache_dir or os.path.join(os.path.dirname(os.path.abspath(self.db_path)), "git-cache")

    @classmethod
    def from_env(cls, e: Mapping[str, str]) -> Settings:
        """Read and validate the environment; ConfigError names the variable at fault."""
        hostname = env.text(e, "TACK_HOSTNAME")
        if "://" in hostname or "/" in hostname or not is_host(hostname):
            raise ConfigError(
                f"TACK_HOSTNAME must be a bare hostname as typed in Tangled (e.g. spindle.example.com), got {hostname!r}"
            )
        owner = env.text(e, "TACK_OWNER_DID")
        if not is_did(owner):
            raise ConfigError(f"TACK_OWNER_DID must be a DID such as did:plc:abc123, got {owner!r}")
        jetstream = env.text(e, "TACK_JETSTREAM_URL", DEFAULT_JETSTREAM)
        if not jetstream.startswith(("ws://", "wss://")):
            raise ConfigError(f"TACK_JETSTREAM_URL must be a ws:// or wss:// URL, got {jetstream!r}")
        providers = parse_providers(e.get("TACK_PROVIDERS", ""))
        default = e.get("TACK_DEFAULT_PROVIDER", "").strip() or None
        if default is not None and default not in providers:
            raise ConfigError(
                f"TACK_DEFAULT_PROVIDER names {default!r}, which is not in TACK_PROVIDERS ({', '.join(providers) or 'empty'})"
            )
        plc_url = env.text(e, "TACK_PLC_URL", DEFAULT_PLC_URL).rstrip("/")
        dev = env.flag(e, "TACK_DEV")
        if not plc_url.startswith(("https://", "http://") if dev else ("https://",)):
            raise ConfigError(
                f"TACK_PLC_URL must be an https:// URL (http:// only with TACK_DEV), got {plc_url!r}"
            )
        return cls(
            hostname=hostname,
            owner_did=owner,
            listen=env.address(e, "TACK_LISTEN_ADDR", ":8080"),
            db_path=env.text(e, "TACK_DB_PATH", "tack.db"),
            jetstream_url=jetstream,
            dev=dev,
            providers=providers,
            default_provider=default,
            spawn_timeout_s=env.number(e, "TACK_SPAWN_TIMEOUT", 10.0, 0.1, 600),
            dispatch_give_up_s=env.number(e, "TACK_DISPATCH_GIVE_UP", 600.0, 1, 7 * 86400),
            reconcile_after_s=env.number(e, "TACK_RECONCILE_AFTER", 1800.0, 1, 30 * 86400),
            logs_connect_timeout_s=env.number(e, "TACK_LOGS_CONNECT_TIMEOUT", 10.0, 0.1, 120),
            ping_interval_s=env.number(e, "TACK_PING_INTERVAL", 20.0, 0.05, 30),
            send_timeout_s=env.number(e, "TACK_SEND_TIMEOUT", 60.0, 0.1, 3600),
            events_rewind_s=env.number(e, "TACK_EVENTS_REWIND", 2.0, 0, 3600),
            knot_rewind_s=env.number(e, "TACK_KNOT_REWIND", 30.0, 0, 86400),
            jetstream_rewind_s=env.number(e, "TACK_JETSTREAM_REWIND", 5.0, 0, 86400),
            webhook_max_bytes=env.integer(e, "TACK_WEBHOOK_MAX_BYTES", 1 << 20, 1024, 64 << 20),
            webhook_body_timeout_s=env.number(e, "TACK_WEBHOOK_BODY_TIMEOUT", 10.0, 0.1, 600),
            webhook_queue_bytes=env.integer(e, "TACK_WEBHOOK_QUEUE_BYTES", 64 << 20, 1 << 20, 1 << 40),
            retention_days=env.number(e, "TACK_RETENTION_DAYS", 21.0, 0.001, 3650),
            task_give_up_s=env.number(e, "TACK_TASK_GIVE_UP", 300.0, 1, 86400),
            fault_injection=env.flag(e, "TACK_FAULT_INJECTION"),
            log_level=env.choice(e, "TACK_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            provider_tls_ca=env.file_bytes(e, "TACK_PROVIDER_TLS_CA_FILE"),
            plc_url=plc_url,
            did_cache_ttl_s=env.number(e, "TACK_DID_CACHE_TTL", 3600.0, 1, 86400),
            reconcile_records_interval_s=env.number(e, "TACK_RECONCILE_RECORDS_INTERVAL", 300.0, 1, 86400),
            reconcile_records_timeout_s=env.number(e, "TACK_RECONCILE_RECORDS_TIMEOUT", 60.0, 0.1, 3600),
            reconcile_refs_interval_s=env.number(e, "TACK_RECONCILE_REFS_INTERVAL", 300.0, 1, 86400),
            git_cache_dir=e.get("TACK_GIT_CACHE_DIR", "").strip(),
        )
