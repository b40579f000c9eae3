"""`tack doctor`'s registrations check: what the PDSes hold beside what tack's database holds, and who could not be read."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tack_common.sqlite import Transaction
from tack_control.config import Settings
from tack_control.doctor import check_registrations
from tack_control.engine.db import open_db
from tack_control.ingest.registry import COLLABORATOR, MEMBER, REPO, Registry
from tests.fakes.atproto import FakePds, FakePlc
from tests.support.atproto import Account
from tests.support.samples import HOST, KNOT, OWNER, apply, commit, repo_record


REPO_DID = "did:plc:repo7abcdefghijklmnopqrs"


@pytest.fixture
async def pds2() -> AsyncIterator[FakePds]:
    """A PDS that answers every listRecords with HTTP 500 for the DIDs put in ``failing``."""
    fake = FakePds()
    await fake.start()
    yield fake
    await fake.stop()


async def test_doctor_lists_members_repositories_and_collaborators_and_every_unreadable_did(
    tmp_path: Path, plc: FakePlc, pds: FakePds, pds2: FakePds
) -> None:
    """Found records with the database's state for each, rows the PDS no longer has, and a FAIL per unread DID."""
    db = str(tmp_path / "tack.db")
    conn = open_db(db)
    registry = Registry(conn, HOST, OWNER)
    apply(registry, commit(OWNER, REPO, "site", record=repo_record("site", repo_did=REPO_DID)))
    apply(registry, commit(OWNER, REPO, "gone", record=repo_record("gone")))
    with Transaction(conn):
        conn.execute("UPDATE repos SET state='verified' WHERE rkey='site'")
    conn.close()
    plc.publish(Account(did=OWNER, pds=pds.url))
    alice, bob = plc.publish(Account(pds=pds.url)), plc.publish(Account(pds=pds2.url))
    pds.put(OWNER, MEMBER, "m1", {"subject": alice.did, "instance": HOST})
    pds.put(OWNER, MEMBER, "m2", {"subject": bob.did, "instance": HOST})
    pds.put(OWNER, MEMBER, "m3", {"subject": Account().did, "instance": "another.spindle"})
    pds.put(OWNER, REPO, "site", repo_record("site", repo_did=REPO_DID))
    pds.put(OWNER, COLLABORATOR, "c1", {"subject": alice.did, "repo": REPO_DID})
    pds.put(alice.did, REPO, "lib", repo_record("lib"))
    pds2.failing[bob.did] = 500
    settings = Settings(
        hostname=HOST,
        owner_did=OWNER,
        listen=("127.0.0.1", 0),
        db_path=db,
        jetstream_url="ws://127.0.0.1:1/subscribe",
        dev=True,
        providers={},
        default_provider=None,
        plc_url=plc.url,
    )
    results = await check_registrations(settings)
    assert [(r.verdict, r.name) for r in results] == [
        ("ok", "registrations"),
        ("FAIL", f"records of {bob.did}"),
    ]
    report = results[0].detail
    assert report.startswith(
        "read 2 of 3 DIDs: 2 members, 2 repositories (1 new, 1 verified), 1 collaborators"
    )
    assert f"member {alice.did} (not yet in tack's database)" in report
    assert f"repo {OWNER}/site (repo DID {REPO_DID}, knot {KNOT}): verified\n" in report
    assert f"repo {alice.did}/lib (name 'lib', knot {KNOT}): new (not yet in tack's database)" in report
    assert f"collaborator {alice.did} on {REPO_DID}, granted by {OWNER}" in report
    assert f"repo {OWNER}/gone: in tack's database, no longer on the PDS" in report
    assert "another.spindle" not in report
    assert "HTTP 500" in results[1].detail and "retries" in results[1].fix
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT COUNT(*) FROM repos").fetchone()[0] == 2, "doctor changes nothing"
