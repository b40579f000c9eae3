"""The provider store: idempotent runs and the durable, sequenced status outbox (tack_provider_kit.store)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import cast

import pytest

from tack_common import status as st
from tack_common.pb import provider_pb2 as pb
from tack_common.sqlite import Schema, schema_version
from tack_provider_kit.store import SCHEMA, V1, ProviderStore, RunKey


# store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProviderStore]:
    s = ProviderStore(str(tmp_path / "state" / "provider.db"), provider="unit")
    try:
        yield s
    finally:
        s.close()


def key(workflow: str = "build.yml", rkey: str = "3kabc") -> RunKey:
    """A run key on the test knot."""
    return RunKey("knot.test", rkey, workflow)


def test_run_key_round_trips_protobuf() -> None:
    """RunKey converts to and from WorkflowKey and prints as knot/rkey/workflow."""
    k = key()
    assert RunKey.from_pb(k.to_pb()) == k
    assert str(k) == "knot.test/3kabc/build.yml"


def test_store_create_is_idempotent_and_publishes_one_pending(store: ProviderStore) -> None:
    """create makes pending runs once; a repeat returns the run unchanged and publishes nothing."""
    first = store.create([(key("a.yml"), {"n": 1}), (key("b.yml"), {"n": 2})])
    assert [(run.key.workflow, run.status, run.data, created) for run, created in first] == [
        ("a.yml", st.PENDING, {"n": 1}, True),
        ("b.yml", st.PENDING, {"n": 2}, True),
    ]
    again = store.create([(key("a.yml"), {"n": 99}), (key("c.yml"), {})])
    assert [(run.key.workflow, run.data, created) for run, created in again] == [
        ("a.yml", {"n": 1}, False),
        ("c.yml", {}, True),
    ]
    updates = store.updates_after(0)
    assert [(u.key.workflow, u.status) for u in updates] == [
        ("a.yml", st.PENDING),
        ("b.yml", st.PENDING),
        ("c.yml", st.PENDING),
    ]
    assert store.get(key("missing.yml")) is None


def test_store_set_status_moves_only_forward(store: ProviderStore) -> None:
    """set_status publishes forward moves only, unless allow_regression; failed keeps error and exit code."""
    [(run, _)] = store.create([(key(), {})])
    assert store.set_status(run.id, st.RUNNING)
    assert not store.set_status(run.id, st.RUNNING)
    assert not store.set_status(run.id, st.PENDING)
    assert store.set_status(run.id, st.FAILED, "step 'x' failed", 3)
    assert not store.set_status(run.id, st.SUCCESS)
    assert not store.set_status(run.id, st.CANCELLED)
    current = store.get_by_id(run.id)
    assert current is not None
    assert (current.status, current.error, current.exit_code, current.terminal) == (
        st.FAILED,
        "step 'x' failed",
        3,
        True,
    )
    assert store.set_status(run.id, st.RUNNING, allow_regression=True)
    updates = store.updates_after(0)
    assert [u.status for u in updates] == [st.PENDING, st.RUNNING, st.FAILED, st.RUNNING]
    failed = updates[2]
    assert failed.error == "step 'x' failed" and failed.HasField("exit_code") and failed.exit_code == 3
    assert not updates[1].HasField("exit_code")
    with pytest.raises(KeyError):
        store.set_status(run.id + 100, st.RUNNING)


def test_store_set_status_replaces_data_even_without_a_move(store: ProviderStore) -> None:
    """data given to set_status is stored whether or not the status moves."""
    [(run, _)] = store.create([(key(), {"v": 0})])
    assert not store.set_status(run.id, st.PENDING, data={"v": 1})
    got = store.get_by_id(run.id)
    assert got is not None and got.data == {"v": 1}
    store.update_data(run.id, {"v": 2})
    got = store.get_by_id(run.id)
    assert got is not None and got.data == {"v": 2}


def test_store_active_lists_unfinished_runs_oldest_first(store: ProviderStore) -> None:
    """active returns pending and running runs, oldest first, and no terminal ones."""
    runs = [run for run, _ in store.create([(key(f"{i}.yml"), {}) for i in range(4)])]
    store.set_status(runs[1].id, st.RUNNING)
    store.set_status(runs[2].id, st.SUCCESS)
    assert [run.key.workflow for run in store.active()] == ["0.yml", "1.yml", "3.yml"]


def test_store_seq_strictly_increases_and_survives_reopening(tmp_path: Path) -> None:
    """seq strictly increases, last_seq reports it, and reopening the file neither resets nor reuses it."""
    path = str(tmp_path / "p.db")
    store = ProviderStore(path)
    assert store.last_seq() == 0
    [(run, _)] = store.create([(key(), {})])
    store.set_status(run.id, st.RUNNING)
    store.set_status(run.id, st.SUCCESS)
    seqs = [u.seq for u in store.updates_after(0)]
    assert seqs == sorted(set(seqs)) and len(seqs) == 3
    assert store.last_seq() == seqs[-1]
    store.prune(older_than_ns=2**62)
    assert store.updates_after(0) == []
    store.close()

    reopened = ProviderStore(path)
    try:
        assert reopened.last_seq() == seqs[-1]
        reopened.create([(key("next.yml"), {})])
        [update] = reopened.updates_after(0)
        assert update.seq == seqs[-1] + 1
        assert reopened.updates_after(seqs[-1]) == [update]
    finally:
        reopened.close()


def test_store_updates_after_pages_with_limit(store: ProviderStore) -> None:
    """updates_after returns at most ``limit`` updates strictly after the given seq."""
    store.create([(key(f"{i}.yml"), {}) for i in range(5)])
    first = store.updates_after(0, limit=2)
    rest = store.updates_after(first[-1].seq, limit=10)
    assert [u.key.workflow for u in first + rest] == [f"{i}.yml" for i in range(5)]


def test_store_prune_keeps_unfinished_runs(store: ProviderStore) -> None:
    """prune forgets old terminal runs and old updates but keeps pending and running runs."""
    runs = [run for run, _ in store.create([(key(f"{i}.yml"), {}) for i in range(3)])]
    store.set_status(runs[0].id, st.RUNNING)
    store.set_status(runs[1].id, st.SUCCESS)
    removed_runs, removed_updates = store.prune(older_than_ns=2**62)
    assert removed_runs == 1
    assert removed_updates == 5
    assert store.get(runs[1].key) is None
    assert [run.key.workflow for run in store.active()] == ["0.yml", "2.yml"]


def test_store_prune_keeps_recent_terminal_runs(store: ProviderStore) -> None:
    """prune with a cutoff before the run's last change keeps it and its updates."""
    [(run, _)] = store.create([(key(), {})])
    store.set_status(run.id, st.SUCCESS)
    assert store.prune(older_than_ns=run.created_ns - 1) == (0, 0)
    assert store.get(run.key) is not None


