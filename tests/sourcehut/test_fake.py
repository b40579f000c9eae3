"""The fake builds.sr.ht behaves as docs/sourcehut-api.md says: GraphQL answers, auth, job lifecycle, logs,
faults and signed triggers, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.sourcehut import (
    DEFAULT_TOKEN,
    TACK_GRANTS,
    FakeSourcehut,
    JobPlan,
    StateError,
    verify,
)
from tests.fakes.sourcehut.state import MANIFEST_MAX


MANIFEST = """\
image: alpine/edge
sources:
- https://git.example.org/repo#0123456789abcdef0123456789abcdef01234567
environment:
  TANGLED_WORKFLOW: ci
tasks:
- build: |
    make
- test: |
    make check
- deploy: |
    make deploy
"""
SUBMIT = "mutation Submit($m: String!, $t: [String!], $n: String) { submit(manifest: $m, tags: $t, note: $n) { id } }"
OTHER_TOKEN = "OtherUsersToken0123456789abcdefghijklmnopqrs"
JOBS_ONLY = "JobsOnlyToken0123456789abcdefghijklmnopqrstuv"


class Client:
    """A bare GraphQL client: one POST per call, answers as (HTTP status, JSON or text)."""

    def __init__(
        self, srht: FakeSourcehut, session: aiohttp.ClientSession, token: str = DEFAULT_TOKEN
    ) -> None:
        self.srht = srht
        self.session = session
        self.token = token

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, **extra: Any
    ) -> tuple[int, Any]:
        body: dict[str, Any] = {"query": query, "variables": variables or {}, **extra}
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.post(f"{self.srht.url}/query", json=body, headers=headers) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def submit(self, manifest: str = MANIFEST, **variables: Any) -> int:
        status, answer = await self.post(SUBMIT, {"m": manifest, **variables})
        assert status == 200 and "errors" not in answer, answer
        return int(answer["data"]["submit"]["id"])

    async def get(self, path: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
        headers.setdefault("Authorization", f"Bearer {self.token}")
        async with self.session.get(f"{self.srht.url}{path}", headers=headers) as resp:
            return resp.status, await resp.read(), dict(resp.headers)


@pytest.fixture
async def srht() -> AsyncIterator[FakeSourcehut]:
    async with FakeSourcehut() as fake:
        fake.add_token(OTHER_TOKEN, "someone-else")
        fake.add_token(JOBS_ONLY, "tack", {"JOBS:RW"})
        yield fake


@pytest.fixture
async def client(srht: FakeSourcehut) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield Client(srht, session)


# -- authentication and scopes (§1, §2) ---------------------------------------------------------------------


async def test_missing_authorization_header_answers_401_with_srht_message(client: Client) -> None:
    """No Authorization header: 401 and the auth middleware's GraphQL-shaped error, no data key."""
    async with client.session.post(f"{client.srht.url}/query", json={"query": "{ me { username } }"}) as resp:
        assert resp.status == 401
        body = await resp.json()
    assert body == {
        "errors": [
            {
                "message": "Authentication error: Authorization header is required. "
                "Expected 'Authorization: Bearer [token]'"
            }
        ]
    }


@pytest.mark.parametrize(
    ("header", "status", "reason"),
    [
        ("Bearer", 400, "Invalid Authorization header"),
        ("Token " + DEFAULT_TOKEN, 400, "Invalid Authorization header"),
        ("Bearer not-a-token", 400, "Invalid OAuth bearer token"),
        ("Bearer " + "A" * 40, 403, "Invalid or expired OAuth 2.0 bearer token"),
        ("Bearer " + "0" * 32, 403, "Invalid or expired OAuth token"),
    ],
)
async def test_bad_authorization_answers_like_core_go(
    client: Client, header: str, status: int, reason: str
) -> None:
    """Malformed headers answer 400, well-formed unknown tokens 403, each with core-go's reason."""
    async with client.session.post(
        f"{client.srht.url}/query", json={"query": "{ me { username } }"}, headers={"Authorization": header}
    ) as resp:
        assert resp.status == status
        assert (await resp.json())["errors"][0]["message"] == f"Authentication error: {reason}"


async def test_revoked_token_answers_403(srht: FakeSourcehut, client: Client) -> None:
    """A token that worked stops working once revoked."""
    assert (await client.post("{ me { username } }"))[0] == 200
    srht.revoke(DEFAULT_TOKEN)
    status, answer = await client.post("{ me { username } }")
    assert status == 403
    assert "Invalid or expired" in answer["errors"][0]["message"]


