"""The simulated Jetstream follows Jetstream's subscribe contract (tack_sandbox.jetstream)."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest

from tack_common.tid import is_tid
from tack_sandbox.jetstream import SimulatedJetstream
from tests.support.wsclient import (
    DID,
    recv_json,
)


# Jetstream


def jetstream_url(sim: SimulatedJetstream, query: str) -> str:
    return f"{sim.url}?{query}"


async def test_jetstream_without_cursor_streams_live_only(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession
) -> None:
    """Jetstream sends only events published after the connection when no cursor is given."""
    jetstream.commit(DID, "sh.tangled.repo", "old", "create", {"name": "a"})
    async with session.ws_connect(jetstream_url(jetstream, "wantedCollections=sh.tangled.repo")) as ws:
        await jetstream.wait_connected()
        jetstream.commit(DID, "sh.tangled.repo", "new", "create", {"name": "b"})
        event = await recv_json(ws)
    assert event["commit"] == {
        "rev": event["commit"]["rev"],
        "operation": "create",
        "collection": "sh.tangled.repo",
        "rkey": "new",
        "record": {"name": "b"},
        "cid": event["commit"]["cid"],
    }
    assert list(event) == ["did", "time_us", "kind", "commit"]


async def test_jetstream_replays_from_cursor_inclusive_then_goes_live(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession
) -> None:
    """Jetstream replays events with time_us >= cursor, then streams live events, in order."""
    first = jetstream.commit(DID, "sh.tangled.repo", "a", "create", {"n": 1})
    second = jetstream.commit(DID, "sh.tangled.repo", "b", "update", {"n": 2})
    query = f"cursor={second['time_us']}&wantedCollections=sh.tangled.repo"
    async with session.ws_connect(jetstream_url(jetstream, query)) as ws:
        assert (await recv_json(ws))["time_us"] == second["time_us"]
        third = jetstream.commit(DID, "sh.tangled.repo", "a", "delete")
        live = await recv_json(ws)
    assert live["time_us"] == third["time_us"] > second["time_us"] > first["time_us"]
    assert live["commit"] == {
        "rev": third["commit"]["rev"],
        "operation": "delete",
        "collection": "sh.tangled.repo",
        "rkey": "a",
    }
    assert jetstream.connect_queries == [query]
    assert jetstream.connect_cursors == [str(second["time_us"])]


async def test_jetstream_filters_collections_but_passes_account_events(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession
) -> None:
    """wantedCollections (exact or .* prefix) filters commits only; identity/account events always pass."""
    query = "wantedCollections=sh.tangled.spindle.member&wantedCollections=sh.tangled.repo.*"
    async with session.ws_connect(jetstream_url(jetstream, query)) as ws:
        await jetstream.wait_connected()
        jetstream.commit(DID, "app.bsky.feed.post", "p", "create", {"text": "hi"})
        jetstream.commit(DID, "sh.tangled.repo", "r", "create", {"name": "x"})
        jetstream.commit(DID, "sh.tangled.repo.collaborator", "c", "create", {"subject": DID})
        jetstream.publish({"did": DID, "kind": "identity", "identity": {"did": DID, "handle": "a.test"}})
        jetstream.commit(DID, "sh.tangled.spindle.member", "m", "create", {"subject": DID})
        events = [await recv_json(ws) for _ in range(3)]
    kinds = [(e["kind"], e.get("commit", {}).get("rkey")) for e in events]
    assert kinds == [("commit", "c"), ("identity", None), ("commit", "m")]


async def test_jetstream_filters_wanted_dids(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession
) -> None:
    """wantedDids drops every event whose author is not listed."""
    other = "did:plc:someoneelse"
    async with session.ws_connect(jetstream_url(jetstream, f"wantedDids={DID}")) as ws:
        await jetstream.wait_connected()
        jetstream.commit(other, "sh.tangled.repo", "x", "create", {})
        jetstream.publish({"did": other, "kind": "account", "account": {"active": True}})
        jetstream.commit(DID, "sh.tangled.repo", "y", "create", {})
        assert (await recv_json(ws))["did"] == DID


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("cursor=12abc", "invalid cursor: 12abc"),
        ("cursor=99999999999999999999", "invalid cursor: 99999999999999999999"),
        ("wantedCollections=not-an-nsid", "invalid subscriber options: invalid collection: not-an-nsid"),
        ("wantedDids=plc:abc", "invalid subscriber options"),
    ],
)
async def test_jetstream_refuses_malformed_options_with_400(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession, query: str, body: str
) -> None:
    """Jetstream answers 400 with a plain-text reason for a bad cursor, collection or DID."""
    async with session.get(jetstream_url(jetstream, query)) as response:
        assert response.status == 400
        assert await response.text() == body


async def test_jetstream_future_cursor_means_live_only(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession
) -> None:
    """Jetstream treats a cursor in the future as no cursor."""
    jetstream.commit(DID, "sh.tangled.repo", "old", "create", {})
    future = time.time_ns() // 1000 + 3_600_000_000
    async with session.ws_connect(jetstream_url(jetstream, f"cursor={future}")) as ws:
        await jetstream.wait_connected()
        jetstream.commit(DID, "sh.tangled.repo", "new", "create", {})
        assert (await recv_json(ws))["commit"]["rkey"] == "new"


async def test_jetstream_events_are_well_formed_and_strictly_ordered(jetstream: SimulatedJetstream) -> None:
    """Commits carry a TID rev and a CID except deletes; time_us strictly increases; bad input is refused."""
    created = jetstream.commit(DID, "sh.tangled.repo", "r", "create", {"b": 1, "a": 2})
    deleted = jetstream.commit(DID, "sh.tangled.repo", "r", "delete")
    assert list(created["commit"]["record"]) == ["a", "b"]
    assert re.fullmatch(r"bafyrei[a-z2-7]{52}", created["commit"]["cid"])
    assert is_tid(created["commit"]["rev"])
    assert "record" not in deleted["commit"] and "cid" not in deleted["commit"]
    assert deleted["time_us"] > created["time_us"]
    with pytest.raises(ValueError, match="time_us"):
        jetstream.publish({"did": DID, "kind": "account", "time_us": created["time_us"]})
    with pytest.raises(ValueError, match="record"):
        jetstream.commit(DID, "sh.tangled.repo", "r", "create")
    assert len(jetstream.events) == 2


async def test_jetstream_hostile_frames_and_drops_reach_clients(
    jetstream: SimulatedJetstream, session: aiohttp.ClientSession
) -> None:
    """send_raw delivers arbitrary frames and drop_connections aborts every client."""
    async with session.ws_connect(jetstream.url) as ws:
        await jetstream.wait_connected()
        await jetstream.send_raw(b"\x28\xb5\x2f\xfd")
        message = await ws.receive(timeout=2.0)
        assert (message.type, message.data) == (aiohttp.WSMsgType.BINARY, b"\x28\xb5\x2f\xfd")
        await jetstream.drop_connections()
        assert (await ws.receive(timeout=2.0)).type is aiohttp.WSMsgType.CLOSED
    assert jetstream.connections == 0


async def test_jetstream_pings_on_a_fixed_period_even_while_events_flow(
    session: aiohttp.ClientSession,
) -> None:
    """Jetstream pings every ping_interval on a ticker, not only when the connection is idle."""

    async def publish(sim: SimulatedJetstream) -> None:
        for i in range(20):
            sim.commit(DID, "sh.tangled.repo", f"r{i}", "create", {})
            await asyncio.sleep(0.01)

    async with (
        SimulatedJetstream(ping_interval=0.05) as sim,
        session.ws_connect(sim.url, autoping=False) as ws,
    ):
        await sim.wait_connected()
        publisher = asyncio.create_task(publish(sim))
        seen: list[aiohttp.WSMsgType] = []
        while seen.count(aiohttp.WSMsgType.TEXT) < 20:
            seen.append((await ws.receive(timeout=2.0)).type)
        await publisher
    assert aiohttp.WSMsgType.PING in seen[: seen.index(aiohttp.WSMsgType.TEXT, 15)]
