"""triggerPipeline and cancelPipeline (tack_control.web.ci.actions): bad input, failures of what they call.

The whole control plane application served in the test's event loop, callers with real signed tokens whose
keys a fake PLC serves, one repository registered in its database; nothing here reaches a knot.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tack_control import metrics
from tack_control.ingest.minting import LoadFailed
from tests.fakes.atproto import FakePlc
from tests.support.atproto import Account
from tests.support.ci import HOST, KNOT, Spindle, sha


TRIGGER = "sh.tangled.ci.triggerPipeline"
CANCEL = "sh.tangled.ci.cancelPipeline"
REPO = "did:plc:repo" + "2" * 20
OWNER = "did:plc:owner" + "3" * 19
MANUAL = "sh.tangled.ci.trigger#manual"
PULL = "sh.tangled.ci.trigger#pullRequest"


class Caller:
    """The spindle in this event loop, and its owner calling it with fresh tokens."""

    def __init__(self, spindle: Spindle, owner: Account) -> None:
        self.spindle = spindle
        self.owner = owner

    async def post(self, nsid: str, body: Any) -> tuple[int, Any]:
        """POST with a fresh token of the owner: (status, JSON body or None)."""
        headers = {"Authorization": f"Bearer {self.owner.token(nsid)}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.spindle.url}/xrpc/{nsid}", json=body, headers=headers) as resp,
        ):
            raw = await resp.read()
            return resp.status, (await resp.json(content_type=None)) if raw else None

    def pipelines(self) -> int:
        """How many pipelines tack holds."""
        return int(self.spindle.core.conn.execute("SELECT COUNT(*) FROM pipelines").fetchone()[0])


@pytest.fixture
async def caller(tmp_path: Path, plc: FakePlc) -> AsyncIterator[Caller]:
    """The control plane with repository REPO of OWNER registered and verified; OWNER's key on the PLC."""
    owner = plc.publish(Account(did=OWNER, pds="http://127.0.0.1:9"))  # no PDS: nothing is read from it
    async with Spindle(tmp_path, {}, plc_url=plc.url, owner_did=OWNER) as spindle:
        with spindle.core.book.transaction() as conn:
            conn.execute(
                "INSERT INTO repos (did, rkey, name, knot, spindle, repo_did, state) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (OWNER, "hello", "hello", KNOT, HOST, REPO, "verified"),
            )
        yield Caller(spindle, owner)


def manual(**fields: Any) -> dict[str, Any]:
    """A triggerPipeline body with a #manual trigger of ``fields``."""
    return {"repo": REPO, "trigger": {"$type": MANUAL, "sha": sha(1), **fields}}


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ([], "InvalidRequest", "the body must be a JSON object"),
        ({"repo": REPO}, "InvalidRequest", "trigger: required"),
        (
            {"repo": REPO, "trigger": {"$type": "sh.tangled.ci.trigger#push"}},
            "InvalidRequest",
            "unsupported trigger",
        ),
        ({**manual(), "repo": "hello"}, "InvalidRequest", "repo: the repository's DID"),
        (manual(sha="abc"), "InvalidRequest", "trigger.sha: a 40- or 64-hex commit id"),
        (manual(ref="refs/heads/a\nb"), "InvalidRequest", "trigger.ref: no control characters"),
        (manual(inputs=[{"key": "A"}]), "InvalidRequest", "trigger.inputs[0].value"),
        ({**manual(), "workflows": ["x.yml"] * 51}, "InvalidRequest", "workflows: a list of at most 50"),
        ({**manual(sourceRepo="fork"), "repo": REPO}, "InvalidRequest", "trigger.sourceRepo: not a DID"),
        (
            {
                "repo": REPO,
                "trigger": {"$type": PULL, "sourceSha": sha(1), "targetBranch": "main", "action": "edit"},
            },
            "InvalidRequest",
            "trigger.action: one of closed, merged, opened, reopened, synchronize",
        ),
        (
            {
                "repo": REPO,
                "trigger": {"$type": PULL, "sourceSha": sha(1), "targetBranch": "main", "pull": "x"},
            },
            "InvalidRepo",
            "trigger.pull: the AT-URI of a sh.tangled.repo.pull record",
        ),
        (
            {"repo": REPO, "trigger": {"$type": PULL, "sourceSha": sha(1)}},
            "InvalidRequest",
            "trigger.targetBranch",
        ),
    ],
)
async def test_malformed_triggers_are_400_naming_the_field_and_run_nothing(
    caller: Caller, body: Any, error: str, message: str
) -> None:
    """Each malformed triggerPipeline body is 400 with an XRPC error naming what is wrong; no pipeline is made."""
    status, answer = await caller.post(TRIGGER, body)
    assert (status, answer["error"]) == (400, error), answer
    assert message in answer["message"]
    assert caller.pipelines() == 0


