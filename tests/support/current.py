"""A current-Tangled world for end-to-end tests, shared by the push, trigger and cancel tests.

A fake PLC directory and PDS on loopback, a current-protocol knot serving real
git repositories over smart HTTP, the control plane and its providers as real
processes (the stub; optionally the Buildkite provider against the fake
Buildkite, and providers the test serves itself), and one repository, ``hello``
with its own repo DID, registered by the spindle's owner and verified against
its knot. The owner is an atproto account whose key is on the PLC, so a test
can sign service-auth tokens as the appview's users would get them from their
PDS; its ``sh.tangled.repo`` record is on the fake PDS too, for the methods
that name a repository by that record's AT-URI.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tack_control.identity.did import web_did
from tack_sandbox.knot import HostedRepo, SimulatedKnot
from tests.fakes.atproto import FakePds, FakePlc
from tests.support.atproto import Account, plc_did
from tests.support.stack import OWNER, Stack


REPO_RKEY = "hello"
COLLABORATOR = "sh.tangled.repo.collaborator"
CREATED_AT = "2026-07-01T00:00:00Z"


QUICK = {
    "queue_seconds": 0,
    "steps": [{"name": "build", "command": "make", "output": ["ok"], "duration": 0.1}],
}


def workflow(when: str, script: dict[str, Any] | None = None) -> str:
    """A workflow file for the stub with this ``when:`` block."""
    return f"{when}engine: tack\ntack:\n  stub: {json.dumps(script or QUICK)}\n"


async def until(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Wait for ``predicate()`` to be true (polling every 50 ms), or fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


@dataclass
class World:
    """A stack whose knot speaks current Tangled, with one registered repository."""

    stack: Stack
    plc: FakePlc
    pds: FakePds
    repo_did: str
    owner: Account
    extra_knots: list[SimulatedKnot] = field(default_factory=list)

    @property
    def knot(self) -> SimulatedKnot:
        return self.stack.knot

    @property
    def repo_uri(self) -> str:
        """The AT-URI of the owner's ``sh.tangled.repo`` record of the repository."""
        return f"at://{OWNER}/sh.tangled.repo/{REPO_RKEY}"

    def db(self) -> sqlite3.Connection:
        """A connection to the control plane's database (close it, or use it in ``with``)."""
        return sqlite3.connect(self.stack.cp.db_path)

    def pipelines(self) -> list[tuple[str, str, str, str, str]]:
        """(rkey, kind, commit, origin, repo_did) of every pipeline, oldest first."""
        with self.db() as conn:
            return conn.execute(
                "SELECT rkey, kind, commit_sha, origin, repo_did FROM pipelines ORDER BY created_ns"
            ).fetchall()

    def workflows(self, rkey: str) -> dict[str, tuple[str, str]]:
        """name → (status, error) of a pipeline's workflows."""
        with self.db() as conn:
            rows = conn.execute("SELECT name, status, error FROM workflows WHERE rkey=?", (rkey,)).fetchall()
        return {name: (status, error) for name, status, error in rows}

    def status(self, rkey: str, name: str) -> str:
        """A workflow's current status in tack's database ("" when it has none yet)."""
        return self.workflows(rkey).get(name, ("",))[0]

    def pushes(self) -> list[tuple[str, str, str]]:
        """(ref, state, reason) of every push tack recorded."""
        with self.db() as conn:
            return conn.execute("SELECT ref, state, reason FROM pushes ORDER BY received_ns").fetchall()

    def account(self, curve: str = "k256") -> Account:
        """A new atproto account, its DID document on the PLC."""
        return self.plc.publish(Account(curve=curve, pds=self.pds.url))  # type: ignore[arg-type]

    def token(self, caller: Account, lxm: str, **claims: Any) -> str:
        """A fresh service-auth token of ``caller`` for method ``lxm``, addressed to this spindle."""
        return caller.token(lxm, aud=web_did(self.stack.cp.hostname), **claims)

    async def call(
        self,
        nsid: str,
        body: Any,
        caller: Account | None = None,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """POST ``body`` to ``/xrpc/<nsid>`` with a fresh token of ``caller`` (the owner by default) unless
        ``token`` or ``headers`` are given; (status, JSON body or None when empty). An error must be XRPC's."""
        sent = dict(headers) if headers is not None else {}
        if headers is None:
            sent["Authorization"] = f"Bearer {token or self.token(caller or self.owner, nsid)}"
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.stack.cp.http}/xrpc/{nsid}", json=body, headers=sent) as resp,
        ):
            raw = await resp.read()
            decoded = await resp.json(content_type=None) if raw else None
            if resp.status != 200:
                assert resp.content_type == "application/json", (resp.status, raw[:300])
                assert isinstance(decoded, dict) and isinstance(decoded.get("error"), str), raw[:300]
                assert isinstance(decoded.get("message"), str), raw[:300]
            return resp.status, decoded

    def add_collaborator(self, subject: str, rkey: str) -> None:
        """The owner writes a ``sh.tangled.repo.collaborator`` record naming ``subject`` on the repository (on
        their PDS, and through Jetstream)."""
        record = {"subject": subject, "repo": self.repo_did, "createdAt": CREATED_AT}
        self.pds.put(OWNER, COLLABORATOR, rkey, record)
        self.stack.jetstream.commit(OWNER, COLLABORATOR, rkey, "create", record)

    def remove_collaborator(self, rkey: str) -> None:
        """The owner deletes that collaborator record."""
        self.pds.delete(OWNER, COLLABORATOR, rkey)
        self.stack.jetstream.commit(OWNER, COLLABORATOR, rkey, "delete")

    def knot_collaborator(self, op: str, subject: str) -> None:
        """The repository's knot announces a collaborator added or removed (``collaboratorUpdate``)."""
        self.knot.emit(
            "sh.tangled.repo.collaboratorUpdate", None, {"op": op, "subject": subject, "repo": self.repo_did}
        )

    def collaborators(self) -> set[str]:
        """Subjects with push rights besides the owner, by record or by the knot's word, as tack holds them."""
        with self.db() as conn:
            rows = conn.execute(
                "SELECT subject FROM collaborators WHERE repo=? UNION SELECT subject FROM knot_collaborators"
                " WHERE repo_did=?",
                (self.repo_did, self.repo_did),
            ).fetchall()
        return {r[0] for r in rows}

    async def register_repo(self, rkey: str) -> str:
        """Another repository of the owner on the same knot, registered here and verified; its repo DID."""
        repo_did = await _register(self.stack, self.plc, self.pds, rkey)
        await until(lambda: self._verified(repo_did), f"repository {rkey} is verified")
        return repo_did

    def _verified(self, repo_did: str) -> bool:
        with self.db() as conn:
            row = conn.execute("SELECT state FROM repos WHERE repo_did=?", (repo_did,)).fetchone()
        return row is not None and row[0] == "verified"

    async def fork(self, tmp_path: Path, files: Mapping[str, str]) -> tuple[str, str]:
        """A fork of the repository on a knot of its own (its repo DID's document names that knot, which hosts
        it), with ``files`` committed to branch ``feature``; (fork repo DID, commit)."""
        knot = SimulatedKnot(protocol="current", git_root=tmp_path / "fork-git")
        await knot.start()
        self.extra_knots.append(knot)
        fork_did = plc_did()
        self.plc.publish(Account(did=fork_did, pds=f"http://{knot.hostname}"))
        author = self.account()
        await knot.create_repo(HostedRepo(fork_did, author.did, "hello-fork"))
        pushed = await knot.push(fork_did, files, branch="feature", emit=False)
        return fork_did, pushed.new_sha

    async def stop(self) -> None:
        """Stop everything the world started."""
        await self.stack.stop()
        for knot in self.extra_knots:
            await knot.stop()
        await self.pds.stop()
        await self.plc.stop()