async def test_missing_logs_scope_nulls_only_the_log_field(srht: FakeSourcehut, client: Client) -> None:
    """Without LOGS:RO a job reads fine but its log is null, with an access error at that path."""
    job_id = await client.submit()
    srht.pick_up(job_id)
    client.token = JOBS_ONLY
    status, answer = await client.post(
        "query($id: Int!) { job(id: $id) { id status log { fullURL } } }", {"id": job_id}
    )
    assert status == 200
    assert answer["data"] == {"job": {"id": job_id, "status": "RUNNING", "log": None}}
    assert answer["errors"] == [{"message": "Access denied for invalid auth method", "path": ["job", "log"]}]


async def test_missing_jobs_scope_bubbles_null_to_data(srht: FakeSourcehut, client: Client) -> None:
    """``jobs`` is non-null, so a denied ``jobs`` makes the whole data null (HTTP still 200)."""
    token = "ProfileOnlyToken0123456789abcdefghijklmnopq"
    srht.add_token(token, "tack", {"PROFILE:RO"})
    client.token = token
    status, answer = await client.post("{ jobs { results { id } } }")
    assert status == 200
    assert answer == {
        "errors": [{"message": "Access denied for invalid auth method", "path": ["jobs"]}],
        "data": None,
    }


async def test_submit_needs_jobs_rw(srht: FakeSourcehut, client: Client) -> None:
    """A read-only token cannot submit, and no job is created."""
    token = "ReadOnlyToken0123456789abcdefghijklmnopqrstu"
    srht.add_token(token, "tack", {"JOBS:RO", "LOGS:RO"})
    client.token = token
    status, answer = await client.post(SUBMIT, {"m": MANIFEST})
    assert (status, answer["data"]) == (200, None)
    assert answer["errors"][0]["path"] == ["submit"]
    assert srht.jobs == []


# -- GraphQL request handling (§1) ----------------------------------------------------------------------------


async def test_unknown_field_is_a_422_validation_error(client: Client) -> None:
    """Selecting a field the schema lacks answers 422 with gqlgen's code and location."""
    status, answer = await client.post("{ job(id: 1) {\n  id\n  colour } }")
    assert status == 422
    (error,) = answer["errors"]
    assert error["message"] == 'Cannot query field "colour" on type "Job".'
    assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert error["locations"] == [{"line": 3, "column": 3}]
    assert answer["data"] is None


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ('mutation { submit(manifest: "x", priority: 1) { id } }', 'Unknown argument "priority"'),
        ("{ job { id } }", 'argument "id" of type "Int!" is required'),
        ('{ job(id: "1") { id } }', 'Expected type "Int!"'),
        ("{ job(id: 1) }", "must have a selection of subfields"),
        ("{ job(id: 1) { id { x } } }", "must not have a selection"),
        ("subscription { jobs { cursor } }", 'does not support operation type "subscription"'),
        ("query($x: Int!) { job(id: 1) { id } }", 'Variable "$x" is never used'),
        ("{ job(id: $nope) { id } }", 'Variable "$nope" is not defined'),
        ("query($x: Int) { job(id: $x) { id } }", "used in position expecting type"),
        ('mutation { submit(manifest: "x", visibility: SECRET) { id } }', 'Expected type "Visibility"'),
        ("{ job(id: 1) { ...F } }", "does not support fragments"),
    ],
)
async def test_invalid_operations_answer_422(client: Client, query: str, fragment: str) -> None:
    """Operations that do not validate never run: 422 and a message naming the problem."""
    status, answer = await client.post(query)
    assert status == 422, answer
    assert fragment in answer["errors"][0]["message"]
    assert client.srht.jobs == []


