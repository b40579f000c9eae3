"""The webhook store (tack_control.engine.webhooks.WebhookQueue) on a real database: durable, ordered,
bounded per provider with the oldest dropped and counted, and nothing kept when a write fails."""

from __future__ import annotations

import sqlite3

import pytest
from prometheus_client import REGISTRY

from tack_common.faults import FaultInjector
from tack_common.pb import provider_pb2 as pb
from tack_common.supervise import Supervisor
from tack_control.engine.webhooks import WebhookQueue


def delivery(n: int, size: int = 100) -> pb.HandleWebhookRequest:
    return pb.HandleWebhookRequest(method="POST", path="/webhooks/buildkite", body=bytes([n % 256]) * size)


def dropped(provider: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "tack_webhooks_dropped_total", {"provider": provider, "reason": "queue_full"}
        )
        or 0
    )


def test_deliveries_come_out_oldest_first_per_provider(conn: sqlite3.Connection) -> None:
    """Each provider's deliveries are taken in the order they were stored, untouched."""
    queue = WebhookQueue(conn, 1 << 20)
    for n in range(3):
        queue.put("buildkite", delivery(n))
    queue.put("other", delivery(9))
    taken = []
    while (item := queue.oldest("buildkite")) is not None:
        row_id, blob = item
        taken.append(pb.HandleWebhookRequest.FromString(blob).body[0])
        queue.delete(row_id)
    assert taken == [0, 1, 2]
    assert queue.count("other") == 1
    assert set(queue.pending()) == {"other"}


def test_the_store_is_bounded_per_provider_and_drops_the_oldest(conn: sqlite3.Connection) -> None:
    """Past the byte bound a provider's oldest deliveries are dropped and counted; other providers keep theirs."""
    queue = WebhookQueue(conn, 1000)
    before = dropped("flooded")
    queue.put("calm", delivery(0, 500))
    for n in range(10):
        queue.put("flooded", delivery(n, 300))
    assert queue.count("calm") == 1
    kept = []
    while (item := queue.oldest("flooded")) is not None:
        kept.append(pb.HandleWebhookRequest.FromString(item[1]).body[0])
        queue.delete(item[0])
    assert kept == [7, 8, 9]
    assert dropped("flooded") == before + 7


async def test_a_delivery_that_cannot_be_stored_raises_and_leaves_nothing(conn: sqlite3.Connection) -> None:
    """When the database refuses the write the caller learns it (to answer 503) and no partial row stays."""
    queue = WebhookQueue(conn, 1 << 20)
    queue.put("buildkite", delivery(1))
    FaultInjector(Supervisor(), conn).fill_disk(60)
    with pytest.raises(sqlite3.OperationalError):
        queue.put("buildkite", delivery(2, 200_000))
    assert queue.count("buildkite") == 1
    assert not conn.in_transaction