async def make_world(
    tmp_path: Path,
    object_format: str = "sha1",
    *,
    buildkite: bool = False,
    buildkite_env: Mapping[str, str] | None = None,
    providers: Mapping[str, str] | None = None,
    control_env: Mapping[str, str] | None = None,
    **knot_options: Any,
) -> World:
    """Start a world; the repository is registered and its knot followed when this returns."""
    plc, pds = FakePlc(), FakePds()
    await plc.start()
    await pds.start()
    knot = SimulatedKnot(protocol="current", ping_interval=1.0, git_root=tmp_path / "git", **knot_options)
    stack = Stack(
        tmp_path,
        control_env={"TACK_PLC_URL": plc.url, **(control_env or {})},
        knot=knot,
        buildkite=buildkite,
        buildkite_env=buildkite_env,
        providers=providers,
    )
    # Before the start: tack resolves the owner at once (reconciliation), and remembers a DID it cannot find.
    owner = plc.publish(Account(did=OWNER, pds=pds.url))
    await stack.start()
    repo_did = await _register(stack, plc, pds, REPO_RKEY, object_format)
    await stack.wait_knot_connected()
    return World(stack, plc, pds, repo_did, owner)


async def _register(stack: Stack, plc: FakePlc, pds: FakePds, rkey: str, object_format: str = "sha1") -> str:
    """The owner's repository ``rkey``: a repo DID whose document names the knot, an empty git repository there,
    and the owner's record naming this spindle, on their PDS and through Jetstream; its repo DID."""
    knot = stack.knot
    repo_did = plc_did()
    plc.publish(Account(did=repo_did, pds=f"http://{knot.hostname}"))
    await knot.create_repo(HostedRepo(repo_did, OWNER, rkey), object_format=object_format)  # type: ignore[arg-type]
    record = {
        "name": rkey,
        "knot": knot.hostname,
        "spindle": stack.cp.hostname,
        "repoDid": repo_did,
        "createdAt": CREATED_AT,
    }
    pds.put(OWNER, "sh.tangled.repo", rkey, record)
    stack.jetstream.commit(OWNER, "sh.tangled.repo", rkey, "create", record)
    return repo_did