async def test_parse_error_has_parse_failed_code(client: Client) -> None:
    """A document that does not parse answers 422 GRAPHQL_PARSE_FAILED."""
    status, answer = await client.post("{ job(id: 1) { id }")
    assert status == 422
    assert answer["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


async def test_body_that_is_not_json_answers_400(client: Client) -> None:
    """A non-JSON body answers 400 ``json body could not be decoded``."""
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}", "Content-Type": "application/json"}
    async with client.session.post(f"{client.srht.url}/query", data=b"{nope", headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["errors"][0]["message"].startswith("json body could not be decoded")


async def test_variables_are_coerced_and_checked(client: Client) -> None:
    """A required variable left out, or of the wrong JSON type, answers 422 naming the variable."""
    status, answer = await client.post(SUBMIT, {})
    assert status == 422
    assert answer["errors"][0]["message"] == "input: variable.m must be defined"
    status, answer = await client.post(SUBMIT, {"m": MANIFEST, "t": [1]})
    assert status == 422
    assert "variable.t[0]" in answer["errors"][0]["message"]


async def test_complexity_over_the_limit_answers_422(srht: FakeSourcehut, client: Client) -> None:
    """A query with more fields than the instance's complexity limit is refused before it runs."""
    srht.max_complexity = 5
    status, answer = await client.post("{ job(id: 1) { id status note tags image runner } }")
    assert status == 422
    assert answer["errors"][0]["extensions"]["code"] == "COMPLEXITY_LIMIT_EXCEEDED"
    assert answer["errors"][0]["message"] == "operation has complexity 7, which exceeds the limit of 5"


async def test_aliases_batch_several_jobs_in_one_request(client: Client) -> None:
    """Aliased ``job`` fields answer under their aliases; a missing job is null without error."""
    first = await client.submit()
    second = await client.submit()
    status, answer = await client.post(
        f"{{ a: job(id: {first}) {{ id __typename }} b: job(id: {second}) {{ id }} c: job(id: 999) {{ id }} }}"
    )
    assert status == 200
    assert answer == {"data": {"a": {"id": first, "__typename": "Job"}, "b": {"id": second}, "c": None}}


async def test_operation_name_picks_one_of_several(client: Client) -> None:
    """With several operations, ``operationName`` chooses the one that runs."""
    document = "query A { me { username } } query B { version { settings { buildTimeout } } }"
    status, answer = await client.post(document, operationName="B")
    assert (status, answer) == (200, {"data": {"version": {"settings": {"buildTimeout": "4h"}}}})
    status, _ = await client.post(document)
    assert status == 422


# -- submit (§3) ----------------------------------------------------------------------------------------------


async def test_submit_records_every_argument_and_creates_a_pending_job(
    srht: FakeSourcehut, client: Client
) -> None:
    """submit stores the job PENDING with tasks in manifest order, and the fake records what arrived."""
    status, answer = await client.post(
        'mutation($m: String!) { submit(manifest: $m, tags: ["tack", "wf-1"], note: "push", secrets: false,'
        " visibility: PRIVATE) { id status tags note visibility image runner log { fullURL }"
        " tasks { name status log { fullURL } } } }",
        {"m": MANIFEST},
    )
    assert status == 200, answer
    job = answer["data"]["submit"]
    assert job["status"] == "PENDING"
    assert job["tags"] == ["tack", "wf-1"]
    assert (job["note"], job["visibility"], job["image"], job["runner"]) == (
        "push",
        "PRIVATE",
        "alpine/edge",
        None,
    )
    assert job["log"] is None
    assert [(t["name"], t["status"], t["log"]) for t in job["tasks"]] == [
        ("build", "PENDING", None),
        ("test", "PENDING", None),
        ("deploy", "PENDING", None),
    ]
    (sub,) = srht.submissions
    assert (sub.manifest, sub.tags, sub.note, sub.secrets, sub.execute, sub.visibility) == (
        MANIFEST,
        ["tack", "wf-1"],
        "push",
        False,
        None,
        "PRIVATE",
    )
    assert sub.job_id == job["id"]
    assert srht.job(job["id"]).secrets is False


async def test_visibility_defaults_to_unlisted(srht: FakeSourcehut, client: Client) -> None:
    """Without ``visibility`` the job is UNLISTED."""
    job_id = await client.submit()
    assert srht.job(job_id).visibility == "UNLISTED"


async def test_tags_read_back_through_a_slash_join(client: Client) -> None:
    """Tags are stored joined with ``/``: a tag containing ``/`` comes back split, and no tags as ``[""]``."""
    job_id = await client.submit(t=["tack", "refs/heads/main"])
    _, answer = await client.post(f"{{ job(id: {job_id}) {{ tags }} }}")
    assert answer["data"]["job"]["tags"] == ["tack", "refs", "heads", "main"]
    untagged = await client.submit()
    _, answer = await client.post(f"{{ job(id: {untagged}) {{ tags }} }}")
    assert answer["data"]["job"]["tags"] == [""]


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("image: [unclosed", "yaml: "),
        ("just a string", "cannot unmarshal !!str"),
        ("tasks:\n- build: make\n", "image is required"),
        ("image: alpine/edge\n", "list of tasks is required"),
        ("image: alpine/edge\ntasks:\n- Build: make\n", "invalid task name 'Build'"),
        ("image: alpine/edge\ntasks:\n- a: x\n- a: y\n", "duplicate task a"),
        ("image: alpine/edge\ntasks:\n- a: x\n  b: y\n", "task schema is"),
        (
            "image: alpine/edge\ntasks:\n- a: x\ntriggers:\n- action: irc\n  condition: always\n",
            "unknown trigger type 'irc'",
        ),
        (
            "image: alpine/edge\ntasks:\n- a: x\ntriggers:\n- action: webhook\n  condition: always\n",
            "requires 'url'",
        ),
        ("image: alpine/edge\ntasks:\n- a: x\n#" + "x" * MANIFEST_MAX, "character varying(16384)"),
    ],
)
async def test_bad_manifest_is_refused_and_creates_nothing(
    srht: FakeSourcehut, client: Client, manifest: str, message: str
) -> None:
    """A manifest builds.sr.ht rejects answers an error at ``submit`` with data null, and no job exists."""
    status, answer = await client.post(SUBMIT, {"m": manifest})
    assert (status, answer["data"]) == (200, None)
    (error,) = answer["errors"]
    assert error["path"] == ["submit"]
    assert message in error["message"]
    assert srht.jobs == []
    assert srht.submissions[0].error == error["message"]


