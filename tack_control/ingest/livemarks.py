"""Which mirrored records changed live, so a snapshot read from a PDS meanwhile cannot undo them.

Every live change (a Jetstream commit of a member, repo or collaborator
record) takes the next number of one counter and marks its (author,
collection, rkey) with it. A reconciliation takes :meth:`LiveMarks.token`
before it reads a repository's records, and later leaves alone every record
marked after that token: whatever Jetstream said while the snapshot was
being read is newer than the snapshot. The marks are dropped once no
snapshot older than them is in flight; past ``max_entries`` all are dropped
at once and every older token is void (such snapshots are not applied at all).
"""

from __future__ import annotations


Key = tuple[str, str, str]


class LiveMarks:
    """A counter and the last number each record key was marked with."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._seq = 0
        self._floor = 0
        self._marks: dict[Key, int] = {}

    def token(self) -> int:
        """The current count: a snapshot read from now on is newer than every change marked so far."""
        return self._seq

    def mark(self, did: str, collection: str, rkey: str) -> None:
        """A live change of this record."""
        self._seq += 1
        self._marks[(did, collection, rkey)] = self._seq
        if len(self._marks) > self.max_entries:
            self._marks.clear()
            self._floor = self._seq

    def since(self, did: str, collection: str, rkey: str, token: int) -> bool:
        """Whether this record changed live after ``token`` was taken (always, for a voided token)."""
        return token < self._floor or self._marks.get((did, collection, rkey), 0) > token

    def forget(self, through: int) -> None:
        """Drop marks numbered ``through`` or less: no snapshot taken before them is still in flight."""
        self._marks = {key: seq for key, seq in self._marks.items() if seq > through}

    def __len__(self) -> int:
        return len(self._marks)
