"""What the providers' HTTP API clients share: a reply read whole, the two ways a call can fail without an
answer, and the tries one call is allowed after transport errors or 5xx answers.

Throttling (429, and what each API means by it) stays with each client: it differs from API to API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import Counter

from tack_common import backoff


ATTEMPTS = 4


class Unreachable(Exception):
    """No answer from the API (connection refused, reset or timed out) after retrying."""


class OutcomeUnknown(Exception):
    """A non-idempotent request may or may not have taken effect (timeout, reset, 5xx)."""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer read whole."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (None when it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


async def read(resp: aiohttp.ClientResponse, max_bytes: int | None) -> bytes:
    """The body of ``resp``; a ClientPayloadError when it is longer than ``max_bytes`` (None: unbounded)."""
    if max_bytes is None:
        return await resp.read()
    body = await resp.content.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise aiohttp.ClientPayloadError(f"answer larger than {max_bytes} bytes")
    return body


class Tries:
    """The tries of one call to ``service``: up to ATTEMPTS after transport errors or 5xx answers, each
    retry after a backoff; a non-idempotent call is never retried after a transport error."""

    def __init__(self, service: str, operation: str, *, idempotent: bool, requests: Counter) -> None:
        self.service = service
        self.operation = operation
        self.idempotent = idempotent
        self.requests = requests
        self.attempt = 0

    async def again(self) -> bool:
        """Count a failed try; True (after its backoff) when another is allowed."""
        self.attempt += 1
        if self.attempt >= ATTEMPTS:
            return False
        await asyncio.sleep(backoff.delay(self.attempt + 1, base=0.5, cap=8.0))
        return True

    async def send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        *,
        timeout: float,
        max_bytes: int | None = None,
        **kwargs: Any,
    ) -> Reply | None:
        """One try, counted in ``requests`` by status: its answer, or None after a transport error that
        may be retried (after its backoff). Unreachable when no try is left; OutcomeUnknown for a
        non-idempotent call."""
        try:
            async with session.request(
                method, url, timeout=aiohttp.ClientTimeout(total=timeout), **kwargs
            ) as resp:
                reply = Reply(resp.status, resp.headers, await read(resp, max_bytes))
        except aiohttp.ClientConnectorError as exc:
            self.requests.labels(self.operation, "error").inc()
            if not await self.again():
                raise Unreachable(
                    f"{self.operation}: cannot connect to {self.service} ({exc.strerror or exc})"
                ) from None
            return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.requests.labels(self.operation, "error").inc()
            detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
            if not self.idempotent:
                raise OutcomeUnknown(f"{self.operation}: no answer ({detail})") from None
            if not await self.again():
                raise Unreachable(f"{self.operation}: no answer from {self.service} ({detail})") from None
            return None
        self.requests.labels(self.operation, str(reply.status)).inc()
        return reply