async def test_shell_true_allows_a_manifest_without_tasks(srht: FakeSourcehut, client: Client) -> None:
    """``shell: true`` lifts the "tasks required" rule; the job has no tasks."""
    job_id = await client.submit("image: alpine/edge\nshell: true\n")
    assert srht.job(job_id).tasks == []


async def test_secrets_follow_the_grant(srht: FakeSourcehut, client: Client) -> None:
    """Unset ``secrets`` enables them only with SECRETS:RO; ``secrets: true`` without it is an error."""
    with_secret = "image: alpine/edge\nsecrets:\n- 3e8b7a8e-1c1b-4a7c-9a3e-2b0f3f1d9c55\ntasks:\n- a: x\n"
    assert srht.job(await client.submit(with_secret)).secrets is True
    client.token = JOBS_ONLY
    assert srht.job(await client.submit(with_secret)).secrets is False
    status, answer = await client.post(
        "mutation($m: String!) { submit(manifest: $m, secrets: true) { id } }", {"m": with_secret}
    )
    assert (status, answer["data"]) == (200, None)
    assert len(srht.jobs) == 2


async def test_execute_false_waits_for_start_which_queues(srht: FakeSourcehut, client: Client) -> None:
    """A job submitted with ``execute: false`` stays PENDING; ``start`` makes it QUEUED, once."""
    _, answer = await client.post(
        "mutation($m: String!) { submit(manifest: $m, execute: false) { id } }", {"m": MANIFEST}
    )
    job_id = answer["data"]["submit"]["id"]
    assert srht.submissions[0].execute is False
    _, answer = await client.post(f"mutation {{ start(jobID: {job_id}) {{ status }} }}")
    assert answer == {"data": {"start": {"status": "QUEUED"}}}
    _, answer = await client.post(f"mutation {{ start(jobID: {job_id}) {{ status }} }}")
    assert answer["errors"][0]["message"] == "Found no pending jobs with this ID on your account"


# -- lifecycle (§4, §6) ---------------------------------------------------------------------------------------


async def job_state(client: Client, job_id: int) -> tuple[str, list[str]]:
    _, answer = await client.post(f"{{ job(id: {job_id}) {{ status tasks {{ status }} }} }}")
    job = answer["data"]["job"]
    return job["status"], [t["status"] for t in job["tasks"]]


async def test_tasks_run_in_order_and_success_ends_the_job(srht: FakeSourcehut, client: Client) -> None:
    """Picked up, each task runs and succeeds in turn; the last success makes the job SUCCESS."""
    job_id = await client.submit()
    srht.pick_up(job_id)
    assert await job_state(client, job_id) == ("RUNNING", ["PENDING"] * 3)
    for name in ("build", "test", "deploy"):
        srht.start_task(job_id, name)
        srht.finish_task(job_id, name)
    assert await job_state(client, job_id) == ("SUCCESS", ["SUCCESS"] * 3)


async def test_failed_task_leaves_later_tasks_pending(srht: FakeSourcehut, client: Client) -> None:
    """A failing task fails the job at once; the tasks after it stay PENDING, not SKIPPED."""
    job_id = await client.submit()
    srht.run_job(job_id, fail_task="test")
    assert await job_state(client, job_id) == ("FAILED", ["SUCCESS", "FAILED", "PENDING"])


async def test_complete_build_skips_the_rest(srht: FakeSourcehut, client: Client) -> None:
    """``complete-build`` in a task ends the job SUCCESS and marks later tasks SKIPPED."""
    job_id = await client.submit()
    srht.pick_up(job_id)
    srht.start_task(job_id, "build")
    srht.complete_build(job_id, "build")
    assert await job_state(client, job_id) == ("SUCCESS", ["SUCCESS", "SKIPPED", "SKIPPED"])


