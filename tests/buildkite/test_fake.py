"""The fake Buildkite is faithful to docs/buildkite-api.md §10: REST, logs, state rules and webhooks, on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from tests.fakes.buildkite import (
    ALL_SCOPES,
    TIMEOUT_LINE,
    FakeBuildkite,
    JobLog,
    JobTemplate,
    Knobs,
    PipelineLike,
    PipelineSpec,
    TokenInfo,
    User,
    WebhookTarget,
    compact_json,
    ping_payload,
    signature_header,
)


SHA = "5cf26b27727eb6a0ebdc139cf6d39907372cf565"
AUTH_REQUIRED = (
    "Authentication required. Please supply a valid API Access Token: "
    "https://buildkite.com/docs/apis/rest-api#authentication"
)
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UTC_SPACE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")
MARKER = re.compile(rb"\x1b_bk;t=(\d+)\x07")
CI_BOT = User("CI Bot", "ci@example.org", id="3d3c3bf0-7d58-4afe-8fe7-b3017d5504de")
TOKENS = {
    "tok": TokenInfo(user=CI_BOT, scopes=ALL_SCOPES),
    "tok2": TokenInfo(user=User("Other", "other@example.org"), scopes=ALL_SCOPES),
    "readonly": TokenInfo(user=User("Reader", "reader@example.org"), scopes=["read_builds"]),
    "ci-only": TokenInfo(user=User("Scoped", "scoped@example.org"), pipelines=frozenset({"ci"})),
    "elsewhere": TokenInfo(user=User("Stranger", "x@example.org"), orgs=frozenset({"other-org"})),
}
PIPELINES: dict[str, PipelineLike] = {
    "ci": [JobTemplate(":pytest: unit tests", "unit", "pytest -q")],
    "multi": [
        JobTemplate("lint", "lint", "ruff check ."),
        JobTemplate("unit", "unit", "pytest -q"),
        JobTemplate("docs", "docs", "make docs", soft_fail=True),
    ],
    "gated": [
        {"type": "script", "name": "build", "step_key": "build", "command": "make"},
        {"type": "waiter"},
        {"type": "script", "name": "deploy", "step_key": "deploy", "command": "make deploy"},
    ],
    "filtered": PipelineSpec(steps=[JobTemplate("unit", "unit", "pytest")], branch_filter="main release/*"),
}
HAPPY_PATH = [
    "build.scheduled",
    "job.scheduled",
    "job.started",
    "build.running",
    "job.finished",
    "build.finished",
]


class Clock:
    """A wall clock that moves only when told."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Received:
    event: str
    headers: CIMultiDictProxy[str]
    body: bytes
    at: float

    @property
    def payload(self) -> dict[str, Any]:
        decoded = json.loads(self.body)
        assert isinstance(decoded, dict)
        return decoded


