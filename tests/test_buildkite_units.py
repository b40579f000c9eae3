"""Unit tests of the Buildkite provider's I/O-free modules."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from multidict import CIMultiDict

from tack_common import status as st
from tack_common.env import ConfigError
from tack_common.pb import provider_pb2 as pb
from tack_provider_buildkite import build_request, logtext, ratelimit, states, webhook_auth, workflow_config
from tack_provider_buildkite.api import Reply
from tack_provider_buildkite.config import Settings
from tack_provider_buildkite.logs import BuildFeed, JobTail, LogView, Shared, content_range
from tack_provider_kit.provider import InvalidArgument
from tack_provider_kit.store import RunKey


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


# Build request


def _request(trigger: pb.Trigger) -> pb.SpawnRequest:
    return pb.SpawnRequest(
        knot="knot.test", pipeline_rkey="3m7abc", actor_did="did:plc:owner", trigger=trigger
    )


def _repo(default_branch: str = "") -> pb.Repo:
    return pb.Repo(knot="knot.test", did="did:plc:owner", name="hello", default_branch=default_branch)


def _push(ref: str) -> pb.Trigger:
    return pb.Trigger(
        kind=pb.TRIGGER_KIND_PUSH, repo=_repo(), push=pb.PushTrigger(ref=ref, old_sha="0" * 40, new_sha=SHA)
    )


def _pr() -> pb.Trigger:
    return pb.Trigger(
        kind=pb.TRIGGER_KIND_PULL_REQUEST,
        repo=_repo(),
        pull_request=pb.PullRequestTrigger(
            source_branch="feature", target_branch="main", source_sha=SHA, action="create"
        ),
    )


WORKFLOW = pb.Workflow(name="ci.yml", environment={"GREETING": "hi", "TANGLED_KNOT": "forged"})


def _plan(trigger: pb.Trigger, **config: Any) -> build_request.BuildPlan:
    parsed = workflow_config.parse({"pipeline": "ci", **config})
    return build_request.plan(_request(trigger), WORKFLOW, parsed, "acme")


def test_push_to_branch_builds_new_sha_on_branch() -> None:
    """A branch push builds newSha on the branch, with the run key in meta_data and Tangled env."""
    plan = _plan(_push("refs/heads/main"))
    body = plan.body
    assert (plan.org, plan.pipeline) == ("acme", "ci")
    assert (body["commit"], body["branch"], body["ignore_pipeline_branch_filters"]) == (SHA, "main", True)
    assert body["message"] == "tangled: push to main in hello (ci.yml)"
    assert body["meta_data"] == {
        "tack:knot": "knot.test",
        "tack:pipeline_rkey": "3m7abc",
        "tack:workflow": "ci.yml",
    }
    env = body["env"]
    assert env["TANGLED_KNOT"] == "knot.test", "workflow environment cannot forge TANGLED_ variables"
    assert env["GREETING"] == "hi"
    assert (env["TANGLED_TRIGGER_KIND"], env["TANGLED_REF"], env["TANGLED_NEW_SHA"]) == (
        "push",
        "refs/heads/main",
        SHA,
    )
    assert (env["TANGLED_REPO_DID"], env["TANGLED_REPO_NAME"], env["TANGLED_WORKFLOW"]) == (
        "did:plc:owner",
        "hello",
        "ci.yml",
    )
    assert env["TANGLED_PIPELINE_RKEY"] == "3m7abc" and "TANGLED_TAG" not in env
    assert "pull_request_base_branch" not in body and "pull_request_id" not in body


def test_push_of_tag_builds_on_tag_name() -> None:
    """A tag push uses the tag name as branch and says so in TANGLED_TAG and the message."""
    body = _plan(_push("refs/tags/v1.2.0")).body
    assert (body["branch"], body["commit"], body["env"]["TANGLED_TAG"]) == ("v1.2.0", SHA, "v1.2.0")
    assert body["message"] == "tangled: tag v1.2.0 in hello (ci.yml)"


def test_pull_request_builds_source_with_base_branch_and_no_number() -> None:
    """A pull request builds sourceSha on sourceBranch with pull_request_base_branch and no PR id."""
    body = _plan(_pr()).body
    assert (body["commit"], body["branch"], body["pull_request_base_branch"]) == (SHA, "feature", "main")
    assert "pull_request_id" not in body
    assert (
        body["env"]["TANGLED_PR_TARGET_BRANCH"] == "main"
        and body["env"]["TANGLED_TRIGGER_KIND"] == "pull_request"
    )
    assert body["message"] == "tangled: pull request feature → main in hello (ci.yml)"


def test_manual_trigger_needs_a_branch() -> None:
    """A manual run builds HEAD on the default branch; without one it asks for tack.buildkite.branch."""
    manual = pb.Trigger(
        kind=pb.TRIGGER_KIND_MANUAL,
        repo=_repo(),
        manual=pb.ManualTrigger(inputs=[pb.ManualInput(key="dry-run", value="1")]),
    )
    with pytest.raises(InvalidArgument, match=r"^tack\.buildkite\.branch: required"):
        _plan(manual)
    body = _plan(manual, branch="main").body
    assert (body["commit"], body["branch"], body["env"]["TANGLED_INPUT_DRY_RUN"]) == ("HEAD", "main", "1")


def test_overrides_and_message_template() -> None:
    """branch/commit/org/env/meta_data/clean_checkout/author overrides and message placeholders apply."""
    plan = _plan(
        _push("refs/heads/main"),
        org="other",
        branch="release",
        commit="abc",
        env={"FOO": "1"},
        meta_data={"team": "core"},
        clean_checkout=True,
        author={"name": "Ada", "email": "ada@example.org"},
        message="{{ci}} {kind} {branch}@{short_sha} of {repo} by {workflow}",
    )
    body = plan.body
    assert plan.org == "other"
    assert (body["branch"], body["commit"], body["clean_checkout"]) == ("release", "abc", True)
    assert body["message"] == "{ci} push release@abc of hello by ci.yml"
    assert body["env"]["FOO"] == "1" and body["meta_data"]["team"] == "core"
    assert body["author"] == {"name": "Ada", "email": "ada@example.org"}


def test_unknown_message_placeholder_is_refused() -> None:
    """A message template with an unknown placeholder names tack.buildkite.message."""
    with pytest.raises(InvalidArgument, match=r"^tack\.buildkite\.message: unknown placeholder '\{nope\}'"):
        _plan(_push("refs/heads/main"), message="hello {nope}")


def test_meta_data_round_trips_to_run_key() -> None:
    """A build's meta_data gives back the run key; foreign builds give None."""
    key = RunKey("knot.test", "3m7abc", "ci.yml")
    assert build_request.key_from_meta_data(build_request.meta_data_for(key)) == key
    assert build_request.key_from_meta_data({"tack:knot": "k"}) is None
    assert build_request.key_from_meta_data(None) is None