async def test_timeout_fails_the_running_task(srht: FakeSourcehut, client: Client) -> None:
    """The runner's deadline ends the job TIMEOUT; the task that was running is FAILED."""
    job_id = await client.submit()
    srht.pick_up(job_id)
    srht.start_task(job_id, "build")
    srht.time_out(job_id)
    assert await job_state(client, job_id) == ("TIMEOUT", ["FAILED", "PENDING", "PENDING"])


async def test_setup_failure_runs_no_task(srht: FakeSourcehut, client: Client) -> None:
    """A setup failure fails the job with every task still PENDING."""
    job_id = await client.submit()
    srht.pick_up(job_id)
    srht.fail_setup(job_id)
    assert await job_state(client, job_id) == ("FAILED", ["PENDING"] * 3)


async def test_cancel_works_only_on_running_jobs_of_the_caller(srht: FakeSourcehut, client: Client) -> None:
    """cancel refuses pending, finished and other users' jobs with builds.sr.ht's message; a running one ends CANCELLED."""
    refused = "Found no running jobs for your account with this ID"
    job_id = await client.submit()
    query = f"mutation {{ cancel(jobId: {job_id}) {{ id status }} }}"
    status, answer = await client.post(query)
    assert (status, answer) == (
        200,
        {"errors": [{"message": refused, "path": ["cancel"]}], "data": {"cancel": None}},
    )
    srht.pick_up(job_id)
    srht.start_task(job_id, "build")
    client.token = OTHER_TOKEN
    assert (await client.post(query))[1]["errors"][0]["message"] == refused
    client.token = DEFAULT_TOKEN
    assert (await client.post(query))[1] == {"data": {"cancel": {"id": job_id, "status": "CANCELLED"}}}
    assert await job_state(client, job_id) == ("CANCELLED", ["FAILED", "PENDING", "PENDING"])
    assert (await client.post(query))[1]["errors"][0]["message"] == refused


async def test_impossible_moves_raise_state_error(srht: FakeSourcehut, client: Client) -> None:
    """The test cannot drive a job where builds.sr.ht never goes: out-of-order tasks, finishing idle tasks."""
    job_id = await client.submit()
    with pytest.raises(StateError):
        srht.start_task(job_id, "build")
    srht.pick_up(job_id)
    with pytest.raises(StateError):
        srht.start_task(job_id, "test")
    with pytest.raises(StateError):
        srht.finish_task(job_id, "build")
    with pytest.raises(StateError):
        srht.pick_up(job_id)


async def test_other_users_jobs_are_invisible(srht: FakeSourcehut, client: Client) -> None:
    """job(id) of another user's job is null without error, and it is not in their listing."""
    job_id = await client.submit()
    client.token = OTHER_TOKEN
    assert (await client.post(f"{{ job(id: {job_id}) {{ id }} }}"))[1] == {"data": {"job": None}}
    assert (await client.post("{ jobs { results { id } cursor } }"))[1] == {
        "data": {"jobs": {"results": [], "cursor": None}}
    }


# -- listing (§5) ---------------------------------------------------------------------------------------------


async def test_jobs_are_listed_newest_first_in_pages_of_25(client: Client) -> None:
    """``jobs`` pages newest first, 25 at a time, with an opaque cursor; the last page's cursor is null."""
    ids = [await client.submit(t=[f"n{i}"]) for i in range(30)]
    query = "query($c: Cursor) { jobs(cursor: $c) { results { id } cursor } }"
    _, first = await client.post(query)
    page = first["data"]["jobs"]
    assert [j["id"] for j in page["results"]] == ids[::-1][:25]
    assert isinstance(page["cursor"], str)
    _, second = await client.post(query, {"c": page["cursor"]})
    assert [j["id"] for j in second["data"]["jobs"]["results"]] == ids[::-1][25:]
    assert second["data"]["jobs"]["cursor"] is None


async def test_a_forged_cursor_is_an_error(client: Client) -> None:
    """A cursor the server did not make answers ``Invalid cursor`` and a null ``jobs`` (data null)."""
    _, answer = await client.post('{ jobs(cursor: "bm90LWEtY3Vyc29y") { cursor } }')
    assert answer == {"errors": [{"message": "Invalid cursor", "path": ["jobs"]}], "data": None}


# -- logs (§7) ------------------------------------------------------------------------------------------------


