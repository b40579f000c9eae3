"""Verifying repository registrations against the repository's knot, before tack trusts them.

A ``sh.tangled.repo`` record with a ``repoDid`` is a claim by its author. The
claim stands only when the knot that hosts the repo DID, asked with
``sh.tangled.repo.describeRepo``, names the same owner and record key: so a
member who copies another owner's repo DID into a record of their own
registers nothing, and neither does a record pointing at a knot that does not
host the DID. Which knot hosts the DID is what the DID's own document says
when a resolver is given (``#tangled_knot``, else ``#atproto_pds``), so a
record cannot bring its own knot to vouch for it; it must also be the knot the
record names. A knot that cannot answer now is asked again with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from tack_common import backoff
from tack_common.notify import Notifier
from tack_control.engine.statuses import StatusBook
from tack_control.identity.resolver import DidResolver, ResolveError
from tack_control.ingest.knotapi import KnotApi, KnotError
from tack_control.ingest.registry import Registry, Repo


log = logging.getLogger(__name__)

KnotOfRepo = Callable[[str], Awaitable[str | None]]
"""The knot (host[:port]) a repo DID's document names; None when it names none.

Raises :class:`ResolveError`: ``unavailable`` is asked again later, any other reason refuses."""


def knot_from_document(resolver: DidResolver) -> KnotOfRepo:
    """The repo DID's knot as its DID document names it (``#tangled_knot``, else ``#atproto_pds``)."""

    async def knot_of(repo_did: str) -> str | None:
        doc = await resolver.resolve(repo_did)
        return None if doc.knot is None else knot_host(doc.knot)

    return knot_of


class ForkRefused(Exception):
    """A source repository (a fork) whose knot cannot be established; ``transient`` when asking again may help."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


ForkKnot = Callable[[str], Awaitable[str]]
"""The knot hosting a repo DID not registered here (a fork), vetted; raises :class:`ForkRefused`."""


def fork_knots(knot_of_repo: KnotOfRepo, knots: KnotApi) -> ForkKnot:
    """Vets a fork as registrations are vetted: its DID document names its knot, and that knot confirms it hosts it."""

    async def knot_of(repo_did: str) -> str:
        try:
            knot = await knot_of_repo(repo_did)
            if knot is None:
                raise ForkRefused(f"{repo_did}: its DID document names no knot", transient=False)
            description = await knots.describe_repo(knot, repo_did)
        except ResolveError as exc:
            raise ForkRefused(f"{repo_did}: {exc}", transient=exc.reason == "unavailable") from None
        except KnotError as exc:
            raise ForkRefused(f"{repo_did}: {exc}", transient=exc.transient) from None
        if description is None:
            raise ForkRefused(f"{repo_did}: its knot {knot} does not host it", transient=False)
        return knot

    return knot_of


def knot_host(endpoint: str) -> str | None:
    """``host[:port]`` of a knot's service endpoint URL, the way records name knots (default ports dropped)."""
    url = urlsplit(endpoint)
    if url.scheme not in ("https", "http") or not url.hostname:
        return None
    default = {"https": 443, "http": 80}[url.scheme]
    try:
        port = url.port
    except ValueError:
        return None
    host = url.hostname.lower()
    return host if port in (None, default) else f"{host}:{port}"


class Verifier:
    """Settles pending registrations, one knot round trip each."""

    def __init__(
        self,
        registry: Registry,
        book: StatusBook,
        knots: KnotApi,
        on_knots_changed: Callable[[], None],
        knot_of_repo: KnotOfRepo | None = None,
    ) -> None:
        self.registry = registry
        self.book = book
        self.knots = knots
        self.on_knots_changed = on_knots_changed
        self.knot_of_repo = knot_of_repo
        self.wake = Notifier()

    def poke(self) -> None:
        """A registration may be pending."""
        self.wake.notify()

    async def run(self) -> None:
        """Verify forever."""
        while True:
            await self.verify_due()
            next_ns = self.registry.next_pending_ns()
            wait = 60.0 if next_ns is None else max(0.0, min(60.0, (next_ns - time.time_ns()) / 1e9))
            await self.wake.wait(wait)

    async def verify_due(self) -> int:
        """Check every pending registration that is due; returns how many were checked."""
        due = self.registry.pending(time.time_ns())
        results = await asyncio.gather(*(self._check(repo) for repo in due))
        changed = False
        with self.book.transaction() as conn:
            for repo, (verdict, reason) in zip(due, results, strict=True):
                if verdict is None:
                    at = time.time_ns() + int(
                        backoff.delay(self._checks(repo) + 1, base=5.0, cap=900.0) * 1e9
                    )
                    self.registry.retry_later(conn, repo, at, reason)
                    log.warning(
                        "repository verification will be retried",
                        extra={
                            "did": repo.owner,
                            "rkey": repo.rkey,
                            "repo_did": repo.repo_did,
                            "reason": reason,
                        },
                    )
                else:
                    changed |= self.registry.settle(conn, repo, verdict, reason)
                    if verdict:
                        log.info(
                            "repository verified",
                            extra={
                                "did": repo.owner,
                                "rkey": repo.rkey,
                                "repo_did": repo.repo_did,
                                "knot": repo.knot,
                            },
                        )
        if changed:
            self.on_knots_changed()
        return len(due)

    def _checks(self, repo: Repo) -> int:
        row = self.registry.conn.execute(
            "SELECT checks FROM repos WHERE did=? AND rkey=?", (repo.owner, repo.rkey)
        ).fetchone()
        return 0 if row is None else int(row[0])

    async def _check(self, repo: Repo) -> tuple[bool | None, str]:
        """(True, "") verified, (False, why) refused, (None, why) ask again later."""
        if self.knot_of_repo is not None:
            try:
                knot = await self.knot_of_repo(repo.repo_did)
            except ResolveError as exc:
                transient = exc.reason == "unavailable"
                return (
                    None if transient else False
                ), f"knot answered nothing: cannot resolve {repo.repo_did}: {exc}"[:300]
            if knot is None:
                return False, "knot answered nothing: the repo DID's document names no knot"
            if knot != repo.knot:
                return (
                    False,
                    f"knot answered nothing: the repo DID's document names knot {knot}, the record {repo.knot}",
                )
        try:
            description = await self.knots.describe_repo(repo.knot, repo.repo_did)
        except KnotError as exc:
            return (None if exc.transient else False), str(exc)
        if description is None:
            return False, f"knot does not know {repo.repo_did}"
        if description.owner != repo.owner:
            return False, f"knot says the owner of {repo.repo_did} is {description.owner}, not {repo.owner}"
        if description.rkey != repo.rkey:
            return (
                False,
                f"knot says the record key of {repo.repo_did} is {description.rkey}, not {repo.rkey}",
            )
        return True, ""
