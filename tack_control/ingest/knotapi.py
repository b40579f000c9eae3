"""The knot's XRPC methods tack reads: ``describeRepo`` (who owns a repo DID) and ``getDefaultBranch``.

Only knots of registered repositories are asked, through a fetch that bounds
time and bytes and (outside dev mode) refuses private addresses. Answers are
checked field by field; anything else is a :class:`KnotError` naming why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tack_control.ingest.wire import is_did, is_rkey


FetchJSON = Callable[[str], Awaitable[tuple[int, Any]]]
"""GET a URL; (HTTP status, parsed JSON body or None). Raises OSError/TimeoutError/ValueError on failure."""


class KnotError(Exception):
    """The knot could not be asked or answered something unusable; ``transient`` when asking again may help."""

    def __init__(self, reason: str, transient: bool) -> None:
        super().__init__(reason)
        self.transient = transient


@dataclass(frozen=True)
class RepoDescription:
    """``sh.tangled.repo.describeRepo``: the knot's record of a repo DID."""

    repo_did: str
    owner: str
    rkey: str


def base_url(knot: str, dev: bool) -> str:
    """The knot's base URL: https, or http in dev mode."""
    return f"{'http' if dev else 'https'}://{knot}"


class KnotApi:
    """Calls a knot's XRPC methods through ``fetch``."""

    def __init__(self, fetch: FetchJSON, dev: bool) -> None:
        self.fetch = fetch
        self.dev = dev

    async def _get(self, knot: str, method: str, params: dict[str, str]) -> tuple[int, Any]:
        url = f"{base_url(knot, self.dev)}/xrpc/{method}?{urlencode(params)}"
        try:
            return await self.fetch(url)
        except (OSError, TimeoutError) as exc:
            raise KnotError(f"knot {knot} unreachable: {exc}"[:300], transient=True) from None
        except ValueError as exc:
            raise KnotError(
                f"knot {knot} answered {method} with something that is not JSON: {exc}"[:300], True
            ) from None

    async def describe_repo(self, knot: str, repo_did: str) -> RepoDescription | None:
        """What ``knot`` says of ``repo_did``; None when the knot does not host it (RepoNotFound)."""
        status, body = await self._get(knot, "sh.tangled.repo.describeRepo", {"repoDid": repo_did})
        if status in (400, 404) and isinstance(body, dict) and body.get("error") == "RepoNotFound":
            return None
        if status != 200 or not isinstance(body, dict):
            transient = status >= 500 or status in (408, 429)
            raise KnotError(f"knot {knot} answered describeRepo with HTTP {status}", transient)
        owner, rkey, echoed = body.get("ownerDid"), body.get("rkey"), body.get("repoDid")
        if not (isinstance(owner, str) and is_did(owner) and isinstance(rkey, str) and is_rkey(rkey)):
            raise KnotError(f"knot {knot} answered describeRepo without a valid ownerDid and rkey", False)
        if echoed != repo_did:
            raise KnotError(
                f"knot {knot} answered describeRepo for another repo DID ({str(echoed)[:80]})", False
            )
        return RepoDescription(repo_did=repo_did, owner=owner, rkey=rkey)

    async def default_branch(self, knot: str, repo_did: str) -> str:
        """The repository's default branch, as its knot says ("" when it cannot say)."""
        try:
            status, body = await self._get(knot, "sh.tangled.repo.getDefaultBranch", {"repo": repo_did})
        except KnotError:
            return ""
        name = body.get("name") if status == 200 and isinstance(body, dict) else None
        return name if isinstance(name, str) and 0 < len(name) <= 255 and "\x00" not in name else ""
