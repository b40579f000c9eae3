"""Log views of builds and jobs, the feed and log reads scripted (tack_provider_buildkite.logs)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from multidict import CIMultiDict

from tack_common.pb import provider_pb2 as pb
from tack_provider_buildkite.api import Reply
from tack_provider_buildkite.logs import BuildFeed, JobTail, LogView, Shared


SHA = "5cf26b27727eb6a0ebdc139cf6d39907372cf565"
BASE_ENV = {
    "TACK_BUILDKITE_TOKEN": "bk-secret",
    "TACK_BUILDKITE_ORG": "acme",
    "TACK_BUILDKITE_WEBHOOK_SECRET": "s",
}


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