async def test_logs_appear_when_the_runner_writes_them(srht: FakeSourcehut, client: Client) -> None:
    """Before a runner: 404 "not started"; then the setup log; a task's log 404 until the task starts."""
    job_id = await client.submit()
    setup = f"/query/log/{job_id}/log"
    status, body, _ = await client.get(setup)
    assert (status, body) == (404, b"This build job has not been started yet\r\n")
    srht.pick_up(job_id, setup_log="booting\r\n")
    _, answer = await client.post(
        f"{{ job(id: {job_id}) {{ log {{ fullURL }} tasks {{ log {{ fullURL }} }} }} }}"
    )
    job = answer["data"]["job"]
    assert job["log"]["fullURL"] == f"{srht.url}{setup}"
    assert job["tasks"][0]["log"]["fullURL"] == f"{srht.url}/query/log/{job_id}/build/log"
    status, body, headers = await client.get(setup)
    assert (status, body) == (200, b"booting\r\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert (await client.get(f"/query/log/{job_id}/build/log"))[0] == 404
    srht.start_task(job_id, "build", log="make\r\n")
    assert (await client.get(f"/query/log/{job_id}/build/log"))[:2] == (200, b"make\r\n")
    assert (await client.get("/query/log/999/log"))[:2] == (404, b"Unknown build job\r\n")


async def test_log_ranges_follow_a_growing_file(srht: FakeSourcehut, client: Client) -> None:
    """``Range: bytes=N-`` answers 206 with the new bytes, and 416 once nothing is new."""
    job_id = await client.submit()
    srht.pick_up(job_id)
    srht.start_task(job_id, "build", log="one\r\n")
    path = f"/query/log/{job_id}/build/log"
    status, body, headers = await client.get(path, Range="bytes=0-")
    assert (status, body, headers["Content-Range"]) == (206, b"one\r\n", "bytes 0-4/5")
    status, _, headers = await client.get(path, Range="bytes=5-")
    assert (status, headers["Content-Range"]) == (416, "bytes */5")
    srht.append_task_log(job_id, "build", "two\r\n")
    status, body, headers = await client.get(path, Range="bytes=5-")
    assert (status, body, headers["Content-Range"]) == (206, b"two\r\n", "bytes 5-9/10")
    status, body, _ = await client.get(path, Range="bytes=-3")
    assert (status, body) == (206, b"o\r\n")


async def test_log_head_and_auth(srht: FakeSourcehut, client: Client) -> None:
    """HEAD gives the size without a body; the log URLs need the bearer token like /query."""
    job_id = await client.submit()
    srht.pick_up(job_id, setup_log="12345")
    async with client.session.head(
        f"{srht.url}/query/log/{job_id}/log", headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    ) as resp:
        assert (resp.status, resp.headers["Content-Length"], await resp.read()) == (200, "5", b"")
    status, body, _ = await client.get(f"/query/log/{job_id}/log", Authorization="")
    assert status == 401
    assert b"Authorization header is required" in body


async def test_last128kib_of_an_unstarted_task_nulls_its_log(srht: FakeSourcehut, client: Client) -> None:
    """Asking for ``last128KiB`` of a task with no log file yet gives a null log; ``fullURL`` alone does not."""
    job_id = await client.submit()
    srht.pick_up(job_id)
    _, answer = await client.post(
        f"{{ job(id: {job_id}) {{ tasks {{ a: log {{ fullURL }} b: log {{ last128KiB }} }} }} }}"
    )
    first = answer["data"]["job"]["tasks"][0]
    assert first == {"a": {"fullURL": f"{srht.url}/query/log/{job_id}/build/log"}, "b": None}


async def test_last128kib_is_the_log_tail(srht: FakeSourcehut, client: Client) -> None:
    """``last128KiB`` holds at most the final 128 KiB of the log."""
    job_id = await client.submit()
    srht.pick_up(job_id, setup_log="a" * 10 + "b" * 131072)
    _, answer = await client.post(f"{{ job(id: {job_id}) {{ log {{ last128KiB }} }} }}")
    assert answer["data"]["job"]["log"]["last128KiB"] == "b" * 131072


# -- faults (§12) -----------------------------------------------------------------------------------------------


async def test_fail_next_before_effect_creates_nothing(srht: FakeSourcehut, client: Client) -> None:
    """A 500 injected before the effect: plain-text error, no job; the next submit works."""
    srht.fail_next("submit", status=500)
    status, body = await client.post(SUBMIT, {"m": MANIFEST})
    assert (status, body) == (500, "Internal Server Error\n")
    assert srht.jobs == []
    await client.submit()
    assert len(srht.jobs) == 1


async def test_fail_next_after_effect_hides_a_created_job(srht: FakeSourcehut, client: Client) -> None:
    """A 502 after the effect: the client sees an error although the job exists."""
    srht.fail_next("submit", status=502, after_effect=True)
    status, _ = await client.post(SUBMIT, {"m": MANIFEST, "t": ["tack", "wf-7"]})
    assert status == 502
    (job,) = srht.jobs
    assert job.tags == ["tack", "wf-7"]


async def test_rate_limit_fault_carries_retry_after(srht: FakeSourcehut, client: Client) -> None:
    """An injected 429 carries the given Retry-After and only hits the chosen operation."""
    srht.fail_next("job", status=429, retry_after=7, count=2)
    await client.submit()
    async with client.session.post(
        f"{srht.url}/query",
        json={"query": "{ job(id: 1) { id } }"},
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
    ) as resp:
        assert (resp.status, resp.headers["Retry-After"]) == (429, "7")
    assert (await client.post("{ job(id: 1) { id } }"))[0] == 429
    assert (await client.post("{ job(id: 1) { id } }"))[0] == 200


async def test_rate_limit_window_answers_429_per_token(srht: FakeSourcehut, client: Client) -> None:
    """With ``rate_limit`` set, requests over the window's allowance answer 429 with Retry-After."""
    srht.rate_limit = (2, 60.0)
    assert (await client.post("{ me { username } }"))[0] == 200
    assert (await client.post("{ me { username } }"))[0] == 200
    status, body = await client.post("{ me { username } }")
    assert (status, body) == (429, "Too Many Requests\n")
    assert srht.requests[-1].status == 429
    assert (await client.get("/query/log/1/log"))[0] == 429
    client.token = OTHER_TOKEN
    assert (await client.post("{ me { username } }"))[0] == 200


async def test_dropped_submit_answer_still_creates_the_job(srht: FakeSourcehut, client: Client) -> None:
    """``drop_next``: the job is created and the connection is cut before any answer."""
    srht.drop_next("submit")
    with pytest.raises(aiohttp.ClientError):
        await client.post(SUBMIT, {"m": MANIFEST, "t": ["tack", "wf-9"]})
    (job,) = srht.jobs
    assert job.tags == ["tack", "wf-9"]
    assert srht.ops("submit")[-1].status == 0


async def test_stalled_submit_times_out_after_the_job_exists(srht: FakeSourcehut, client: Client) -> None:
    """``stall_next``: the job exists while the client is still waiting, so a client timeout loses the answer."""
    srht.stall_next("submit", seconds=60)
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    with pytest.raises(TimeoutError):
        async with client.session.post(
            f"{srht.url}/query",
            json={"query": SUBMIT, "variables": {"m": MANIFEST}},
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=0.5),
        ):
            pass
    assert len(srht.jobs) == 1