def test_store_schema_is_extensible(tmp_path: Path) -> None:
    """A provider's extension schema is migrated alongside the store's own tables, with its own version."""
    extension = Schema("extra", ("CREATE TABLE extra (v INTEGER);", "ALTER TABLE extra ADD COLUMN w TEXT;"))
    store = ProviderStore(str(tmp_path / "x.db"), extension=extension)
    assert schema_version(store.conn, "extra") == 2 and schema_version(store.conn) == SCHEMA.version
    store.close()
    store = ProviderStore(str(tmp_path / "x.db"), extension=extension)
    try:
        store.conn.execute("INSERT INTO extra (v) VALUES (1)")
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute(
                "INSERT INTO runs (knot, pipeline_rkey, workflow, status, created_ns, updated_ns)"
                " VALUES ('k', 'r', 'w', 1, 0, 0), ('k', 'r', 'w', 1, 0, 0)"
            )
    finally:
        store.close()


async def test_store_watch_replays_then_follows(store: ProviderStore) -> None:
    """watch yields stored updates after after_seq, then new ones as they are published, and idles empty."""
    runs = [run for run, _ in store.create([(key("a.yml"), {}), (key("b.yml"), {})])]
    first_seq = store.updates_after(0)[0].seq
    watch = cast(AsyncGenerator[list[pb.StatusUpdate], None], store.watch(first_seq, idle=0.05))
    try:
        replayed = await asyncio.wait_for(anext(watch), 2)
        assert [(u.key.workflow, u.status) for u in replayed] == [("b.yml", st.PENDING)]

        async def publish() -> None:
            await asyncio.sleep(0.01)
            store.set_status(runs[0].id, st.RUNNING)

        publisher = asyncio.create_task(publish())
        live = await asyncio.wait_for(anext(watch), 2)
        await publisher
        assert [(u.key.workflow, u.status) for u in live] == [("a.yml", st.RUNNING)]
        assert live[0].seq > replayed[-1].seq
        assert await asyncio.wait_for(anext(watch), 2) == []
    finally:
        await watch.aclose()


def test_a_database_of_the_first_release_opens_and_keeps_its_runs(tmp_path: Path) -> None:
    """A store made before schema versions (user_version 0, tables present) is adopted at version 1, rows kept."""
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    old.executescript(V1)
    old.execute(
        "INSERT INTO runs (knot, pipeline_rkey, workflow, status, created_ns, updated_ns)"
        " VALUES ('k', 'r', 'w.yml', 1, 5, 5)"
    )
    old.commit()
    old.close()
    store = ProviderStore(path)
    try:
        assert schema_version(store.conn) == SCHEMA.version
        assert store.get(RunKey("k", "r", "w.yml")) is not None
    finally:
        store.close()
