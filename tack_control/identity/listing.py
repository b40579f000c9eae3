"""Paging through ``com.atproto.repo.listRecords``, free of I/O: which page to ask for next, and what a page means.

The lexicon: parameters ``repo``, ``collection``, ``limit`` (1 to 100, default
50), ``cursor``, ``reverse``; the answer ``{cursor?, records: [{uri, cid,
value}]}``. The reference PDS returns records by record key, newest first, and
a cursor (the last record's key) with every page that has records, so the
last page is an empty one. Other implementations may differ, so paging stops
only on an empty page or a missing cursor, and never trusts the PDS to end:
a cursor seen twice, too many pages or too many records is an error, and so
is a record of another repository or collection, or a record key listed twice.
A record whose value is not an object of the collection's ``$type`` is kept as
``None`` (present, but unreadable).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


PAGE_SIZE = 100
MAX_CURSOR = 1024
_RKEY = re.compile(r"^[a-zA-Z0-9._:~-]{1,512}$")


class ListingError(Exception):
    """A listing that cannot be trusted as complete.

    ``reason`` (a metric label): ``unavailable`` (unreachable, timed out, HTTP
    5xx or another error status), ``not_found`` (no DID document, no PDS, or the
    PDS does not host the repository), ``invalid`` (an answer that breaks the
    lexicon), ``too_many`` (more records or pages than allowed, or a cursor that
    repeats); the message says what happened.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class RecordPager:
    """One collection of one repository, page by page: :meth:`params`, then :meth:`feed` each answer."""

    did: str
    collection: str
    max_records: int = 10_000
    max_pages: int = 200
    page_size: int = PAGE_SIZE
    records: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    pages: int = 0
    done: bool = False
    _cursor: str | None = None
    _seen: set[str] = field(default_factory=set)

    def params(self) -> dict[str, str] | None:
        """The query of the next page; None when the listing is complete."""
        if self.done:
            return None
        query = {"repo": self.did, "collection": self.collection, "limit": str(self.page_size)}
        if self._cursor is not None:
            query["cursor"] = self._cursor
        return query

    def feed(self, status: int, body: bytes) -> None:
        """Take the answer to :meth:`params`; ListingError when the listing cannot go on."""
        self.pages += 1
        answer = _json(body)
        if status != 200:
            raise _status_error(status, answer)
        if not isinstance(answer, dict) or not isinstance(answer.get("records"), list):
            raise ListingError("invalid", "listRecords answered without a records list")
        for entry in answer["records"]:
            self._take(entry)
        cursor = answer.get("cursor")
        if cursor is not None and (not isinstance(cursor, str) or len(cursor) > MAX_CURSOR):
            raise ListingError("invalid", "listRecords answered a cursor that is not a short string")
        if not answer["records"] or not cursor:
            self.done = True
            return
        if cursor in self._seen:
            raise ListingError(
                "too_many", f"listRecords repeated the cursor {cursor[:60]!r}: it would never end"
            )
        if self.pages >= self.max_pages:
            raise ListingError("too_many", f"more than {self.max_pages} pages of {self.collection}")
        self._seen.add(cursor)
        self._cursor = cursor

    def _take(self, entry: object) -> None:
        if not isinstance(entry, dict) or not isinstance(entry.get("uri"), str):
            raise ListingError("invalid", "a listed record has no uri")
        uri: str = entry["uri"]
        parts = uri.removeprefix("at://").split("/") if uri.startswith("at://") else []
        if len(parts) != 3 or parts[0] != self.did or parts[1] != self.collection:
            raise ListingError(
                "invalid", f"listed {uri[:200]!r}, not a record of {self.did}'s {self.collection}"
            )
        rkey = parts[2]
        if not _RKEY.fullmatch(rkey) or rkey in (".", ".."):
            raise ListingError("invalid", f"listed a record with an invalid key {rkey[:100]!r}")
        if rkey in self.records:
            raise ListingError("invalid", f"listed the record {rkey!r} twice")
        if len(self.records) >= self.max_records:
            raise ListingError("too_many", f"more than {self.max_records} records of {self.collection}")
        value = entry.get("value")
        readable = isinstance(value, dict) and value.get("$type", self.collection) == self.collection
        self.records[rkey] = value if readable else None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except (ValueError, RecursionError):
        return None


def _status_error(status: int, answer: Any) -> ListingError:
    """What a non-200 answer means: the reference PDS answers 400 InvalidRequest "Could not find repo" for
    a repository it does not host (and RepoNotFound, RepoDeactivated, RepoTakendown on newer versions)."""
    error = answer.get("error") if isinstance(answer, dict) else None
    message = answer.get("message") if isinstance(answer, dict) else None
    said = f"HTTP {status} {str(error or '')[:60]} {str(message or '')[:160]}".strip()
    gone = error in ("RepoNotFound", "RepoDeactivated", "RepoTakendown", "RepoSuspended") or (
        error == "InvalidRequest" and isinstance(message, str) and message.startswith("Could not find repo")
    )
    if status == 400 and gone:
        return ListingError("not_found", f"the PDS does not serve this repository ({said})")
    return ListingError("unavailable", f"listRecords answered {said}")