async def test_delayed_submit_has_no_effect_yet(srht: FakeSourcehut, client: Client) -> None:
    """``delay_next``: a client that gives up during the delay has created nothing so far."""
    srht.delay_next("submit", seconds=60)
    with pytest.raises(TimeoutError):
        async with client.session.post(
            f"{srht.url}/query",
            json={"query": SUBMIT, "variables": {"m": MANIFEST}},
            headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=0.5),
        ):
            pass
    assert srht.jobs == []


# -- autorun (§12) --------------------------------------------------------------------------------------------


async def test_autorun_default_plan_runs_jobs_to_success_with_logs(
    srht: FakeSourcehut, client: Client
) -> None:
    """With ``autorun()`` a submitted job is picked up, runs every task with a log, and succeeds."""
    srht.autorun()
    job_id = await client.submit()
    await srht.wait_for(lambda: srht.job(job_id).finished)
    job = srht.job(job_id)
    assert (job.status, [t.status for t in job.tasks]) == ("SUCCESS", ["SUCCESS"] * 3)
    assert job.setup_log and all(t.log for t in job.tasks)


async def test_autorun_plans_fail_hang_and_time_out(srht: FakeSourcehut, client: Client) -> None:
    """Plans choose per job: a failing task, a task that hangs until cancelled, a timeout."""
    plans = {
        1: JobPlan(fail_task="test"),
        2: JobPlan(hang_task="build"),
        3: JobPlan(timeout_at="deploy"),
        4: JobPlan(pick_up=False),
    }
    srht.autorun(lambda job: plans[job.id])
    ids = [await client.submit() for _ in range(4)]
    await srht.wait_for(lambda: srht.job(1).finished and srht.job(3).finished)
    await srht.wait_for(lambda: srht.job(2).running_task() is not None)
    assert (await job_state(client, ids[0])) == ("FAILED", ["SUCCESS", "FAILED", "PENDING"])
    assert (await job_state(client, ids[2])) == ("TIMEOUT", ["SUCCESS", "SUCCESS", "FAILED"])
    assert (await job_state(client, ids[1]))[0] == "RUNNING"
    assert (await job_state(client, ids[3])) == ("PENDING", ["PENDING"] * 3)
    _, answer = await client.post(f"mutation {{ cancel(jobId: {ids[1]}) {{ status }} }}")
    assert answer == {"data": {"cancel": {"status": "CANCELLED"}}}