# State mapping


def _job(state: str, **extra: Any) -> dict[str, Any]:
    return {"id": "j", "type": "script", "name": "unit", "state": state, **extra}


@pytest.mark.parametrize(
    ("build", "status", "error", "exit_code"),
    [
        ({"state": "creating"}, st.PENDING, "", None),
        ({"state": "scheduled"}, st.PENDING, "", None),
        ({"state": "running"}, st.RUNNING, "", None),
        ({"state": "failing"}, st.RUNNING, "", None),
        ({"state": "canceling"}, st.RUNNING, "", None),
        ({"state": "passed", "blocked": True}, st.PENDING, "", None),
        ({"state": "failed", "blocked": True}, st.PENDING, "", None),
        ({"state": "blocked"}, st.PENDING, "", None),
        ({"state": "passed", "blocked": False}, st.SUCCESS, "", None),
        ({"state": "canceled"}, st.CANCELLED, "", None),
        (
            {"state": "skipped"},
            st.CANCELLED,
            "build skipped by Buildkite (superseded by a newer build)",
            None,
        ),
        ({"state": "not_run"}, st.CANCELLED, "build not run: every step was skipped", None),
        ({"state": "waiting"}, st.PENDING, "", None),
        ({"state": "waiting_failed"}, st.FAILED, "build failed while waiting on a dependency", None),
        (
            {"state": "failed", "jobs": [_job("passed"), _job("timed_out", exit_status=-1)]},
            st.TIMEOUT,
            "job 'unit' timed out",
            None,
        ),
        (
            {"state": "failed", "jobs": [_job("expired")]},
            st.TIMEOUT,
            "job 'unit' expired before an agent took it",
            None,
        ),
        (
            {
                "state": "failed",
                "jobs": [
                    _job("failed", exit_status=3, soft_failed=True),
                    _job("failed", name="lint", exit_status=2),
                ],
            },
            st.FAILED,
            "job 'lint' exited with status 2",
            2,
        ),
        (
            {"state": "failed", "jobs": [{"type": "waiter", "state": "passed"}]},
            st.FAILED,
            "build failed",
            None,
        ),
    ],
)
def test_build_state_mapping(
    build: dict[str, Any], status: st.Status, error: str, exit_code: int | None
) -> None:
    """Build states map to Tangled statuses per buildkite-api.md §5, with error and exit code."""
    verdict = states.build_verdict(build)
    assert (verdict.status, verdict.error, verdict.exit_code, verdict.needs_jobs) == (
        status,
        error,
        exit_code,
        False,
    )


