"""A log viewer's reads of builds.sr.ht log files, against the fake: how often it reads."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tack_provider_kit.pacing import Pacer
from tack_provider_kit.store import ProviderStore
from tack_provider_sourcehut.api import SourcehutClient
from tack_provider_sourcehut.logs import LogView
from tack_provider_sourcehut.runs import SCHEMA, RunBook
from tack_provider_sourcehut.tracker import Tracker
from tests.fakes.sourcehut import DEFAULT_TOKEN, FakeSourcehut
from tests.support.sourcehut_harness import manifest, submit


async def test_a_viewer_reads_its_log_when_its_own_job_is_read_not_when_any_job_is(tmp_path: Path) -> None:
    """Reads of other runs' jobs wake every viewer; only a new read of the viewer's own job (or its interval)
    makes it read its log file again, so viewers do not spend the request budget as fast as jobs are polled."""
    store = ProviderStore(str(tmp_path / "s.db"), extension=SCHEMA)
    async with FakeSourcehut() as fake:
        client = SourcehutClient(fake.url, DEFAULT_TOKEN, Pacer(6000))
        tracker = Tracker(store, RunBook(store), client, poll_interval=60.0, log_interval=60.0)
        job_id = await submit(fake, manifest("build"))
        fake.pick_up(job_id, setup_log="booting\r\n")
        url = f"{fake.url}/query/log/{job_id}/log"

        def read_of_my_job() -> dict[str, object]:
            return {"id": job_id, "status": "RUNNING", "log": {"fullURL": url}, "tasks": []}

        tracker.jobs[1] = read_of_my_job()
        view = LogView(client, tracker, 1, ["build"], 60.0, lambda: False)
        lines: list[str] = []

        async def follow() -> None:
            async for chunk in view.stream():
                lines.extend(line.content for line in chunk)

        viewer = asyncio.create_task(follow())
        try:
            await fake.wait_for(lambda: "booting" in lines)
            reads = len(fake.ops("log"))
            for other in range(2, 22):
                tracker.jobs[other] = {"id": 1000 + other, "status": "RUNNING"}
                tracker.changed.notify()
                await asyncio.sleep(0)
            await asyncio.sleep(0.2)
            assert len(fake.ops("log")) == reads
            fake.append_setup_log(job_id, "installing\r\n")
            tracker.jobs[1] = read_of_my_job()
            tracker.changed.notify()
            await fake.wait_for(lambda: "installing" in lines)
            assert len(fake.ops("log")) == reads + 1
        finally:
            viewer.cancel()
            await asyncio.gather(viewer, return_exceptions=True)
            await client.close()
            store.close()


def test_the_token_goes_only_to_the_configured_instance() -> None:
    """The API's log proxy URLs are read on the configured instance (whatever origin the answer named) with
    the token; a runner's own file server URL (older builds.sr.ht) is read as given, without it."""
    client = SourcehutClient("http://builds.internal:5002", "secret", Pacer(60))
    assert client.log_request("https://builds.example.org/query/log/7/build/log") == (
        "http://builds.internal:5002/query/log/7/build/log",
        True,
    )
    assert client.log_request("http://builds.internal:5002/query/log/7/log") == (
        "http://builds.internal:5002/query/log/7/log",
        True,
    )
    assert client.log_request("http://runner1.example.org/logs/7/log") == (
        "http://runner1.example.org/logs/7/log",
        False,
    )
