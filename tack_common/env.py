"""Reading configuration from environment variables, with errors that name the variable."""

from __future__ import annotations

from collections.abc import Mapping


class ConfigError(Exception):
    """A configuration variable is missing or malformed; the message starts with its name."""


def text(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    """The variable's value; ConfigError when it is unset or empty and there is no default."""
    value = env.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise ConfigError(f"{name} is required but not set")
    return default


def address(env: Mapping[str, str], name: str, default: str) -> tuple[str, int]:
    """A ``host:port`` listen address; ``:port`` means every interface."""
    value = text(env, name, default)
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{name} must look like host:port or :port, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


def number(
    env: Mapping[str, str], name: str, default: float, minimum: float = 0.0, maximum: float = float("inf")
) -> float:
    """A decimal number within [minimum, maximum]."""
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        parsed = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not minimum <= parsed <= maximum:
        raise ConfigError(f"{name} must be between {minimum:g} and {maximum:g}, got {value!r}")
    return parsed


def integer(env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int = 2**62) -> int:
    """A whole number within [minimum, maximum]."""
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if not minimum <= parsed <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value!r}")
    return parsed


def flag(env: Mapping[str, str], name: str) -> bool:
    """True when the variable is set to anything but empty, ``0``, ``false`` or ``no``."""
    return env.get(name, "").strip().lower() not in ("", "0", "false", "no")


def choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed``."""
    value = text(env, name, default)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def file_bytes(env: Mapping[str, str], name: str) -> bytes | None:
    """The contents of the file the variable names (None when unset); ConfigError when unreadable."""
    path = env.get(name, "").strip()
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"{name} names a file that cannot be read: {exc}") from None
