"""``/healthz`` (liveness), ``/readyz`` (readiness) and the JSON health report (``/healthz?verbose=1``).

Ready means: no supervised task is down, the database takes a real write, and
at least one provider (when any is configured) answers its health check with
SERVING. The report adds each task's state and last error, the database
probe, each provider, each input stream's lag, the webhooks waiting and the
record reconciliation with the PDSes (each DID read, and why one could not be).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from tack_control import metrics
from tack_control.core import Core
from tack_control.ingest.lag import worst
from tack_control.web import keys


# /readyz probes the database again when its last probe is older than this.
PROBE_MAX_AGE_S = 5.0


def problems(core: Core) -> list[str]:
    """Why the control plane is not ready (empty when it is)."""
    found = list(core.supervisor.problems())
    core.storage.check(max_age=PROBE_MAX_AGE_S)
    found += core.storage.problems()
    providers = list(core.providers.values())
    if providers and not any(p.up for p in providers):
        names = ", ".join(f"{p.name} ({p.address})" for p in providers)
        found.append(f"no provider is reachable and SERVING: {names}")
    return found


def report(core: Core) -> dict[str, Any]:
    """The health report."""
    found = problems(core)
    watching = {w.provider.name: w.connected.is_set() for w in core.watchers}
    return {
        "live": True,
        "ready": not found,
        "problems": found,
        "tasks": core.supervisor.report(),
        "database": core.storage.as_json(),
        "providers": {
            p.name: {
                "address": p.address,
                "serving": p.up,
                "checked_s_ago": round(time.monotonic() - p.checked_at, 3) if p.checked_at else None,
                "watching_statuses": watching.get(p.name, False),
            }
            for p in core.providers.values()
        },
        "inputs": {
            "jetstream": core.jetstream.lag.as_json(),
            "knots": {knot: lag.as_json() for knot, lag in sorted(core.knots.lag.items())},
        },
        "webhooks_waiting": core.webhooks.pending(),
        "reconciliation": core.reconciler.status(),
    }


def export_lag_metrics(core: Core) -> None:
    """Compute the input lag gauges from ``core`` whenever /metrics is scraped."""
    knots = core.knots.lag
    metrics.INPUT_EVENT_AGE.labels("jetstream").set_function(core.jetstream.lag.event_age)
    metrics.INPUT_EVENT_AGE.labels("knots").set_function(
        lambda: worst(knots.values(), lambda s: s.event_age())
    )
    metrics.INPUT_DISCONNECTED.labels("jetstream").set_function(core.jetstream.lag.disconnected_for)
    metrics.INPUT_DISCONNECTED.labels("knots").set_function(
        lambda: worst(knots.values(), lambda s: s.disconnected_for())
    )


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. ``?verbose=1``: the JSON health report (200 even when not ready)."""
    if request.query.get("verbose", "") not in ("", "0", "false"):
        return web.json_response(report(request.app[keys.CORE]))
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 ``{"ready": true}``, or 503 with the problems."""
    found = problems(request.app[keys.CORE])
    if found:
        return web.json_response({"ready": False, "problems": found}, status=503)
    return web.json_response({"ready": True})
