"""Configuration from environment variables, errors naming the variable (tack_common.env)."""

from __future__ import annotations

import pytest

from tack_common import env


# env


def test_env_text_names_the_missing_variable() -> None:
    """A required variable that is unset or blank raises ConfigError starting with its name."""
    with pytest.raises(env.ConfigError, match=r"^TACK_X is required"):
        env.text({}, "TACK_X")
    with pytest.raises(env.ConfigError, match=r"^TACK_X "):
        env.text({"TACK_X": "  "}, "TACK_X")
    assert env.text({"TACK_X": " v "}, "TACK_X") == "v"
    assert env.text({}, "TACK_X", "d") == "d"


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (":8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:7102", ("127.0.0.1", 7102)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_env_address_parses_host_and_port(value: str, parsed: tuple[str, int]) -> None:
    """host:port addresses parse; a bare :port listens on every interface."""
    assert env.address({"TACK_ADDR": value}, "TACK_ADDR", "127.0.0.1:1") == parsed


@pytest.mark.parametrize("value", ["8080", "host:", "host:http", "host:70000", ":-1"])
def test_env_address_rejects_malformed_values(value: str) -> None:
    """A malformed address raises ConfigError naming the variable."""
    with pytest.raises(env.ConfigError, match=r"^TACK_ADDR must look like host:port"):
        env.address({"TACK_ADDR": value}, "TACK_ADDR", ":1")


def test_env_numbers_check_type_and_range() -> None:
    """number and integer use defaults when unset and name the variable when malformed or out of range."""
    assert env.number({}, "N", 2.5) == 2.5
    assert env.number({"N": "0.25"}, "N", 1.0, 0.0, 1.0) == 0.25
    with pytest.raises(env.ConfigError, match=r"^N must be a number"):
        env.number({"N": "lots"}, "N", 1.0)
    with pytest.raises(env.ConfigError, match=r"^N must be between"):
        env.number({"N": "5"}, "N", 1.0, 0.0, 1.0)
    assert env.integer({"I": "7"}, "I", 1) == 7
    with pytest.raises(env.ConfigError, match=r"^I must be a whole number"):
        env.integer({"I": "1.5"}, "I", 1)
    with pytest.raises(env.ConfigError, match=r"^I must be between"):
        env.integer({"I": "-1"}, "I", 1)


def test_env_flag_and_choice() -> None:
    """flag is false only for empty, 0, false and no; choice names the variable and the allowed values."""
    for off in ("", "0", "false", "No", " FALSE "):
        assert not env.flag({"F": off}, "F")
    for on in ("1", "yes", "true", "on"):
        assert env.flag({"F": on}, "F")
    assert not env.flag({}, "F")
    assert env.choice({"C": "b"}, "C", "a", ("a", "b")) == "b"
    with pytest.raises(env.ConfigError, match=r"^C must be one of a, b, got 'z'"):
        env.choice({"C": "z"}, "C", "a", ("a", "b"))
