"""Answering Buildkite's webhook deliveries, forwarded by the control plane.

Checks, in order: method (405), size (413), authenticity (401), JSON (400).
``ping`` and events other than ``build.scheduled/running/failing/finished``
are acknowledged and ignored, as are builds without tack's meta-data. A build
is found by its UUID, else by the run key in its meta-data (adopting it: the
mapping is rebuilt after a crash between create and record). Everything the
delivery changes is stored before the answer; a terminal state is only
noted, to be confirmed by a REST read. An exact replay of a signed delivery
inside the freshness window is answered but not processed again. A signature's
freshness is measured from when the control plane received the delivery
(``received_at``): it stores deliveries while this provider is unreachable and
forwards them later.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from tack_common.pb import provider_pb2 as pb
from tack_common.timefmt import ns_from_timestamp
from tack_provider_buildkite import metrics, webhook_auth
from tack_provider_buildkite.build_request import key_from_meta_data
from tack_provider_buildkite.runs import BuildRef, RunBook
from tack_provider_buildkite.tracker import Tracker
from tack_provider_kit.store import ProviderStore


log = logging.getLogger(__name__)

BUILD_EVENTS = frozenset({"build.scheduled", "build.running", "build.failing", "build.finished"})
REPLAY_MEMORY = 10_000


def _answer(status: int, outcome: str, body: Mapping[str, Any]) -> pb.HandleWebhookResponse:
    metrics.WEBHOOKS.labels(outcome).inc()
    return pb.HandleWebhookResponse(
        http_status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


def _ignored(reason: str) -> pb.HandleWebhookResponse:
    return _answer(200, "ignored", {"ok": True, "ignored": reason})


class WebhookHandler:
    """Authenticates deliveries and applies their build states."""

    def __init__(
        self,
        store: ProviderStore,
        book: RunBook,
        tracker: Tracker,
        mode: str,
        secret: str,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.book = book
        self.tracker = tracker
        self.mode = mode
        self._secret = secret
        self.max_bytes = max_bytes
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def _replayed(self, key: str) -> bool:
        now = self.clock()
        while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) > REPLAY_MEMORY):
            self._seen.popitem(last=False)
        return key in self._seen

    def _remember(self, key: str) -> None:
        if key:
            self._seen[key] = self.clock() + 2 * webhook_auth.TOLERANCE_SECONDS
            self._seen.move_to_end(key)

    def handle(self, request: pb.HandleWebhookRequest) -> pb.HandleWebhookResponse:
        """The answer to one forwarded delivery."""
        if request.method.upper() != "POST":
            return _answer(405, "malformed", {"error": "MethodNotAllowed", "message": "webhooks are POSTed"})
        if len(request.body) > self.max_bytes:
            return _answer(
                413, "too_large", {"error": "TooLarge", "message": f"limit is {self.max_bytes} bytes"}
            )
        headers = [(h.name, h.value) for h in request.headers]
        now = self.clock()
        received = ns_from_timestamp(request.received_at) / 1e9 if request.HasField("received_at") else now
        try:
            replay_key = webhook_auth.authenticate(
                self.mode, headers, request.body, self._secret, min(received, now)
            )
        except webhook_auth.AuthError as exc:
            log.warning("webhook refused", extra={"reason": str(exc), "remote": request.remote_addr})
            return _answer(
                401, "unauthorized", {"error": "Unauthorized", "message": "webhook authentication failed"}
            )
        replay_key = replay_key or next(iter(webhook_auth.header_values(headers, "x-buildkite-request")), "")
        if replay_key and self._replayed(replay_key):
            return _answer(200, "duplicate", {"ok": True, "ignored": "duplicate delivery"})
        try:
            payload = json.loads(request.body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return _answer(400, "malformed", {"error": "BadRequest", "message": "body is not a JSON object"})
        answer = self._apply(payload, webhook_auth.header_values(headers, "x-buildkite-event"))
        self._remember(replay_key)
        return answer

    def _apply(self, payload: dict[str, Any], event_headers: list[str]) -> pb.HandleWebhookResponse:
        event = (
            payload.get("event") if isinstance(payload.get("event"), str) else next(iter(event_headers), "")
        )
        if event == "ping":
            return _answer(200, "accepted", {"ok": True})
        if event not in BUILD_EVENTS:
            return _ignored("event not used")
        build = payload.get("build")
        if not isinstance(build, dict) or not isinstance(build.get("id"), str):
            return _answer(
                400, "malformed", {"error": "BadRequest", "message": "build event without a build"}
            )
        run_id = self.book.run_for_build(build["id"])
        if run_id is None:
            run_id = self._adopt(payload, build)
            if run_id is None:
                return _ignored("not a build of this tack")
        self.tracker.observe(run_id, build, rest=False)
        return _answer(200, "accepted", {"ok": True})

    def _adopt(self, payload: dict[str, Any], build: dict[str, Any]) -> int | None:
        key = key_from_meta_data(build.get("meta_data"))
        run = None if key is None else self.store.get(key)
        if run is None:
            return None
        org, slug = run.data.get("org"), run.data.get("pipeline")
        pipeline = (
            payload.get("pipeline") if isinstance(payload.get("pipeline"), dict) else build.get("pipeline")
        )
        payload_slug = pipeline.get("slug") if isinstance(pipeline, dict) else None
        if not isinstance(org, str) or not isinstance(slug, str) or (payload_slug and payload_slug != slug):
            log.warning("build of another pipeline carries a run's key", extra={"run": str(run.key)})
            return None
        ref = BuildRef.from_build(build, org, slug)
        if ref is None:
            return None
        if self.book.attach(run.id, ref) == "other":
            metrics.DUPLICATE_BUILDS.inc()
            log.warning("run already has another build", extra={"run": str(run.key), "build": ref.id})
            return None
        metrics.BUILDS.labels("adopted").inc()
        log.info("adopted from webhook", extra={"run": str(run.key), "build": ref.id, "number": ref.number})
        return run.id
