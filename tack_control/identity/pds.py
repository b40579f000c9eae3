"""Reading records from their owner's PDS, the ``#atproto_pds`` of the DID document: one
(``com.atproto.repo.getRecord``) or a whole collection (``com.atproto.repo.listRecords``, paged)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tack_control.identity.did import BadDid, DidDocument, check_did
from tack_control.identity.listing import ListingError, RecordPager
from tack_control.identity.resolver import DidResolver, ResolveError
from tack_control.netguard import Fetcher, Refused


MAX_RECORD_BYTES = 256 << 10
MAX_PAGE_BYTES = 2 << 20
_RKEY = re.compile(r"^[a-zA-Z0-9._:~-]{1,512}$")


class RecordError(Exception):
    """No record: ``reason`` is ``bad_uri``, ``not_found`` or ``unavailable``; the message says why.
    ``refused``: unavailable because tack does not contact that PDS (a private address without TACK_DEV)."""

    def __init__(self, reason: str, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.refused = refused


@dataclass(frozen=True)
class RecordUri:
    """``at://<did>/<collection>/<rkey>``."""

    did: str
    collection: str
    rkey: str

    def __str__(self) -> str:
        return f"at://{self.did}/{self.collection}/{self.rkey}"


def parse_record_uri(text: str, collection: str) -> RecordUri:
    """The AT-URI of a record of ``collection`` whose authority is a DID; RecordError ``bad_uri`` otherwise."""
    parts = text.removeprefix("at://").split("/") if text.startswith("at://") else []
    if len(parts) != 3 or parts[1] != collection or not _RKEY.fullmatch(parts[2]) or parts[2] in (".", ".."):
        raise RecordError("bad_uri", f"expected at://<did>/{collection}/<rkey>, got {text[:200]!r}")
    try:
        check_did(parts[0])
    except BadDid as exc:
        raise RecordError("bad_uri", f"the AT-URI's authority must be a DID: {exc}") from None
    return RecordUri(parts[0], collection, parts[2])


class PdsReader:
    """Fetches records from their owner's PDS, found through the owner's DID document."""

    def __init__(self, resolver: DidResolver, fetcher: Fetcher) -> None:
        self.resolver = resolver
        self.fetcher = fetcher

    async def get_record(self, uri: RecordUri) -> dict[str, Any]:
        """The record's ``value``; RecordError when the owner, their PDS or the record cannot be found."""
        try:
            doc = await self.resolver.resolve(uri.did)
        except ResolveError as exc:
            reason = "not_found" if exc.reason in ("not_found", "bad_did") else "unavailable"
            raise RecordError(reason, f"cannot resolve {uri.did}: {exc}") from None
        if doc.pds is None:
            raise RecordError("not_found", f"{uri.did} names no PDS (#atproto_pds) in its DID document")
        query = urlencode({"repo": uri.did, "collection": uri.collection, "rkey": uri.rkey})
        try:
            status, _, raw = await self.fetcher.get_bytes(
                f"{doc.pds}/xrpc/com.atproto.repo.getRecord?{query}", MAX_RECORD_BYTES, target="pds"
            )
            body = json.loads(raw)
        except (OSError, ValueError, RecursionError) as exc:
            raise RecordError(
                "unavailable",
                f"{uri} could not be read from {doc.pds}: {str(exc)[:200]}",
                refused=isinstance(exc, Refused),
            ) from None
        error = body.get("error") if isinstance(body, dict) else None
        if status in (400, 404) and error in ("RecordNotFound", "RepoNotFound", "NotFound"):
            raise RecordError("not_found", f"{uri} does not exist ({error} from {doc.pds})")
        value = body.get("value") if isinstance(body, dict) else None
        if status != 200 or not isinstance(value, dict):
            raise RecordError(
                "unavailable", f"{doc.pds} answered getRecord for {uri} with HTTP {status} {str(error)[:60]}"
            )
        record_type = value.get("$type", uri.collection)
        if record_type != uri.collection:
            raise RecordError("not_found", f"{uri} is a {str(record_type)[:100]!r}, not a {uri.collection}")
        return value

    async def list_records(
        self,
        did: str,
        collection: str,
        *,
        max_records: int = 10_000,
        max_pages: int = 200,
        fresh: bool = False,
    ) -> dict[str, dict[str, Any] | None]:
        """Every record of ``did``'s ``collection`` by record key (``None``: present but unreadable).

        ListingError when the listing is not complete; ``fresh`` refetches the DID document first
        (after a failure: the account may have moved to another PDS).
        """
        doc = await self._document(did, fresh)
        if doc.pds is None:
            raise ListingError("not_found", f"{did} names no PDS (#atproto_pds) in its DID document")
        pager = RecordPager(did, collection, max_records=max_records, max_pages=max_pages)
        while (params := pager.params()) is not None:
            url = f"{doc.pds}/xrpc/com.atproto.repo.listRecords?{urlencode(params)}"
            try:
                status, _, body = await self.fetcher.get_bytes(url, MAX_PAGE_BYTES, target="pds")
            except (OSError, ValueError) as exc:
                raise ListingError("unavailable", f"{doc.pds} could not be read: {str(exc)[:200]}") from None
            pager.feed(status, body)
        return pager.records

    async def _document(self, did: str, fresh: bool) -> DidDocument:
        try:
            if fresh and (doc := await self.resolver.refresh(did)) is not None:
                return doc
            return await self.resolver.resolve(did)
        except ResolveError as exc:
            reason = "not_found" if exc.reason in ("not_found", "bad_did", "invalid") else "unavailable"
            raise ListingError(reason, f"cannot resolve {did}: {exc}") from None
