"""The Buildkite provider's settings and a workflow's tack.buildkite block (config, workflow_config)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tack_common.env import ConfigError
from tack_provider_buildkite import workflow_config
from tack_provider_buildkite.config import Settings
from tack_provider_kit.provider import InvalidArgument


SHA = "5cf26b27727eb6a0ebdc139cf6d39907372cf565"
BASE_ENV = {
    "TACK_BUILDKITE_TOKEN": "bk-secret",
    "TACK_BUILDKITE_ORG": "acme",
    "TACK_BUILDKITE_WEBHOOK_SECRET": "s",
}


# Settings


def test_settings_defaults_and_token_hidden() -> None:
    """Settings take documented defaults and never show the token or secret in repr."""
    settings = Settings.from_env(BASE_ENV)
    assert (settings.webhook_mode, settings.api_url) == ("token", "https://api.buildkite.com")
    assert (settings.poll_interval, settings.log_poll_interval, settings.api_budget) == (15.0, 3.0, 40.0)
    assert "bk-secret" not in repr(settings) and "'s'" not in repr(settings)


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"TACK_BUILDKITE_TOKEN": ""}, "TACK_BUILDKITE_TOKEN"),
        ({"TACK_BUILDKITE_ORG": "no/slashes"}, "TACK_BUILDKITE_ORG"),
        ({"TACK_BUILDKITE_WEBHOOK_SECRET": " "}, "TACK_BUILDKITE_WEBHOOK_SECRET"),
        ({"TACK_BUILDKITE_WEBHOOK_MODE": "hmac"}, "TACK_BUILDKITE_WEBHOOK_MODE"),
        ({"TACK_BUILDKITE_API_URL": "ftp://x"}, "TACK_BUILDKITE_API_URL"),
        ({"TACK_BUILDKITE_POLL_INTERVAL": "soon"}, "TACK_BUILDKITE_POLL_INTERVAL"),
        ({"TACK_BUILDKITE_UNTRUSTED_PIPELINES": "ok, bad slug"}, "TACK_BUILDKITE_UNTRUSTED_PIPELINES"),
    ],
)
def test_settings_errors_name_the_variable(change: dict[str, str], variable: str) -> None:
    """A bad or missing setting is refused with a message starting with the variable's name."""
    with pytest.raises(ConfigError, match=f"^{variable}"):
        Settings.from_env({**BASE_ENV, **change})


# Workflow config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "tack.buildkite.pipeline: required"),
        ({"pipeline": "ci", "env": {"FOO": 1}}, "tack.buildkite.env.FOO: must be a string"),
        (
            {"pipeline": "ci", "env": {"1X": "a"}},
            "tack.buildkite.env.1X: not a valid environment variable name",
        ),
        (
            {"pipeline": "ci", "env": {"TANGLED_REPO_NAME": "x"}},
            "tack.buildkite.env.TANGLED_REPO_NAME: TANGLED_",
        ),
        ({"pipeline": "ci", "env": ["A=1"]}, "tack.buildkite.env: must be a mapping"),
        ({"pipeline": "ci", "colour": "red"}, "tack.buildkite.colour: unknown key"),
        ({"pipeline": 3}, "tack.buildkite.pipeline: must be a string"),
        ({"pipeline": "../admin"}, "tack.buildkite.pipeline: must be a Buildkite pipeline slug"),
        ({"pipeline": "ci", "org": "a b"}, "tack.buildkite.org: must be a Buildkite organization slug"),
        ({"pipeline": "ci", "clean_checkout": "yes"}, "tack.buildkite.clean_checkout: must be true or false"),
        ({"pipeline": "ci", "meta_data": {"tack:knot": "x"}}, "tack.buildkite.meta_data.tack:knot: tack:"),
        ({"pipeline": "ci", "meta_data": {"k": True}}, "tack.buildkite.meta_data.k: must be a string"),
        ({"pipeline": "ci", "message": ""}, "tack.buildkite.message: must not be empty"),
        ({"pipeline": "ci", "author": {"name": "A"}}, "tack.buildkite.author: needs both name and email"),
        (
            {"pipeline": "ci", "author": {"name": "A", "email": "e", "x": 1}},
            "tack.buildkite.author.x: unknown",
        ),
    ],
)
def test_config_errors_name_the_key(config: dict[str, Any], message: str) -> None:
    """Invalid tack.buildkite mappings are refused with a message naming the key at fault."""
    with pytest.raises(InvalidArgument) as info:
        workflow_config.parse(config)
    assert str(info.value).startswith(message), str(info.value)


def test_config_parses_every_key() -> None:
    """A full tack.buildkite mapping is read as written."""
    config = workflow_config.parse_json(
        json.dumps(
            {
                "pipeline": "app-ci",
                "org": "other-org",
                "env": {"FOO": "bar"},
                "message": "hi {repo}",
                "branch": "release",
                "commit": "HEAD",
                "meta_data": {"team": "core"},
                "clean_checkout": True,
                "author": {"name": "Ada", "email": "ada@example.org"},
            }
        )
    )
    assert (config.pipeline, config.org, dict(config.env), config.clean_checkout) == (
        "app-ci",
        "other-org",
        {"FOO": "bar"},
        True,
    )
    assert config.author is not None and config.author.email == "ada@example.org"


def test_config_json_must_be_json() -> None:
    """config_json that is not JSON is refused naming config_json."""
    with pytest.raises(InvalidArgument, match=r"^config_json: not JSON"):
        workflow_config.parse_json("{nope")


def test_untrusted_pipelines_are_org_qualified() -> None:
    """A bare slug is in the default org; org/pipeline names another; empty entries are ignored."""
    settings = Settings.from_env({**BASE_ENV, "TACK_BUILDKITE_UNTRUSTED_PIPELINES": "forks, other/ci ,"})
    assert settings.untrusted_pipelines == frozenset({"acme/forks", "other/ci"})
    assert Settings.from_env(BASE_ENV).untrusted_pipelines == frozenset()