async def test_a_knot_that_cannot_serve_the_commit_is_502_or_400_with_the_reason(
    caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading the workflows fails: a knot that may answer later is 502 UpstreamFailure, a commit it cannot
    give is 400 InvalidRequest; both name the reason and write nothing."""

    async def unreachable(knot: str, repo_did: str, commit: str) -> list[tuple[str, str]]:
        raise LoadFailed("connection refused (unreachable)", transient=True)

    async def missing(knot: str, repo_did: str, commit: str) -> list[tuple[str, str]]:
        raise LoadFailed("the knot did not send the commit (not_found)")

    monkeypatch.setattr(caller.spindle.core, "load_workflows", unreachable)
    status, answer = await caller.post(TRIGGER, manual())
    assert (status, answer["error"]) == (502, "UpstreamFailure")
    assert "connection refused (unreachable)" in answer["message"] and KNOT in answer["message"]
    monkeypatch.setattr(caller.spindle.core, "load_workflows", missing)
    status, answer = await caller.post(TRIGGER, manual())
    assert (status, answer["error"]) == (400, "InvalidRequest")
    assert (
        answer["message"]
        == f"cannot load .tangled/workflows at {sha(1)}: the knot did not send the commit (not_found)"
    )
    assert caller.pipelines() == 0


async def test_an_unforeseen_failure_is_a_logged_and_counted_500_in_xrpc_form(
    caller: Caller, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug below the handler answers 500 InternalServerError as JSON (not aiohttp's text page), logged with its
    traceback once and counted under the method."""

    async def broken(knot: str, repo_did: str, commit: str) -> list[tuple[str, str]]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(caller.spindle.core, "load_workflows", broken)
    before = metrics.CI_REQUESTS.labels(TRIGGER, "500")._value.get()
    with caplog.at_level(logging.ERROR, logger="tack_control.web.ci.actions"):
        status, answer = await caller.post(TRIGGER, manual())
    assert (status, answer["error"]) == (500, "InternalServerError")
    assert "disk on fire" not in answer["message"]
    [record] = [r for r in caplog.records if r.getMessage() == "ci call failed"]
    assert record.exc_info is not None and "disk on fire" in str(record.exc_info[1])
    assert metrics.CI_REQUESTS.labels(TRIGGER, "500")._value.get() == before + 1


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (
            {"repo": REPO, "pipeline": "at://did:web:x/sh.tangled.pipeline/nope"},
            "InvalidRequest",
            "pipeline:",
        ),
        (
            {"repo": REPO, "pipeline": "3mzzzzzzzzzz2", "workflow": 3},
            "InvalidRequest",
            "workflow: a workflow name",
        ),
        (
            {"repo": "at://nobody", "pipeline": "3mzzzzzzzzzz2"},
            "InvalidRepo",
            "expected at://<did>/sh.tangled.repo/",
        ),
        ({"repo": "hello", "pipeline": "3mzzzzzzzzzz2"}, "InvalidRequest", "repo: a repo DID or the AT-URI"),
        ({"repo": REPO, "pipeline": "3mzzzzzzzzzz2"}, "PipelineNotFound", "no pipeline 3mzzzzzzzzzz2"),
        (
            {"repo": "did:plc:elsewhere" + "4" * 15, "pipeline": "3mzzzzzzzzzz2"},
            "RepoNotFound",
            "not a repository",
        ),
    ],
)
async def test_malformed_or_unknown_cancels_are_400(
    caller: Caller, body: Any, error: str, message: str
) -> None:
    """Each bad cancelPipeline body is 400 with an XRPC error naming what is wrong."""
    status, answer = await caller.post(CANCEL, body)
    assert (status, answer["error"]) == (400, error), answer
    assert message in answer["message"]


def test_the_repo_row_is_what_the_registry_trusts(caller: Caller) -> None:
    """The fixture's repository is the verified one the owner may push to (so the tests above reach their checks)."""
    registry = caller.spindle.core.registry
    assert registry.may_push(REPO, OWNER)
    assert not registry.may_push(REPO, "did:plc:stranger0000000000000000")
