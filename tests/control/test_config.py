"""The control plane's configuration from the environment (tack_control.config)."""

from __future__ import annotations

import pytest

from tack_common.env import ConfigError
from tack_control.config import Settings, parse_providers
from tests.support.samples import (
    HOST,
    OWNER,
)


# config


BASE_ENV = {"TACK_HOSTNAME": HOST, "TACK_OWNER_DID": OWNER}


def test_config_defaults() -> None:
    """Only hostname and owner are required; listen defaults to :8080 and the database to tack.db."""
    settings = Settings.from_env(BASE_ENV)
    assert (settings.hostname, settings.owner_did) == (HOST, OWNER)
    assert settings.listen == ("0.0.0.0", 8080)
    assert settings.db_path == "tack.db"
    assert (settings.providers, settings.default_provider, settings.dev) == ({}, None, False)
    assert settings.jetstream_url == "wss://jetstream1.us-west.bsky.network/subscribe"


def test_config_reads_providers_default_and_dev_hostname() -> None:
    """Providers, a default provider, a dev hostname with port and a listen address are read."""
    settings = Settings.from_env(
        BASE_ENV
        | {
            "TACK_HOSTNAME": "localhost:6555",
            "TACK_PROVIDERS": " buildkite=buildkite:7101, stub=[::1]:7102,",
            "TACK_DEFAULT_PROVIDER": "stub",
            "TACK_LISTEN_ADDR": "127.0.0.1:9000",
            "TACK_DB_PATH": "/data/t.db",
            "TACK_DEV": "1",
        }
    )
    assert settings.hostname == "localhost:6555"
    assert settings.providers == {"buildkite": "buildkite:7101", "stub": "[::1]:7102"}
    assert (settings.default_provider, settings.listen, settings.db_path, settings.dev) == (
        "stub",
        ("127.0.0.1", 9000),
        "/data/t.db",
        True,
    )


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"TACK_HOSTNAME": None}, "TACK_HOSTNAME"),
        ({"TACK_HOSTNAME": "  "}, "TACK_HOSTNAME"),
        ({"TACK_HOSTNAME": "https://spindle.example.com"}, "TACK_HOSTNAME"),
        ({"TACK_HOSTNAME": "spindle.example.com/x"}, "TACK_HOSTNAME"),
        ({"TACK_HOSTNAME": "spindle example"}, "TACK_HOSTNAME"),
        ({"TACK_HOSTNAME": "host:port"}, "TACK_HOSTNAME"),
        ({"TACK_OWNER_DID": None}, "TACK_OWNER_DID"),
        ({"TACK_OWNER_DID": "alice.bsky.social"}, "TACK_OWNER_DID"),
        ({"TACK_OWNER_DID": "did:plc:"}, "TACK_OWNER_DID"),
        ({"TACK_JETSTREAM_URL": "https://jetstream"}, "TACK_JETSTREAM_URL"),
        ({"TACK_PROVIDERS": "stub"}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "stub="}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "stub=stub"}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "stub=:7102"}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "stub=stub:port"}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "Stub=stub:1"}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "=stub:1"}, "TACK_PROVIDERS"),
        ({"TACK_PROVIDERS": "stub=a:1,stub=b:2"}, "TACK_PROVIDERS"),
        ({"TACK_DEFAULT_PROVIDER": "stub"}, "TACK_DEFAULT_PROVIDER"),
        ({"TACK_PROVIDERS": "bk=bk:1", "TACK_DEFAULT_PROVIDER": "stub"}, "TACK_DEFAULT_PROVIDER"),
        ({"TACK_LISTEN_ADDR": "8080"}, "TACK_LISTEN_ADDR"),
        ({"TACK_SPAWN_TIMEOUT": "soon"}, "TACK_SPAWN_TIMEOUT"),
        ({"TACK_PING_INTERVAL": "60"}, "TACK_PING_INTERVAL"),
        ({"TACK_LOG_LEVEL": "loud"}, "TACK_LOG_LEVEL"),
    ],
)
def test_config_errors_name_the_variable(change: dict[str, str | None], variable: str) -> None:
    """A missing or malformed variable stops startup with a message naming it."""
    environ = dict(BASE_ENV)
    for key, value in change.items():
        if value is None:
            environ.pop(key)
        else:
            environ[key] = value
    with pytest.raises(ConfigError) as info:
        Settings.from_env(environ)
    assert variable in str(info.value)


def test_parse_providers_empty_is_no_providers() -> None:
    """An empty or comma-only TACK_PROVIDERS configures no provider."""
    assert parse_providers("") == parse_providers(" , ,") == {}


def test_plc_url_and_did_cache_ttl() -> None:
    """TACK_PLC_URL defaults to plc.directory and must be https (http only with TACK_DEV); the DID cache TTL is read."""
    assert Settings.from_env(BASE_ENV).plc_url == "https://plc.directory"
    assert Settings.from_env(BASE_ENV).did_cache_ttl_s == 3600
    dev = Settings.from_env(
        BASE_ENV | {"TACK_PLC_URL": "http://127.0.0.1:2582/", "TACK_DEV": "1", "TACK_DID_CACHE_TTL": "60"}
    )
    assert (dev.plc_url, dev.did_cache_ttl_s) == ("http://127.0.0.1:2582", 60)
    for env in (
        {"TACK_PLC_URL": "http://127.0.0.1:2582"},
        {"TACK_PLC_URL": "plc.directory"},
        {"TACK_DID_CACHE_TTL": "0"},
    ):
        with pytest.raises(ConfigError, match=next(iter(env))):
            Settings.from_env(BASE_ENV | env)