def test_failed_without_jobs_needs_a_rest_read() -> None:
    """A failed build without jobs (a webhook payload) cannot tell failed from timeout: needs jobs."""
    assert states.build_verdict({"state": "failed"}).needs_jobs


def test_unknown_state_keeps_status() -> None:
    """An unknown future build state yields no status."""
    assert states.build_verdict({"state": "teleporting"}).status is None


def test_cancel_reason_becomes_error() -> None:
    """A canceled build's cancel_reason is carried in the error."""
    assert (
        states.build_verdict({"state": "canceled", "cancel_reason": "by Ada"}).error
        == "build canceled: by Ada"
    )


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2015-05-09T21:05:59.874Z", 1431205559_874000000),
        ("2018-07-01 20:14:38 UTC", 1530476078_000000000),
        ("2020-03-14T20:04:43Z", 1584216283_000000000),
        ("", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_parse_time_accepts_both_formats(text: str | None, ns: int | None) -> None:
    """Buildkite timestamps parse in ISO 8601 and '... UTC' form."""
    assert states.parse_time(text) == ns


def test_job_label_prefers_name_then_label() -> None:
    """Jobs are called by name, block steps by label, else step key or command."""
    assert states.job_label({"name": " Unit ", "label": "x"}) == "Unit"
    assert states.job_label({"type": "manual", "label": "Deploy?"}) == "Deploy?"
    assert states.job_label({"command": "make"}) == "make"


# Webhook authentication

VECTOR_BODY = (
    b'{"event":"ping","service":{"id":"9f0f9a19-1b88-4e37-98d8-c5a0cebcdb9a","provider":"webhook",'
    b'"settings":{"url":"http://127.0.0.1:8080/hooks/buildkite"}},"organization":{"id":'
    b'"4a1a6c2e-0a8b-4b8e-9d57-2f3c2e1d9a10","slug":"acme"},"sender":{"id":'
    b'"3d3c3bf0-7d58-4afe-8fe7-b3017d5504de","name":"Fake Admin"}}'
)
VECTOR_SECRET = "bk-webhook-token-123"
VECTOR_TS = 1767225600
VECTOR_SIG = "b49a834addacee171ba88338ee5e9b568b022a6ac53e7e01f1ee8c8f36d108e9"


def test_signature_test_vector() -> None:
    """The §6 test vector verifies: 302-byte body, documented header."""
    assert len(VECTOR_BODY) == 302
    assert webhook_auth.sign(VECTOR_SECRET, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG
    headers = [("X-Buildkite-Signature", f"timestamp={VECTOR_TS},signature={VECTOR_SIG}")]
    assert (
        webhook_auth.authenticate("signature", headers, VECTOR_BODY, VECTOR_SECRET, VECTOR_TS + 10)
        == VECTOR_SIG
    )


@pytest.mark.parametrize(
    "value",
    [
        f"signature={VECTOR_SIG},timestamp={VECTOR_TS}",
        f" timestamp = {VECTOR_TS} , signature = {VECTOR_SIG.upper()} ",
        f"timestamp={VECTOR_TS},signature=deadbeef,signature={VECTOR_SIG}",
        f"timestamp={VECTOR_TS},v=1,signature={VECTOR_SIG}",
    ],
)
def test_signature_header_is_parsed_tolerantly(value: str) -> None:
    """Reordered parts, spaces, hex case, extra parts and several signatures are accepted."""
    headers = [("x-buildkite-signature", value)]
    webhook_auth.authenticate("signature", headers, VECTOR_BODY, VECTOR_SECRET, VECTOR_TS)


@pytest.mark.parametrize(
    ("headers", "body", "now", "reason"),
    [
        (
            [("X-Buildkite-Signature", f"timestamp={VECTOR_TS},signature={VECTOR_SIG}")],
            VECTOR_BODY + b" ",
            0,
            "match",
        ),
        (
            [("X-Buildkite-Signature", f"timestamp={VECTOR_TS + 1},signature={VECTOR_SIG}")],
            VECTOR_BODY,
            0,
            "match",
        ),
        (
            [("X-Buildkite-Signature", f"timestamp={VECTOR_TS},signature={VECTOR_SIG}")],
            VECTOR_BODY,
            301,
            "from now",
        ),
        (
            [("X-Buildkite-Signature", f"timestamp={VECTOR_TS},signature={VECTOR_SIG}")],
            VECTOR_BODY,
            -301,
            "from now",
        ),
        ([("X-Buildkite-Signature", f"signature={VECTOR_SIG}")], VECTOR_BODY, 0, "needs timestamp"),
        ([("X-Buildkite-Signature", f"timestamp=soon,signature={VECTOR_SIG}")], VECTOR_BODY, 0, "malformed"),
        ([("X-Buildkite-Token", VECTOR_SECRET)], VECTOR_BODY, 0, "missing"),
        (
            [
                ("X-Buildkite-Signature", f"timestamp={VECTOR_TS},signature={VECTOR_SIG}"),
                ("X-Buildkite-Signature", f"timestamp={VECTOR_TS},signature=00"),
            ],
            VECTOR_BODY,
            0,
            "conflicting",
        ),
    ],
)
def test_bad_signatures_are_refused(
    headers: list[tuple[str, str]], body: bytes, now: int, reason: str
) -> None:
    """Tampered bodies, wrong timestamps, stale or future deliveries and bad headers fail authentication."""
    with pytest.raises(webhook_auth.AuthError, match=reason):
        webhook_auth.authenticate("signature", headers, body, VECTOR_SECRET, VECTOR_TS + now)


def test_token_mode() -> None:
    """Token mode needs X-Buildkite-Token equal to the secret, in any header-name case."""
    webhook_auth.authenticate("token", [("x-buildkite-token", "sekret")], b"{}", "sekret", 0)
    for headers in ([("X-Buildkite-Token", "sekret2")], [("X-Buildkite-Token", "")], []):
        with pytest.raises(webhook_auth.AuthError):
            webhook_auth.authenticate("token", headers, b"{}", "sekret", 0)
    with pytest.raises(webhook_auth.AuthError):
        webhook_auth.authenticate("signature", [("X-Buildkite-Token", "sekret")], b"{}", "sekret", 0)


# Log cleaning

RAW_LOG = (
    b"\x1b_bk;t=1767225601000\x07~~~ Running global environment hook\r\n"
    b"\x1b_bk;t=1767225601002\x07\x1b[90m$\x1b[0m pytest -q\r\n"
    b"\x1b_bk;t=1767225602500\x07--- :pytest: unit tests\r\n"
    b"\x1b_bk;t=1767225603000\x07Downloading 10%\rDownloading 50%\x1b_bk;t=1767225604100\x07\rDownloading 100%\r\n"
    b"\x1b_bk;t=1767225605000\x07\x1b[2K\x1b[1Gstep one\x1b[K\x1b_bk;t=1767225606000\x07 done\r\r\n"
    b"bk;t=1767225607000\x07old-agent marker \xc3\xa9t\xc3\xa9\r\n"
    b"\x1b]8;;https://example.org\x07link\x1b]8;;\x07 and \x1b[1;32mgreen\x1b[0m\r\n"
    b"\r\n"
    b"\x1b_bk;t=1767225608000\x07\x1b[32m3 passed\x1b[0m in 0.41s\r\r\n"
    b"no newline at the end"
)
CLEAN = [
    ("~~~ Running global environment hook", 1767225601000),
    ("$ pytest -q", 1767225601002),
    ("--- :pytest: unit tests", 1767225602500),
    ("Downloading 100%", 1767225603000),
    ("step one done", 1767225605000),
    ("old-agent marker été", 1767225607000),
    ("link and green", 1767225607000),
    ("", 1767225607000),
    ("3 passed in 0.41s", 1767225608000),
]


def _clean_all(chunks: list[bytes]) -> list[tuple[str, int | None]]:
    cleaner = logtext.LogCleaner()
    out = []
    for chunk in chunks:
        out.extend(cleaner.feed(chunk))
    out.extend(cleaner.flush())
    return [(line.text, line.ms) for line in out]


def test_log_cleaning() -> None:
    """Markers (line start, mid-line, ESC _ and bare), ANSI, CRLF, \\r\\r\\n and progress bars are cleaned."""
    assert _clean_all([RAW_LOG]) == [*CLEAN, ("no newline at the end", 1767225608000)]


def test_log_split_anywhere_gives_the_same_lines() -> None:
    """Feeding the log cut at every byte position (inside markers, escapes, UTF-8) changes nothing."""
    whole = _clean_all([RAW_LOG])
    for cut in range(1, len(RAW_LOG)):
        assert _clean_all([RAW_LOG[:cut], RAW_LOG[cut:]]) == whole, cut
    assert _clean_all([bytes([b]) for b in RAW_LOG]) == whole


def test_partial_line_is_held_until_complete() -> None:
    """A line is emitted only once its newline arrives; flush emits the unterminated rest."""
    cleaner = logtext.LogCleaner()
    assert cleaner.feed(b"\x1b_bk;t=5\x07hel") == []
    assert [line.text for line in cleaner.feed(b"lo\r")] == []
    assert [(line.text, line.ms) for line in cleaner.feed(b"\nnext")] == [("hello", 5)]
    assert [line.text for line in cleaner.flush()] == ["next"]
    assert cleaner.flush() == []


def test_clean_line_controls() -> None:
    """Stray control bytes are dropped, tabs kept."""
    assert logtext.clean_line("a\tb\x07c\x08d\x1b").text == "a\tbcd"


# Rate limits


def test_retry_after_follows_the_scope_named_by_the_body() -> None:
    """A 429 waits RateLimit-User-Reset for rest_user and RateLimit-Reset for rest."""
    headers = CIMultiDict({"RateLimit-Reset": "40", "RateLimit-User-Reset": "7"})
    assert ratelimit.retry_after(headers, json.dumps({"scope": "rest_user", "reset": 9}).encode()) == 7
    assert ratelimit.retry_after(headers, json.dumps({"scope": "rest", "reset": 9}).encode()) == 40
    assert ratelimit.retry_after(CIMultiDict(), json.dumps({"scope": "rest", "reset": 9}).encode()) == 9
    assert ratelimit.retry_after(headers, b"not json") == 40


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_pauses_after_429_with_cap_and_jitter() -> None:
    """After a 429 every request waits the reset (capped at 60 s) plus 0.25-0.75 s of jitter."""
    clock = FakeClock()
    limiter = ratelimit.RateLimiter(6000, clock=clock, jitter=lambda: 0.25)
    wait = limiter.throttled(CIMultiDict({"RateLimit-User-Reset": "5"}), b'{"scope":"rest_user"}')
    assert wait == 5.375
    assert limiter.delay(background=False) == pytest.approx(5.375)
    assert limiter.throttled(CIMultiDict({"RateLimit-Reset": "500"}), b'{"scope":"rest"}') == 60.375
    clock.now += 61
    assert limiter.delay(background=False) == 0


def test_limiter_paces_background_and_keeps_a_reserve() -> None:
    """Background requests follow the budget and hold back when the quota is nearly spent; foreground never waits."""
    clock = FakeClock()
    limiter = ratelimit.RateLimiter(60, clock=clock, jitter=lambda: 0.0)
    taken = 0
    while limiter.delay(background=True) == 0:
        taken += 1
    assert taken == 10
    assert limiter.delay(background=True) == pytest.approx(1.0)
    assert limiter.delay(background=False) == 0
    clock.now += 5
    limiter.observe(CIMultiDict({"RateLimit-User-Remaining": "2", "RateLimit-User-Reset": "30"}))
    assert limiter.delay(background=True) == pytest.approx(30)
    assert limiter.delay(background=False) == 0
    limiter.observe(CIMultiDict({"RateLimit-Remaining": "0", "RateLimit-Reset": "12"}))
    assert limiter.delay(background=False) == pytest.approx(12)


def test_content_range() -> None:
    """Content-Range headers give (first byte, total)."""
    assert content_range("bytes 900-999/1000") == (900, 1000)
    assert content_range("bytes */1000") is None
    assert content_range(None) is None


# Log views (no network: the feed and the log reads are scripted)


def _reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, CIMultiDict(headers or {}), body)


class Scripted:
    """A build the test changes while a view reads it."""

    def __init__(self, build: dict[str, Any]) -> None:
        self.build = build
        self.reads = 0

    async def fetch(self) -> dict[str, Any] | None:
        self.reads += 1
        copy: dict[str, Any] = json.loads(json.dumps(self.build))
        return copy


def _bk_job(job_id: str, kind: str, state: str, **extra: Any) -> dict[str, Any]:
    return {"id": job_id, "type": kind, "state": state, **extra}


async def test_log_view_shows_blocks_triggers_and_jobs_that_never_ran() -> None:
    """Waiters are hidden; a block step waits for unblock; a trigger links its build; a skipped job says so."""
    unit = _bk_job(
        "u", "script", "passed", name="unit", command="make test", started_at="2026-01-01T00:00:00Z"
    )
    jobs = [
        unit,
        _bk_job("w", "waiter", "passed"),
        _bk_job("b", "manual", "blocked", label="Deploy?"),
        _bk_job("t", "trigger", "scheduled", name="downstream"),
        _bk_job("s", "script", "waiting", name="late"),
    ]
    scripted = Scripted({"state": "passed", "blocked": True, "jobs": jobs})
    feed = BuildFeed(scripted.fetch, 0.01)
    tails: Shared[tuple[str, str], JobTail] = Shared()

    async def fetch_log(job_id: str, suffix: int | None) -> Reply:
        assert job_id == "u"
        return _reply(200, b"\x1b_bk;t=1767225601000\x07\x1b[32mok\x1b[0m\r\n")

    lines: list[pb.LogLine] = []
    async with Shared[str, BuildFeed]().use("build", lambda: feed):
        view = LogView(feed, tails, "build", fetch_log, 0.01, run_over=lambda: False)
        async for chunk in view.stream():
            lines.extend(chunk)
            texts = [line.content for line in chunk]
            if "waiting for unblock" in texts:
                jobs[2].update(state="passed", unblocked_by={"name": "Ada"})
                jobs[3].update(
                    state="running", triggered_build={"web_url": "https://buildkite.com/acme/down/builds/7"}
                )
                scripted.build = {"state": "running", "blocked": False, "jobs": jobs}
            if any(text.startswith("triggered ") for text in texts):
                jobs[3]["state"] = "passed"
                jobs[4].update(state="skipped")
                scripted.build = {"state": "passed", "blocked": False, "jobs": jobs}
    shown = [(line.step_id, pb.LogKind.Name(line.kind), line.content) for line in lines]
    assert shown == [
        (0, "LOG_KIND_CONTROL", "unit"),
        (0, "LOG_KIND_DATA", "ok"),
        (0, "LOG_KIND_CONTROL", "unit"),
        (1, "LOG_KIND_CONTROL", "Deploy?"),
        (1, "LOG_KIND_DATA", "waiting for unblock"),
        (1, "LOG_KIND_DATA", "unblocked by Ada"),
        (1, "LOG_KIND_CONTROL", "Deploy?"),
        (2, "LOG_KIND_CONTROL", "downstream"),
        (2, "LOG_KIND_DATA", "triggered https://buildkite.com/acme/down/builds/7"),
        (2, "LOG_KIND_DATA", "trigger passed"),
        (2, "LOG_KIND_CONTROL", "downstream"),
        (3, "LOG_KIND_CONTROL", "late"),
        (3, "LOG_KIND_DATA", "not run: skipped"),
        (3, "LOG_KIND_CONTROL", "late"),
    ]
    assert lines[0].step_command == "make test" and lines[1].time_unix_nano // 10**9 == 1767225601
    assert len(tails) == 0


async def test_job_tail_fetches_only_new_bytes_and_falls_back() -> None:
    """A running job's log is read by suffix ranges; a gap or a refused range falls back to a full read."""
    log = bytearray()
    calls: list[int | None] = []
    ranges = True
    job = _bk_job("j", "script", "running", started_at="2026-01-01T00:00:00Z")
    scripted = Scripted({"state": "running", "jobs": [job]})

    async def fetch(suffix: int | None) -> Reply:
        calls.append(suffix)
        if suffix is None:
            return _reply(200, bytes(log))
        if not ranges:
            return _reply(400, b'{"message":"no ranges"}')
        start = max(0, len(log) - suffix)
        headers = {"Content-Range": f"bytes {start}-{len(log) - 1}/{len(log)}"}
        return _reply(206, bytes(log[start:]), headers)

    feed = BuildFeed(scripted.fetch, 0.01)
    feed.start()
    tail = JobTail(feed, "j", fetch, 0.01)
    tail.start()

    async def wait_lines(count: int) -> None:
        async with asyncio.timeout(5):
            while len(tail.lines) < count:
                await asyncio.sleep(0.005)

    log += b"one\n"
    await wait_lines(1)
    log += b"two\n"
    await wait_lines(2)
    assert None in calls and any(c is not None for c in calls)
    full_reads = calls.count(None)
    log += b"x" * 10_000 + b"\n"  # more than the suffix asked for: a gap
    await wait_lines(3)
    assert calls.count(None) == full_reads + 1
    ranges = False
    log += b"four\n"
    await wait_lines(4)
    job["state"] = "passed"
    scripted.build = {"state": "passed", "jobs": [job]}
    log += b"last words"
    async with asyncio.timeout(5):
        while not tail.done:
            await asyncio.sleep(0.005)
    assert [line.text for line in tail.lines] == ["one", "two", "x" * 10_000, "four", "last words"]
    await tail.stop()
    await feed.stop()


async def test_log_view_follows_a_retried_job() -> None:
    """A job retried while shown ends with 'retried' and its new attempt follows as a step of its own."""
    first = _bk_job("a1", "script", "running", name="unit", started_at="2026-01-01T00:00:00Z")
    scripted = Scripted({"state": "running", "jobs": [first]})
    feed = BuildFeed(scripted.fetch, 0.01)
    logs = {"a1": b"attempt one\n", "a2": b"attempt two\n"}

    async def fetch_log(job_id: str, suffix: int | None) -> Reply:
        return _reply(200, logs[job_id])

    contents: list[tuple[int, str]] = []
    async with Shared[str, BuildFeed]().use("build", lambda: feed):
        view = LogView(feed, Shared(), "build", fetch_log, 0.01, run_over=lambda: False)
        async for chunk in view.stream():
            contents.extend((line.step_id, line.content) for line in chunk)
            if (0, "attempt one") in contents and scripted.build["jobs"] == [first]:
                retry = _bk_job("a2", "script", "passed", name="unit", started_at="2026-01-01T00:01:00Z")
                scripted.build = {"state": "passed", "jobs": [retry]}
    assert contents == [
        (0, "unit"),
        (0, "attempt one"),
        (0, "retried"),
        (0, "unit"),
        (1, "unit"),
        (1, "attempt two"),
        (1, "unit"),
    ]