# -- manifest triggers (§8) -------------------------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[bytes, dict[str, str]]]]]:
    got: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.read(), dict(request.headers)))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/hook", got
    await runner.cleanup()


def with_trigger(url: str, condition: str) -> str:
    return MANIFEST + f"triggers:\n- action: webhook\n  condition: {condition}\n  url: {url}\n"


async def test_webhook_trigger_is_signed_and_describes_the_job(
    srht: FakeSourcehut, client: Client, receiver: tuple[str, list[tuple[bytes, dict[str, str]]]]
) -> None:
    """A finished job POSTs the runner's JSON, Ed25519-signed over body + nonce with the instance key."""
    url, got = receiver
    job_id = await client.submit(with_trigger(url, "always"), n="push to main")
    srht.run_job(job_id, fail_task="deploy")
    await srht.wait_deliveries_idle()
    ((body, headers),) = got
    assert verify(srht.webhook_public_key, body, headers["X-Payload-Nonce"], headers["X-Payload-Signature"])
    assert not verify(
        srht.webhook_public_key, body + b" ", headers["X-Payload-Nonce"], headers["X-Payload-Signature"]
    )
    data = json.loads(body)
    assert list(data) == ["id", "status", "setup_log", "tasks", "note", "runner", "owner"]
    assert (data["id"], data["status"], data["note"]) == (job_id, "failed", "push to main")
    assert [(t["name"], t["status"]) for t in data["tasks"]] == [
        ("build", "success"),
        ("test", "success"),
        ("deploy", "failed"),
    ]
    assert data["tasks"][0]["log"] == f"http://{srht.job(job_id).runner}/logs/{job_id}/build/log"
    assert data["owner"] == {"canonical_name": "~tack", "name": "tack"}
    assert srht.deliveries[0].status == 200


async def test_trigger_conditions(
    srht: FakeSourcehut, client: Client, receiver: tuple[str, list[tuple[bytes, dict[str, str]]]]
) -> None:
    """``success`` fires only on SUCCESS; ``failure`` on FAILED, TIMEOUT and CANCELLED."""
    url, got = receiver
    ok_on_fail = await client.submit(with_trigger(url, "success"))
    srht.run_job(ok_on_fail, fail_task="build")
    fail_on_timeout = await client.submit(with_trigger(url, "failure"))
    srht.pick_up(fail_on_timeout)
    srht.time_out(fail_on_timeout)
    ok_on_success = await client.submit(with_trigger(url, "success"))
    srht.run_job(ok_on_success)
    await srht.wait_deliveries_idle()
    assert sorted(json.loads(body)["id"] for body, _ in got) == [fail_on_timeout, ok_on_success]


async def test_tack_grants_are_enough_for_what_tack_does(srht: FakeSourcehut, client: Client) -> None:
    """With exactly JOBS:RW and LOGS:RO a client submits, reads status and log URLs, lists and cancels."""
    token = "TackScopedToken0123456789abcdefghijklmnopqr"
    srht.add_token(token, "tack", TACK_GRANTS)
    client.token = token
    job_id = await client.submit()
    srht.pick_up(job_id)
    srht.start_task(job_id, "build")
    status, answer = await client.post(
        f"{{ job(id: {job_id}) {{ status log {{ fullURL }} tasks {{ name status log {{ fullURL }} }} }}"
        " jobs { results { id tags } } }"
    )
    assert status == 200 and "errors" not in answer, answer
    assert (await client.post(f"mutation {{ cancel(jobId: {job_id}) {{ status }} }}"))[1] == {
        "data": {"cancel": {"status": "CANCELLED"}}
    }
    assert (await client.get(f"/query/log/{job_id}/build/log"))[0] == 200


async def test_imports_without_pytest() -> None:
    """The sandbox can import the fake in a process where pytest cannot be imported."""
    code = "import sys; sys.modules['pytest'] = None; import tests.fakes.sourcehut as f; print(f.FakeSourcehut.__name__)"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert (proc.returncode, out.strip()) == (0, b"FakeSourcehut"), err.decode()
