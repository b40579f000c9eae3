"""Resolving DIDs to documents, with a bounded cache: TACK_PLC_URL for did:plc, ``/.well-known/did.json`` for did:web.

Documents are cached for the TTL; failures too, briefly (a DID that does not
exist for a minute, a host that did not answer for seconds), so a caller
cannot make tack fetch the same document over and over. Concurrent lookups
of one DID share one fetch. :meth:`DidResolver.refresh` refetches a
document at once (after a signature failed: the key may have rotated), at
most once per DID per ``refresh_interval_s``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from tack_control.identity.did import BadDid, DidDocument, document_url, parse_document
from tack_control.netguard import Fetcher, Target


DEFAULT_PLC_URL = "https://plc.directory"
MAX_DOCUMENT_BYTES = 64 << 10


class ResolveError(Exception):
    """No document for a DID. ``reason``: ``bad_did``, ``not_found``, ``invalid`` or ``unavailable``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Entry:
    expires: float
    doc: DidDocument | None
    error: ResolveError | None


class DidResolver:
    """DID → :class:`DidDocument`, cached (LRU, ``max_entries``), fetched through the control plane's :class:`Fetcher`."""

    def __init__(
        self,
        fetcher: Fetcher,
        plc_url: str = DEFAULT_PLC_URL,
        *,
        dev: bool = False,
        ttl_s: float = 3600.0,
        negative_ttl_s: float = 60.0,
        transient_ttl_s: float = 5.0,
        refresh_interval_s: float = 30.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetcher = fetcher
        self.plc_url = plc_url
        self.dev = dev
        self.ttl_s = ttl_s
        self.negative_ttl_s = min(negative_ttl_s, ttl_s)
        self.transient_ttl_s = min(transient_ttl_s, ttl_s)
        self.refresh_interval_s = refresh_interval_s
        self.max_entries = max_entries
        self.clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._refreshed: OrderedDict[str, float] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[DidDocument]] = {}

    async def resolve(self, did: str) -> DidDocument:
        """``did``'s document, from the cache while fresh; ResolveError when there is none."""
        entry = self._cache.get(did)
        if entry is not None and entry.expires > self.clock():
            self._cache.move_to_end(did)
            if entry.error is not None:
                raise entry.error
            assert entry.doc is not None
            return entry.doc
        return await self._shared_fetch(did)

    async def refresh(self, did: str) -> DidDocument | None:
        """Refetch ``did``'s document now; None when it was force-refreshed less than ``refresh_interval_s`` ago."""
        now = self.clock()
        last = self._refreshed.get(did)
        if last is not None and now - last < self.refresh_interval_s:
            return None
        self._refreshed[did] = now
        self._refreshed.move_to_end(did)
        while len(self._refreshed) > self.max_entries:
            self._refreshed.popitem(last=False)
        return await self._shared_fetch(did)

    async def _shared_fetch(self, did: str) -> DidDocument:
        task = self._inflight.get(did)
        if task is None:
            task = asyncio.create_task(self._fetch(did), name="resolve-did")
            self._inflight[did] = task

            def done(task: asyncio.Task[DidDocument]) -> None:
                self._inflight.pop(did, None)
                if not task.cancelled():
                    task.exception()  # retrieved here, so an error nobody awaited is not reported as lost

            task.add_done_callback(done)
        # A caller that gives up does not cancel the fetch others wait for.
        return await asyncio.shield(task)

    async def _fetch(self, did: str) -> DidDocument:
        try:
            url = document_url(did, self.plc_url, self.dev)
        except BadDid as exc:
            raise ResolveError("bad_did", str(exc)) from None
        target: Target = "plc" if did.startswith("did:plc:") else "did_web"
        try:
            # Served as application/did+ld+json (PLC), application/json or anything else: the body is JSON.
            status, _, body = await self.fetcher.get_bytes(url, MAX_DOCUMENT_BYTES, target=target)
        except (OSError, ValueError) as exc:
            raise self._fail(did, "unavailable", f"the DID document could not be fetched: {exc}") from None
        if status in (404, 410):
            raise self._fail(did, "not_found", f"no DID document (HTTP {status} from {url})")
        if status != 200:
            raise self._fail(did, "unavailable", f"the DID document fetch answered HTTP {status}")
        try:
            doc = parse_document(did, json.loads(body))
        except (ValueError, RecursionError) as exc:
            raise self._fail(did, "invalid", f"the DID document is invalid: {str(exc)[:200]}") from None
        self._store(did, _Entry(self.clock() + self.ttl_s, doc, None))
        return doc

    def _fail(self, did: str, reason: str, message: str) -> ResolveError:
        """The error, cached; a transient one does not displace a document still fresh."""
        error = ResolveError(reason, message)
        transient = reason == "unavailable"
        current = self._cache.get(did)
        now = self.clock()
        if not (transient and current is not None and current.doc is not None and current.expires > now):
            ttl = self.transient_ttl_s if transient else self.negative_ttl_s
            self._store(did, _Entry(now + ttl, None, error))
        return error

    def _store(self, did: str, entry: _Entry) -> None:
        self._cache[did] = entry
        self._cache.move_to_end(did)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