@dataclass
class Receiver:
    """A webhook endpoint on loopback that records raw requests."""

    status: int = 200
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(
            Received(request.headers.get("X-Buildkite-Event", ""), request.headers, body, time.monotonic())
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(status=self.status)

    def events(self, *, pings: bool = False) -> list[str]:
        return [r.event for r in self.received if pings or r.event != "ping"]


@dataclass
class Resp:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """Raw HTTP calls to the fake."""

    def __init__(self, session: aiohttp.ClientSession, fake: FakeBuildkite) -> None:
        self.session = session
        self.fake = fake

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "tok",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> Resp:
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {token}")
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        url = path if path.startswith("http") else self.fake.url + path
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with self.session.request(
            method, url, data=data, headers=sent, params=params, timeout=client_timeout
        ) as resp:
            return Resp(resp.status, resp.headers, await resp.read())

    async def create(self, pipeline: str = "ci", token: str = "tok", **fields: Any) -> dict[str, Any]:
        body = {"commit": SHA, "branch": "main", **fields}
        resp = await self.call(
            "POST", f"/v2/organizations/acme/pipelines/{pipeline}/builds", token=token, body=body
        )
        assert resp.status == 201, resp.body
        created = resp.json()
        assert isinstance(created, dict)
        return created

    async def get_build(self, number: int, pipeline: str = "ci", **params: str) -> dict[str, Any]:
        resp = await self.call(
            "GET", f"/v2/organizations/acme/pipelines/{pipeline}/builds/{number}", params=params
        )
        assert resp.status == 200, resp.body
        build = resp.json()
        assert isinstance(build, dict)
        return build


def log_path(build: Mapping[str, Any], job_id: str, pipeline: str = "ci", suffix: str = "") -> str:
    return f"/v2/organizations/acme/pipelines/{pipeline}/builds/{build['number']}/jobs/{job_id}/log{suffix}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/buildkite", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/buildkite"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBuildkite]:
    async with FakeBuildkite("acme", PIPELINES, TOKENS, knobs=Knobs(cancel_delay_s=0.05), seed=7) as server:
        yield server


@pytest.fixture
async def client(fake: FakeBuildkite) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(session, fake)


# webhook signing


def test_signature_matches_documented_test_vector() -> None:
    """The §6 ping body (302 bytes) signed with token and timestamp gives the documented header."""
    target = WebhookTarget(
        "http://127.0.0.1:8080/hooks/buildkite",
        "bk-webhook-token-123",
        id="9f0f9a19-1b88-4e37-98d8-c5a0cebcdb9a",
    )
    sender = {"id": "3d3c3bf0-7d58-4afe-8fe7-b3017d5504de", "name": "Fake Admin"}
    body = compact_json(ping_payload(target, "4a1a6c2e-0a8b-4b8e-9d57-2f3c2e1d9a10", "acme", sender))
    documented = (
        b'{"event":"ping","service":{"id":"9f0f9a19-1b88-4e37-98d8-c5a0cebcdb9a","provider":"webhook",'
        b'"settings":{"url":"http://127.0.0.1:8080/hooks/buildkite"}},"organization":'
        b'{"id":"4a1a6c2e-0a8b-4b8e-9d57-2f3c2e1d9a10","slug":"acme"},"sender":'
        b'{"id":"3d3c3bf0-7d58-4afe-8fe7-b3017d5504de","name":"Fake Admin"}}'
    )
    assert body == documented and len(body) == 302
    assert signature_header("bk-webhook-token-123", 1767225600, body) == (
        "timestamp=1767225600,signature=b49a834addacee171ba88338ee5e9b568b022a6ac53e7e01f1ee8c8f36d108e9"
    )


async def test_signed_deliveries_verify_over_raw_bytes(
    fake: FakeBuildkite, client: Client, receiver: Receiver
) -> None:
    """Signature-mode deliveries carry §10.5 headers and an HMAC over "<ts>.<raw body>" taken at dispatch."""
    fake.add_webhook_target(receiver.url, "s3cret", "signature")
    await client.create()
    await fake.wait_webhooks_idle()
    assert receiver.events(pings=True)[:3] == ["ping", "build.scheduled", "job.scheduled"]
    for got in receiver.received:
        fields = dict(part.strip().split("=", 1) for part in got.headers["X-Buildkite-Signature"].split(","))
        expected = hmac.new(
            b"s3cret", fields["timestamp"].encode() + b"." + got.body, hashlib.sha256
        ).hexdigest()
        assert fields["signature"] == expected
        assert abs(int(fields["timestamp"]) - time.time()) < 5
        assert got.headers["User-Agent"] == "Buildkite-Request"
        assert got.headers["Content-Type"] == "application/json"
        assert got.headers["X-Buildkite-Event"] == got.payload["event"]
        uuid.UUID(got.headers["X-Buildkite-Request"])
        assert "X-Buildkite-Token" not in got.headers
        assert got.body == compact_json(got.payload)


async def test_token_mode_sends_plain_token(fake: FakeBuildkite, client: Client, receiver: Receiver) -> None:
    """Token-mode deliveries carry X-Buildkite-Token and no signature; the ping names the service and org."""
    target = fake.add_webhook_target(receiver.url, "plain-token")
    await fake.wait_webhooks_idle()
    ping = receiver.received[0]
    assert ping.headers["X-Buildkite-Token"] == "plain-token"
    assert "X-Buildkite-Signature" not in ping.headers
    assert ping.payload["service"] == {
        "id": target.id,
        "provider": "webhook",
        "settings": {"url": receiver.url},
    }
    assert ping.payload["organization"]["slug"] == "acme"


# create, get, list


async def test_create_returns_201_with_full_build(fake: FakeBuildkite, client: Client) -> None:
    """A create answers 201 with a scheduled API build: creator, author, echoed fields, jobs and URLs."""
    body = {
        "commit": SHA,
        "branch": "main",
        "message": "tangled: push to main",
        "author": {"name": "Ada Lovelace", "email": "ada@example.org"},
        "env": {"TANGLED_PIPELINE_ID": "plp_01"},
        "meta_data": {"tangled:pipeline_id": "plp_01", "flag": True},
        "pull_request_id": 42,
        "pull_request_base_branch": "main",
        "pull_request_repository": "git://example.org/app.git",
    }
    resp = await client.call("POST", "/v2/organizations/acme/pipelines/ci/builds", body=body)
    assert resp.status == 201
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    build = resp.json()
    assert (build["number"], build["state"], build["source"], build["blocked"]) == (
        1,
        "scheduled",
        "api",
        False,
    )
    assert build["cancel_reason"] is None and build["rebuilt_from"] is None
    assert build["creator"]["id"] == CI_BOT.id and build["creator"]["name"] == "CI Bot"
    assert build["author"] == body["author"] and build["env"] == body["env"]
    assert build["meta_data"] == {"tangled:pipeline_id": "plp_01", "flag": "true"}
    assert build["pull_request"] == {"id": "42", "base": "main", "repository": "git://example.org/app.git"}
    assert build["url"] == f"{fake.url}/v2/organizations/acme/pipelines/ci/builds/1"
    assert ISO_MS.match(build["created_at"]) and build["started_at"] is None
    (job,) = build["jobs"]
    assert (job["type"], job["step_key"], job["state"], job["exit_status"]) == (
        "script",
        "unit",
        "scheduled",
        None,
    )
    assert job["log_url"] == f"{build['url']}/jobs/{job['id']}/log"
    assert job["raw_log_url"] == job["log_url"] + ".txt"
    assert build["pipeline"]["slug"] == "ci" and "steps" not in build["pipeline"]
    assert fake.builds[0].request_body == body and fake.builds[0].request_raw == json.dumps(body).encode()
    second = await client.create()
    assert second["number"] == 2


async def test_create_validation_and_filter_refusals(client: Client) -> None:
    """Missing fields give 422 Validation Failed; a branch-filter miss gives 422 unless filters are ignored."""
    resp = await client.call("POST", "/v2/organizations/acme/pipelines/ci/builds", body={"commit": SHA})
    assert resp.status == 422
    assert resp.json() == {"message": "Validation Failed", "errors": [{"field": "branch", "code": "missing"}]}
    resp = await client.call(
        "POST", "/v2/organizations/acme/pipelines/filtered/builds", body={"commit": SHA, "branch": "feature"}
    )
    assert resp.json() == {"message": "Build does not match the pipeline's filter condition"}
    assert resp.status == 422
    await client.create("filtered", branch="release/1.0")
    await client.create("filtered", branch="feature", ignore_pipeline_branch_filters=True)
    form = await client.call(
        "POST",
        "/v2/organizations/acme/pipelines/ci/builds",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status == 415
    broken = await client.call(
        "POST", "/v2/organizations/acme/pipelines/ci/builds", headers={"Content-Type": "application/json"}
    )
    assert broken.status == 422 and "message" in broken.json()


async def test_get_build_honours_query_options_and_404s(fake: FakeBuildkite, client: Client) -> None:
    """GET build honours exclude_jobs/exclude_pipeline, adds job_state_counts, and 404s with Buildkite's words."""
    created = await client.create("multi")
    full = await client.get_build(created["number"], "multi")
    assert len(full["jobs"]) == 3 and full["job_state_counts"] == {"total": 3, "states": {"scheduled": 3}}
    lean = await client.get_build(created["number"], "multi", exclude_jobs="true", exclude_pipeline="true")
    assert "jobs" not in lean and "pipeline" not in lean
    missing = await client.call("GET", "/v2/organizations/acme/pipelines/multi/builds/99")
    assert (missing.status, missing.json()) == (404, {"message": "No build found"})
    nopipe = await client.call("GET", "/v2/organizations/acme/pipelines/nope/builds/1")
    assert (nopipe.status, nopipe.json()) == (404, {"message": "No pipeline found"})
    job_id = created["jobs"][0]["id"]
    job = await client.call("GET", f"/v2/organizations/acme/pipelines/multi/builds/1/jobs/{job_id}")
    assert job.status == 200 and job.json()["id"] == job_id
    nojob = await client.call("GET", f"/v2/organizations/acme/pipelines/multi/builds/1/jobs/{uuid.uuid4()}")
    assert (nojob.status, nojob.json()) == (404, {"message": "No job found"})
    env = await client.call("GET", f"/v2/organizations/acme/pipelines/multi/builds/1/jobs/{job_id}/env")
    assert env.json()["env"]["BUILDKITE_COMMIT"] == SHA
    pipeline = await client.call("GET", "/v2/organizations/acme/pipelines/multi")
    assert [step["name"] for step in pipeline.json()["steps"]] == ["lint", "unit", "docs"]


async def test_list_filters_by_meta_data_and_paginates_with_link(client: Client) -> None:
    """meta_data[k]=v filters; per_page pages newest first with next/last/first/prev Link URLs that work."""
    for i in range(5):
        await client.create(meta_data={"tangled:pipeline_id": "wanted" if i % 2 == 0 else "other"})
    path = "/v2/organizations/acme/pipelines/ci/builds"
    first = await client.call(
        "GET", path, params={"meta_data[tangled:pipeline_id]": "wanted", "per_page": "2"}
    )
    assert first.headers["Access-Control-Expose-Headers"] == "Link"
    assert [b["number"] for b in first.json()] == [5, 3]
    links = dict((rel, url) for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', first.headers["Link"]))
    assert set(links) == {"next", "last"} and "page=2" in links["last"]
    second = await client.call("GET", links["next"])
    assert [b["number"] for b in second.json()] == [1]
    links = dict((rel, url) for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', second.headers["Link"]))
    assert set(links) == {"first", "prev"}
    everything = await client.call("GET", path, params={"per_page": "1000"})
    assert len(everything.json()) == 5 and "Link" not in everything.headers
    none = await client.call("GET", path, params={"meta_data[tangled:pipeline_id]": "absent"})
    assert none.json() == []
    client.fake.knobs.max_list_page = 2
    deep = await client.call("GET", path, params={"page": "3"})
    assert deep.status == 400 and deep.json()["message"].startswith(
        "Listing builds this deep is not supported."
    )


async def test_list_filters_state_branch_and_commit(fake: FakeBuildkite, client: Client) -> None:
    """state[] (with the finished shortcut), wildcard branch and full-SHA commit filters select builds."""
    done = await client.create(branch="feature/x")
    await client.create(commit="f" * 40)
    fake.advance(done["id"], to="passed")
    path = "/v2/organizations/acme/builds"

    async def numbers(**params: str) -> list[int]:
        return [b["number"] for b in (await client.call("GET", path, params=params)).json()]

    assert await numbers(state="finished") == [1]
    assert await numbers(**{"state[]": "scheduled"}) == [2]
    assert await numbers(branch="feature/*") == [1]
    assert await numbers(commit="f" * 40) == [2]
    assert await numbers(commit="f" * 7) == []
    all_orgs = await client.call("GET", "/v2/builds")
    assert len(all_orgs.json()) == 2


# auth and rate limits


async def test_auth_failures_use_documented_bodies(client: Client) -> None:
    """No or unknown token gives 401, a missing scope 403, an invisible pipeline or org 404; headers always."""
    path = "/v2/organizations/acme/pipelines/ci/builds"
    for token, headers in ((None, {}), ("wrong", {}), (None, {"Authorization": "Basic dG9rOg=="})):
        resp = await client.call("GET", path, token=token, headers=headers)
        assert (resp.status, resp.json()) == (401, {"message": AUTH_REQUIRED})
        assert resp.headers["RateLimit-Scope"] == "rest" and "RateLimit-User-Remaining" in resp.headers
    denied = await client.call("POST", path, token="readonly", body={"commit": SHA, "branch": "main"})
    assert (denied.status, denied.json()) == (
        403,
        {"message": "Your access token doesn't have the write_builds scope"},
    )
    hidden = await client.call("GET", "/v2/organizations/acme/pipelines/multi/builds", token="ci-only")
    assert (hidden.status, hidden.json()) == (404, {"message": "No pipeline found"})
    foreign = await client.call("GET", path, token="elsewhere")
    assert (foreign.status, foreign.json()) == (404, {"message": "No pipeline found"})


async def test_access_token_and_organization_probe(client: Client) -> None:
    """GET /v2/access-token describes the token; GET organization answers 200 when visible, else 404."""
    token = await client.call("GET", "/v2/access-token", token="readonly")
    assert token.status == 200
    info = token.json()
    assert info["scopes"] == ["read_builds"] and info["user"] == {
        "name": "Reader",
        "email": "reader@example.org",
    }
    assert UTC_SPACE.match(info["created_at"]) and uuid.UUID(info["uuid"])
    org = await client.call("GET", "/v2/organizations/acme")
    assert org.status == 200 and {"id", "slug", "name"} <= set(org.json()) and org.json()["slug"] == "acme"
    for token_name, slug in (("tok", "nope"), ("elsewhere", "acme")):
        resp = await client.call("GET", f"/v2/organizations/{slug}", token=token_name)
        assert (resp.status, resp.json()) == (404, {"message": "No organization found"})
    root = await client.call("GET", "/", token=None)
    assert root.json()["message"] == "\U0001f6e0"


async def test_user_limit_gives_429_with_scope_and_warning(fake: FakeBuildkite, client: Client) -> None:
    """Past the per-user limit: 429 scope rest_user with limit/current/reset and RateLimit-User-Warning only."""
    fake.knobs.rate_limit_user = 3
    path = "/v2/organizations/acme/pipelines/ci/builds"
    remaining = []
    for _ in range(3):
        resp = await client.call("GET", path)
        assert resp.status == 200 and "RateLimit-User-Warning" not in resp.headers
        remaining.append(resp.headers["RateLimit-User-Remaining"])
    assert remaining == ["2", "1", "0"]
    over = await client.call("GET", path)
    body = over.json()
    assert over.status == 429
    assert (body["scope"], body["limit"], body["current"]) == ("rest_user", 3, 4)
    assert 0 < body["reset"] <= 60 and body["reset"] == int(over.headers["RateLimit-User-Reset"])
    assert body["message"] == (
        f"You have exceeded your API rate limit. Please wait {body['reset']} seconds before making more requests."
    )
    assert over.headers["RateLimit-User-Warning"] == "You have exceeded your API rate limit."
    assert "RateLimit-Warning" not in over.headers
    assert over.headers["RateLimit-Remaining"] == "196" and over.headers["RateLimit-Limit"] == "200"
    other = await client.call("GET", path, token="tok2")
    assert other.status == 200 and other.headers["RateLimit-User-Remaining"] == "2"


async def test_org_limit_is_shared_and_windows_reset() -> None:
    """The org bucket is shared by users (429 scope rest); both windows reset after 60 s of the clock."""
    clock = Clock()
    knobs = Knobs(rate_limit_org=3)
    async with (
        FakeBuildkite("acme", PIPELINES, TOKENS, knobs=knobs, clock=clock) as server,
        aiohttp.ClientSession() as session,
    ):
        client = Client(session, server)
        assert (await client.call("GET", "/v2/builds")).status == 200
        clock.now += 20
        assert (await client.call("GET", "/v2/builds", token="tok2")).status == 200
        third = await client.call("GET", "/v2/builds", token="readonly")
        assert third.headers["RateLimit-Remaining"] == "0" and third.headers["RateLimit-Reset"] == "40"
        over = await client.call("GET", "/v2/builds", token="tok2")
        assert over.status == 429 and over.json()["scope"] == "rest" and "RateLimit-Warning" in over.headers
        assert over.json()["reset"] == 40 and over.headers["RateLimit-User-Reset"] == "60"
        clock.now += 41
        again = await client.call("GET", "/v2/builds")
        assert again.status == 200 and again.headers["RateLimit-Remaining"] == "2"


async def test_injected_faults_429_and_gateway_errors(fake: FakeBuildkite, client: Client) -> None:
    """force_429 creates nothing; fail_next answers 5xx HTML; after_effect creates the build anyway."""
    fake.force_429(1, scope="rest")
    path = "/v2/organizations/acme/pipelines/ci/builds"
    body = {"commit": SHA, "branch": "main", "meta_data": {"id": "one"}}
    limited = await client.call("POST", path, body=body)
    assert (
        limited.status == 429 and limited.json()["scope"] == "rest" and "RateLimit-Warning" in limited.headers
    )
    assert fake.builds == [] and fake.create_calls[("id", "one")] == 1
    fake.fail_next(1, 503)
    failed = await client.call("POST", path, body=body)
    assert failed.status == 503 and failed.headers["Content-Type"].startswith("text/html")
    assert fake.builds == []
    fake.fail_next(1, 502, after_effect=True)
    assert (await client.call("POST", path, body=body)).status == 502
    assert len(fake.builds_with_meta("id", "one")) == 1 and fake.create_calls[("id", "one")] == 3
    fake.knobs.fault_match = r"^PUT "
    fake.fail_next(1, 502)
    assert (await client.call("GET", path)).status == 200
    assert (await client.call("PUT", f"{path}/1/cancel")).status == 502
    assert [r.status for r in fake.requests[-2:]] == [200, 502]


async def test_slow_create_times_out_client_but_build_exists(
    fake: FakeBuildkite, client: Client, receiver: Receiver
) -> None:
    """With create_delay_s the client times out, yet the build exists and its webhook arrived first."""
    fake.add_webhook_target(receiver.url, "t", ping=False)
    fake.knobs.create_delay_s = 0.5
    body = {"commit": SHA, "branch": "main", "meta_data": {"tangled:pipeline_id": "slow"}}
    with pytest.raises(TimeoutError):
        await client.call("POST", "/v2/organizations/acme/pipelines/ci/builds", body=body, timeout=0.2)
    fake.knobs.create_delay_s = 0
    found = await client.call(
        "GET", "/v2/organizations/acme/pipelines/ci/builds", params={"meta_data[tangled:pipeline_id]": "slow"}
    )
    assert [b["number"] for b in found.json()] == [1]
    await fake.wait_webhooks_idle()
    assert receiver.events()[0] == "build.scheduled"
    assert receiver.received[0].payload["build"]["meta_data"]["tangled:pipeline_id"] == "slow"


# cancel


async def test_cancel_from_scheduled_is_immediate(
    fake: FakeBuildkite, client: Client, receiver: Receiver
) -> None:
    """Cancel of a scheduled build: jobs and build canceled at once, then build.finished (no build.canceled)."""
    fake.add_webhook_target(receiver.url, "t", ping=False)
    created = await client.create()
    resp = await client.call("PUT", "/v2/organizations/acme/pipelines/ci/builds/1/cancel")
    build = resp.json()
    assert resp.status == 200 and build["state"] == "canceled" and build["finished_at"] is not None
    assert build["jobs"][0]["state"] == "canceled" and build["jobs"][0]["exit_status"] is None
    await fake.wait_webhooks_idle()
    assert receiver.events() == ["build.scheduled", "job.scheduled", "job.finished", "build.finished"]
    assert receiver.received[-1].payload["build"]["state"] == "canceled"
    assert created["id"] == receiver.received[-1].payload["build"]["id"]


async def test_cancel_from_running_passes_through_canceling(
    fake: FakeBuildkite, client: Client, receiver: Receiver
) -> None:
    """Cancel of a running build answers canceling; later jobs end canceled (SIGTERM, -1) and build.finished fires."""
    fake.add_webhook_target(receiver.url, "t", ping=False)
    await client.create("multi")
    fake.advance("multi/1", "lint", "running")
    resp = await client.call("PUT", "/v2/organizations/acme/pipelines/multi/builds/1/cancel")
    build = resp.json()
    assert build["state"] == "canceling" and build["finished_at"] is None
    assert [j["state"] for j in build["jobs"]] == ["canceling", "canceled", "canceled"]
    await fake.wait_build_state(1, "canceled")
    final = await client.get_build(1, "multi")
    lint = final["jobs"][0]
    assert (lint["state"], lint["exit_status"], lint["signal"], lint["signal_reason"]) == (
        "canceled",
        -1,
        "SIGTERM",
        "cancel",
    )
    assert final["finished_at"] is not None
    await fake.wait_webhooks_idle()
    tail = [(r.event, r.payload.get("job", {}).get("step_key")) for r in receiver.received[-2:]]
    assert tail == [("job.finished", "lint"), ("build.finished", None)]
    assert receiver.received[-1].payload["build"]["state"] == "canceled"


async def test_cancel_of_finished_build_is_422(fake: FakeBuildkite, client: Client) -> None:
    """Cancelling a finished build answers 422 with a message."""
    await client.create()
    fake.advance(1, to="passed")
    resp = await client.call("PUT", "/v2/organizations/acme/pipelines/ci/builds/1/cancel")
    assert resp.status == 422
    assert resp.json() == {"message": "This build can't be canceled because it has already finished"}


# state rules


async def test_hard_failure_makes_build_failing_then_failed(
    fake: FakeBuildkite, client: Client, receiver: Receiver
) -> None:
    """A hard failure while jobs run gives failing (failing_at, build.failing); all done gives failed."""
    fake.add_webhook_target(receiver.url, "t", ping=False)
    await client.create("multi")
    fake.advance(1, "unit", "running")
    build = fake.advance(1, "lint", "failed", log_append="E501 line too long\n")
    assert build.state == "failing" and build.failing_at is not None
    assert fake.job(1, "lint").exit_status == 1
    fake.advance(1, "unit", "passed")
    fake.advance(1, "docs", "passed")
    assert build.state == "failed" and build.finished_at is not None
    await fake.wait_webhooks_idle()
    builds = [r.payload["build"]["state"] for r in receiver.received if r.event.startswith("build.")]
    assert [e for e in receiver.events() if e.startswith("build.")] == [
        "build.scheduled",
        "build.running",
        "build.failing",
        "build.finished",
    ]
    assert builds == ["scheduled", "running", "failing", "failed"]


async def test_soft_failure_still_passes(fake: FakeBuildkite, client: Client) -> None:
    """A soft-fail job that fails is soft_failed and the build passes."""
    await client.create("multi")
    for key in ("lint", "unit"):
        fake.advance(1, key, "passed")
    fake.advance(1, "docs", "failed", exit_status=2)
    build = await client.get_build(1, "multi")
    assert build["state"] == "passed"
    assert build["jobs"][2]["soft_failed"] is True and build["jobs"][2]["exit_status"] == 2


async def test_timed_out_job_goes_timing_out_then_timed_out(fake: FakeBuildkite, client: Client) -> None:
    """Timeout: timing_out then timed_out with exit -1, SIGTERM, the documented log line; build failed."""
    await client.create()
    fake.advance(1, to="timing_out")
    assert (await client.get_build(1))["jobs"][0]["state"] == "timing_out"
    fake.advance(1, to="timed_out")
    build = await client.get_build(1)
    job = build["jobs"][0]
    assert (job["state"], job["exit_status"], job["signal"], job["signal_reason"]) == (
        "timed_out",
        -1,
        "SIGTERM",
        None,
    )
    assert build["state"] == "failed"
    assert fake.log(1).endswith(TIMEOUT_LINE.encode() + b"\r\n")


async def test_waiter_gates_later_jobs(fake: FakeBuildkite, client: Client, receiver: Receiver) -> None:
    """Jobs behind a wait step stay waiting until it passes; a failure before it ends them waiting_failed."""
    fake.add_webhook_target(receiver.url, "t", ping=False)
    created = await client.create("gated")
    assert [j["state"] for j in created["jobs"]] == ["scheduled", "waiting", "waiting"]
    assert set(created["jobs"][1]) == {"id", "graphql_id", "type", "step_key", "state"}
    fake.advance(1, "build", "passed")
    assert [j.state for j in fake.build(1).jobs] == ["passed", "passed", "scheduled"]
    fake.advance(1, "deploy", "passed")
    assert fake.build(1).state == "passed"
    await client.create("gated")
    fake.advance(2, "build", "failed")
    assert [j.state for j in fake.build(2).jobs] == ["failed", "waiting_failed", "waiting_failed"]
    assert fake.build(2).state == "failed"
    await fake.wait_webhooks_idle()
    scheduled = [r.payload["job"]["step_key"] for r in receiver.received if r.event == "job.scheduled"]
    assert scheduled == ["build", "deploy", "build"]


async def test_retry_reruns_failed_build(fake: FakeBuildkite, client: Client) -> None:
    """Retrying a failed job makes a new attempt; the build goes failed, running, passed; old log still served."""
    await client.create()
    await fake.run_scenario(1, "fail", tick_s=0.001)
    assert fake.build(1).state == "failed"
    old = fake.job(1)
    resp = await client.call("PUT", f"/v2/organizations/acme/pipelines/ci/builds/1/jobs/{old.id}/retry")
    new = resp.json()
    assert resp.status == 200 and new["id"] != old.id and new["state"] == "scheduled"
    assert (await client.get_build(1))["state"] == "running"
    again = await client.call("PUT", f"/v2/organizations/acme/pipelines/ci/builds/1/jobs/{old.id}/retry")
    assert again.status == 422
    await fake.run_scenario(1, "pass", tick_s=0.001)
    build = await client.get_build(1)
    assert build["state"] == "passed" and [j["id"] for j in build["jobs"]] == [new["id"]]
    every = await client.get_build(1, include_retried_jobs="true")
    assert [j["retried"] for j in every["jobs"]] == [True, False]
    assert every["jobs"][0]["retried_in_job_id"] == new["id"]
    log = await client.call("GET", log_path(build, old.id, suffix=".txt"))
    assert b"exited with status 1" in log.body


async def test_rebuild_copies_the_build(fake: FakeBuildkite, client: Client) -> None:
    """Rebuild of a finished build answers 200 with a new build pointing back via rebuilt_from."""
    await client.create(message="first", env={"A": "1"})
    fake.advance(1, to="passed")
    resp = await client.call("PUT", "/v2/organizations/acme/pipelines/ci/builds/1/rebuild")
    new = resp.json()
    assert resp.status == 200 and new["number"] == 2 and new["state"] == "scheduled"
    assert (new["commit"], new["message"], new["env"]) == (SHA, "first", {"A": "1"})
    assert new["rebuilt_from"]["number"] == 1 and new["rebuilt_from"]["url"].endswith("/builds/1")


# logs


async def test_log_absent_modes_before_start(fake: FakeBuildkite, client: Client) -> None:
    """Before a job starts its log is 404 No log found, or with empty200 an empty 200 (and 416 for a range)."""
    build = await client.create()
    path = log_path(build, build["jobs"][0]["id"])
    absent = await client.call("GET", path)
    assert (absent.status, absent.json()) == (404, {"message": "No log found"})
    assert (await client.call("HEAD", path)).status == 404
    fake.knobs.log_absent_mode = "empty200"
    empty = await client.call("GET", path)
    assert empty.status == 200
    assert empty.json() == {"url": f"{fake.url}{path}", "content": "", "size": 0, "header_times": []}
    head = await client.call("HEAD", path)
    assert head.status == 200 and head.headers["Content-Length"] == "0"
    tail = await client.call("GET", path, headers={"Accept": "text/plain", "Range": "bytes=-10"})
    assert tail.status == 416


async def test_log_bytes_have_markers_crlf_ansi_and_headers(fake: FakeBuildkite, client: Client) -> None:
    """Raw log: marker at each line start, CRLF (and CR CR LF from output), agent preamble, ANSI; JSON agrees."""
    build = await client.create()
    job_id = build["jobs"][0]["id"]
    sizes = []
    fake.advance(1, to="running", log_append="--- :pytest: unit tests\n")
    sizes.append(fake.job(1).log.size)
    fake.advance(1, log_append="\x1b[32m3 passed\x1b[0m in 0.41s\r\n")
    sizes.append(fake.job(1).log.size)
    fake.advance(1, to="passed")
    raw = await client.call("GET", log_path(build, job_id), headers={"Accept": "text/plain"})
    same = await client.call("GET", log_path(build, job_id, suffix=".txt"))
    assert (
        raw.status == 200 and raw.headers["Content-Type"].startswith("text/plain") and raw.body == same.body
    )
    lines = raw.body.split(b"\r\n")[:-1]
    assert all(MARKER.match(line) for line in lines)
    plain = [MARKER.sub(b"", line) for line in lines]
    assert plain[:3] == [
        b"~~~ Running global environment hook",
        b"~~~ Preparing working directory",
        b"~~~ Running script",
    ]
    assert plain[3] == b"\x1b[90m$\x1b[0m pytest -q" and b"--- :pytest: unit tests" in plain
    assert b"\x1b[32m3 passed\x1b[0m in 0.41s\r\r\n" in raw.body
    as_json = (await client.call("GET", log_path(build, job_id))).json()
    assert as_json["content"].encode() == raw.body and as_json["size"] == len(raw.body)
    assert sizes[0] < sizes[1] <= len(raw.body)
    html = await client.call("GET", log_path(build, job_id, suffix=".html"))
    assert html.headers["Content-Type"].startswith("text/html") and b"3 passed" in html.body


async def test_log_suffix_ranges_and_head(fake: FakeBuildkite, client: Client) -> None:
    """HEAD gives Content-Length; bytes=-N gives 206 with Content-Range; other forms or no text/plain give 400."""
    build = await client.create()
    fake.advance(1, to="running", log_append="hello world\n")
    path = log_path(build, build["jobs"][0]["id"])
    total = fake.job(1).log.size
    head = await client.call("HEAD", path)
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Length"] == str(total) and head.headers["Accept-Ranges"] == "bytes"
    tail = await client.call("GET", path, headers={"Accept": "text/plain", "Range": "bytes=-13"})
    assert tail.status == 206 and tail.body == b"hello world\r\n"
    assert tail.headers["Content-Range"] == f"bytes {total - 13}-{total - 1}/{total}"
    whole = await client.call("GET", path, headers={"Accept": "text/plain", "Range": f"bytes=-{total + 50}"})
    assert whole.status == 206 and whole.headers["Content-Range"] == f"bytes 0-{total - 1}/{total}"
    for value, accept in (
        ("bytes=0-10", "text/plain"),
        ("bytes=0-1,5-6", "text/plain"),
        ("bytes=-0", "text/plain"),
        ("bytes=-5", "application/json"),
    ):
        resp = await client.call("GET", path, headers={"Accept": accept, "Range": value})
        assert resp.status == 400, value


async def test_timestamper_marks_mid_line_after_a_second() -> None:
    """A write arriving over 1 s after the last marker mid-line gets a marker; ESC[K counts as a line end."""
    log = JobLog()
    log.write_output("Downloading", 1_000)
    log.write_output(" 50%", 1_900)
    log.write_output(" 100%\n", 2_100)
    log.write_output("\x1b[Kdone\r\n", 2_200)
    assert bytes(log.data) == (
        b"\x1b_bk;t=1000\x07Downloading 50%\x1b_bk;t=2100\x07 100%\r\n"
        b"\x1b_bk;t=2200\x07\x1b[K\x1b_bk;t=2200\x07done\r\r\n"
    )


async def test_fake_clock_drives_log_markers() -> None:
    """Log markers use the fake's clock in milliseconds, including a mid-line marker after a pause."""
    clock = Clock(1_767_225_601.0)
    async with (
        FakeBuildkite("acme", PIPELINES, TOKENS, clock=clock) as server,
        aiohttp.ClientSession() as session,
    ):
        await Client(session, server).create()
        server.advance(1, to="running", log_append="progress")
        clock.now += 1.5
        server.advance(1, log_append=" done\n")
        assert b"progress\x1b_bk;t=1767225602500\x07 done\r\n" in server.log(1)
        assert server.log(1).startswith(b"\x1b_bk;t=1767225601000\x07~~~ Running global environment hook\r\n")


# webhook payloads and knobs


async def test_happy_path_webhook_sequence_and_shapes(
    fake: FakeBuildkite, client: Client, receiver: Receiver
) -> None:
    """A passing build sends the canonical six events; build payloads lack jobs but carry tag and blocked_state."""
    fake.add_webhook_target(receiver.url, "t", ping=False)
    created = await client.create(meta_data={"tangled:pipeline_id": "p1"})
    await fake.run_scenario(created["id"], "pass", tick_s=0.001)
    await fake.wait_webhooks_idle()
    assert receiver.events() == HAPPY_PATH
    for got in receiver.received:
        payload = got.payload
        assert next(iter(payload)) == "event" and payload["sender"]["name"] == "Fake Admin"
        assert "jobs" not in payload["build"] and payload["build"]["tag"] is None
        assert (
            "blocked_state" in payload["build"] and payload["pipeline"]["steps"][0]["command"] == "pytest -q"
        )
        assert ISO_MS.match(payload["build"]["created_at"])
        assert ("job" in payload) == got.event.startswith("job.")
    finished = receiver.received[4].payload["job"]
    assert (finished["state"], finished["exit_status"]) == ("passed", 0)
    assert receiver.received[-1].payload["build"]["state"] == "passed"


async def test_webhook_timestamp_format_and_live_build(
    fake: FakeBuildkite, client: Client, receiver: Receiver
) -> None:
    """utc_space renders webhook times as "YYYY-MM-DD HH:MM:SS UTC"; live_build shows the build's later state."""
    fake.add_webhook_target(receiver.url, "t", ping=False)
    fake.knobs.webhook_timestamp_format = "utc_space"
    fake.knobs.webhook_live_build = True
    fake.knobs.webhook_delay_ms = 50
    await client.create()
    fake.advance(1, to="passed")
    await fake.wait_webhooks_idle()
    first = receiver.received[0].payload
    assert first["event"] == "build.scheduled" and first["build"]["state"] == "passed"
    assert UTC_SPACE.match(first["build"]["created_at"]) and UTC_SPACE.match(first["pipeline"]["created_at"])


async def test_webhook_duplicate_sends_each_event_twice(
    fake: FakeBuildkite, client: Client, receiver: Receiver
) -> None:
    """webhook_duplicate delivers every event twice with identical bodies and distinct request ids."""
    fake.add_webhook_target(receiver.url, "t", ping=False)
    fake.knobs.webhook_duplicate = True
    await client.create()
    await fake.wait_webhooks_idle()
    assert receiver.events() == ["build.scheduled", "build.scheduled", "job.scheduled", "job.scheduled"]
    first, second = receiver.received[:2]
    assert first.body == second.body
    assert first.headers["X-Buildkite-Request"] != second.headers["X-Buildkite-Request"]
    assert [d.duplicate for d in fake.webhook_deliveries] == [False, True, False, True]


async def test_webhook_reorder_shuffles_queued_events(
    fake: FakeBuildkite, client: Client, receiver: Receiver
) -> None:
    """webhook_reorder delivers the same events in a different order."""
    fake.add_webhook_target(receiver.url, "t", ping=False)
    fake.knobs.webhook_reorder = True
    await client.create()
    fake.advance(1, to="passed")
    await fake.wait_webhooks_idle()
    assert sorted(receiver.events()) == sorted(HAPPY_PATH)
    assert receiver.events() != HAPPY_PATH


async def test_webhook_drop_knobs(fake: FakeBuildkite, client: Client, receiver: Receiver) -> None:
    """drop_next_n, drop_events and drop probability 1.0 drop deliveries and record them as dropped."""
    fake.add_webhook_target(receiver.url, "t", ping=False)
    fake.knobs.webhook_drop_next_n = 1
    fake.knobs.webhook_drop_events = frozenset({"build.finished"})
    await client.create()
    fake.advance(1, to="passed")
    await fake.wait_webhooks_idle()
    assert receiver.events() == HAPPY_PATH[1:-1]
    dropped = [d.event for d in fake.webhook_deliveries if d.dropped]
    assert dropped == ["build.scheduled", "build.finished"]
    fake.knobs.webhook_drop = 1.0
    await client.create()
    await fake.wait_webhooks_idle()
    assert len(receiver.received) == 4


async def test_webhook_failures_recorded_and_retried_only_on_request(
    fake: FakeBuildkite, client: Client, receiver: Receiver
) -> None:
    """A 500 is recorded once with its status; with webhook_retry=2 it is attempted three times."""
    target = fake.add_webhook_target(receiver.url, "t", events=["build.scheduled"], ping=False)
    receiver.status = 500
    await client.create()
    await fake.wait_webhooks_idle()
    assert [(d.event, d.status, d.attempt) for d in fake.webhook_deliveries] == [("build.scheduled", 500, 1)]
    fake.knobs.webhook_retry = 2
    fake.knobs.webhook_retry_delay_ms = 1
    await client.create()
    await fake.wait_webhooks_idle()
    assert [d.attempt for d in fake.webhook_deliveries[1:]] == [1, 2, 3]
    assert len(fake.emitter.recent(target)) == 4


async def test_webhook_timeout_and_delay(fake: FakeBuildkite, client: Client, receiver: Receiver) -> None:
    """A receiver slower than webhook_timeout_s is recorded as a timeout; webhook_delay_ms delays delivery."""
    fake.add_webhook_target(receiver.url, "t", events=["build.scheduled"], ping=False)
    fake.knobs.webhook_timeout_s = 0.1
    receiver.delay_s = 0.5
    await client.create()
    await fake.wait_webhooks_idle()
    (slow,) = fake.webhook_deliveries
    assert slow.status is None and slow.error is not None and "Timeout" in slow.error and slow.elapsed_s < 0.4
    receiver.delay_s = 0
    fake.knobs.webhook_delay_ms = 200
    started = time.monotonic()
    await client.create()
    await fake.wait_webhooks_idle()
    assert receiver.received[-1].at - started >= 0.19


async def test_auto_scenario_plays_every_created_build(receiver: Receiver) -> None:
    """With auto_scenario every created build plays on its own; a pipeline can override the scenario."""
    pipelines = {
        "ci": PIPELINES["ci"],
        "flaky": PipelineSpec(steps=[JobTemplate("unit", "unit", "pytest")], auto_scenario="fail"),
    }
    knobs = Knobs(auto_scenario="pass", auto_tick_s=0.001)
    async with (
        FakeBuildkite("acme", pipelines, TOKENS, knobs=knobs) as server,
        aiohttp.ClientSession() as session,
    ):
        client = Client(session, server)
        await client.create()
        await client.create("flaky")
        await server.wait_build_state("ci/1", "passed")
        await server.wait_build_state("flaky/1", "failed")
        assert b"3 passed" in server.log("ci/1")


async def test_control_api_drives_and_reports(
    fake: FakeBuildkite, client: Client, receiver: Receiver
) -> None:
    """/__fake advance, knobs, scenario, webhooks and state work over HTTP; illegal moves answer 409."""
    created = await client.create("multi")
    base = f"/__fake/builds/{created['id']}"
    moved = await client.call("POST", base + "/advance", token=None, body={"job": "lint", "to": "running"})
    assert moved.status == 200 and moved.json()["build"]["state"] == "running"
    again = await client.call(
        "POST", base + "/advance", token=None, body={"job": "lint", "log_append": "ok\n"}
    )
    assert again.status == 200 and again.json()["log_sizes"][created["jobs"][0]["id"]] > 0
    illegal = await client.call("POST", base + "/advance", token=None, body={"job": "lint", "to": "flying"})
    assert illegal.status == 409
    knobs = await client.call("POST", "/__fake/knobs", token=None, body={"webhook_duplicate": True})
    assert knobs.json()["webhook_duplicate"] is True and fake.knobs.webhook_duplicate
    wrong = await client.call("POST", "/__fake/knobs", token=None, body={"log_absent_mode": "sometimes"})
    assert wrong.status == 400
    hooks = await client.call(
        "POST", "/__fake/webhooks", token=None, body={"url": receiver.url, "token": "t"}
    )
    assert hooks.status == 201
    run = await client.call(
        "POST", base + "/scenario", token=None, body={"scenario": "pass", "tick_s": 0.001}
    )
    assert run.status == 202
    await fake.wait_build_state(created["id"], "passed")
    state = (await client.call("GET", "/__fake/state", token=None)).json()
    assert state["builds"][0]["request_body"]["commit"] == SHA
    assert state["builds"][0]["build"]["state"] == "passed"
    await fake.wait_webhooks_idle()
    listed = (await client.call("GET", "/__fake/webhooks", token=None)).json()
    assert listed["targets"][0]["recent"][0]["event"] == "ping"
    assert all(not r.path.startswith("/__fake") for r in fake.requests)
