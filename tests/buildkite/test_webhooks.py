"""Answering forwarded Buildkite deliveries (tack_provider_buildkite.webhooks): a signature's freshness is
measured from when the control plane received the delivery, so one forwarded late is still accepted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tack_common.pb import provider_pb2 as pb
from tack_common.timefmt import timestamp_from_ns
from tack_provider_buildkite.api import BuildkiteClient
from tack_provider_buildkite.ratelimit import RateLimiter
from tack_provider_buildkite.runs import SCHEMA, RunBook
from tack_provider_buildkite.tracker import Tracker
from tack_provider_buildkite.webhooks import WebhookHandler
from tack_provider_kit.store import ProviderStore
from tests.fakes.buildkite import signature_header


SECRET = "bk-webhook-secret"
SIGNED_AT = 1_767_225_600
BODY = b'{"event":"ping"}'


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProviderStore]:
    opened = ProviderStore(str(tmp_path / "bk.db"), extension=SCHEMA)
    yield opened
    opened.close()


def handler(store: ProviderStore, now: float) -> WebhookHandler:
    book = RunBook(store)
    client = BuildkiteClient("http://127.0.0.1:9", "t", RateLimiter(10))
    return WebhookHandler(
        store, book, Tracker(store, book, client, 60), "signature", SECRET, 1 << 20, lambda: now
    )


def delivery(received_at: float | None) -> pb.HandleWebhookRequest:
    request = pb.HandleWebhookRequest(
        method="POST",
        path="/webhooks/buildkite",
        headers=[pb.Header(name="X-Buildkite-Signature", value=signature_header(SECRET, SIGNED_AT, BODY))],
        body=BODY,
    )
    if received_at is not None:
        request.received_at.CopyFrom(timestamp_from_ns(int(received_at * 1e9)))
    return request


@pytest.mark.parametrize(
    ("received_at", "now", "status"),
    [
        (SIGNED_AT + 2, SIGNED_AT + 2, 200),  # forwarded at once
        (SIGNED_AT + 2, SIGNED_AT + 3600, 200),  # stored for an hour while the provider was down
        (None, SIGNED_AT + 3600, 401),  # no receipt time: judged by the provider's clock
        (SIGNED_AT + 3600, SIGNED_AT + 3600, 401),  # signed an hour before tack received it: stale
        (SIGNED_AT + 3600, SIGNED_AT + 2, 200),  # a receipt time later than now counts as now
    ],
)
def test_signature_freshness_counts_from_when_the_control_plane_received_the_delivery(
    store: ProviderStore, received_at: float | None, now: float, status: int
) -> None:
    """A delivery the control plane stored while the provider was down is fresh if it was fresh on receipt."""
    answer = handler(store, now).handle(delivery(received_at))
    assert answer.http_status == status, answer.body
