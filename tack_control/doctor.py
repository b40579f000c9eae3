"""``python -m tack_control doctor``: check a configuration the way an operator needs it checked.

One line per check: ``ok``, ``FAIL`` (with how to fix it) or ``skip``. Network
checks time out after a few seconds and say so. Exit status 1 if anything failed.

The registrations check runs one reconciliation read of its own, changing
nothing: it lists the members, repositories and collaborators found on the
PDSes beside what tack's database holds for each, and every DID whose records
could not be read. (The running tack's own view is in its health report and
``tack_reconcile_*`` metrics.)
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import websockets
from websockets.asyncio.client import connect

from tack_common import client, health
from tack_common.env import ConfigError
from tack_common.pb import provider_pb2 as pb
from tack_common.sqlite import schema_version
from tack_common.storage import PROBE_BYTES, probe_write
from tack_control.config import Settings
from tack_control.engine.db import SCHEMA, open_db
from tack_control.engine.webhooks import WebhookQueue
from tack_control.identity.pds import PdsReader
from tack_control.identity.resolver import DidResolver
from tack_control.ingest.backfill import SHORT, Limits, read_did
from tack_control.ingest.gitcli import MIN_GIT_VERSION, parse_git_version
from tack_control.ingest.registry import COLLABORATOR, MEMBER, REPO, Registry
from tack_control.ingest.snapshot import Snapshot, concerns, plan, project
from tack_control.ingest.wire import BadRecord
from tack_control.netguard import Fetcher
from tack_control.web.ci.didweb import did_document, did_web


TIMEOUT_S = 5.0
BUILDKITE_SCOPES = ("read_builds", "write_builds", "read_build_logs")


@dataclass(frozen=True)
class Result:
    """The outcome of one check."""

    verdict: str  # "ok" | "FAIL" | "skip"
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        """The printed line."""
        text = f"{self.verdict:<4}  {self.name}: {self.detail}"
        return text + (f"\n        fix: {self.fix}" if self.fix else "")


def ok(name: str, detail: str) -> Result:
    """A passed check."""
    return Result("ok", name, detail)


def fail(name: str, detail: str, fix: str) -> Result:
    """A failed check with its fix."""
    return Result("FAIL", name, detail, fix)


def check_database(settings: Settings) -> list[Result]:
    """The database opens at this tack's schema version and takes a real write; webhooks waiting in it."""
    name = f"database {settings.db_path}"
    try:
        conn = open_db(settings.db_path)
    except (sqlite3.Error, OSError) as exc:
        return [
            fail(
                name,
                f"cannot be opened ({exc})",
                "point TACK_DB_PATH at a writable file on persistent storage (a newer schema needs a newer tack)",
            )
        ]
    try:
        version = schema_version(conn)
        try:
            probe_write(conn)
        except sqlite3.Error as exc:
            return [
                fail(
                    name,
                    f"cannot be written ({exc})",
                    "free disk space, or point TACK_DB_PATH at a writable file on persistent storage",
                )
            ]
        waiting = WebhookQueue(conn, 0).pending()
    finally:
        conn.close()
    results = [
        ok(name, f"writable ({PROBE_BYTES >> 10} KiB probe), schema version {version}/{SCHEMA.version}")
    ]
    for provider, queued in sorted(waiting.items()):
        results.append(
            ok(
                f"webhooks for {provider}",
                f"{queued['queued']} stored, waiting for the provider (oldest {queued['oldest_s']:.0f}s old)",
            )
        )
    return results


def check_knots(settings: Settings) -> list[Result]:
    """The knots tack follows, what each speaks and when it last sent anything; pushes still waiting."""
    try:
        conn = open_db(settings.db_path)
    except (sqlite3.Error, OSError):
        return []
    try:
        followed = Registry(conn, settings.hostname, settings.owner_did).knots()
        rows = {
            knot: (speaks, cursor_ns, knot_clock)
            for knot, speaks, cursor_ns, knot_clock in conn.execute(
                "SELECT knot, speaks, cursor_ns, knot_clock FROM knot_cursors"
            )
        }
        repos = dict(
            conn.execute(
                "SELECT knot, COUNT(*) FROM repos WHERE spindle=? AND state IN ('legacy', 'verified') GROUP BY knot",
                (settings.hostname,),
            ).fetchall()
        )
        queued, failed = conn.execute(
            "SELECT (SELECT COUNT(*) FROM pushes WHERE state='queued'),"
            " (SELECT COUNT(*) FROM pipelines p JOIN workflows w ON w.knot=p.knot AND w.rkey=p.rkey"
            "  WHERE w.name='workflows' AND w.provider IS NULL AND p.origin IN ('push', 'recovered')"
            "  AND p.created_ns > ?)",
            (time.time_ns() - 86_400 * 10**9,),
        ).fetchone()
    finally:
        conn.close()
    results = []
    for knot in sorted(followed | set(rows)):
        speaks, cursor_ns, knot_clock = rows.get(knot, ("", 0, 0))
        protocol = {
            "current": "current Tangled (refUpdate)",
            "legacy": "the 2025 protocol (sh.tangled.pipeline)",
        }.get(speaks, "nothing yet")
        seen = f"cursor {(time.time_ns() - cursor_ns) / 1e9:.0f}s old" if cursor_ns else "never connected"
        state = "followed" if knot in followed else "no longer followed"
        results.append(
            ok(
                f"knot {knot}",
                f"{state}, {repos.get(knot, 0)} repositories; speaks {protocol}; {seen}{'' if knot_clock else ' (tack clock)'}",
            )
        )
    results.append(
        ok(
            "pushes",
            f"{queued} waiting for their workflows; {failed} pipelines in the last day could not load theirs",
        )
    )
    return results


async def check_running(settings: Settings) -> Result:
    """A control plane running here on TACK_LISTEN_ADDR: its readiness (what /readyz says)."""
    host, port = settings.listen
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{host}:{port}/readyz"
    name = f"running control plane {url}"
    try:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Result(
            "skip", name, f"not answering here ({type(exc).__name__}); the other checks still apply"
        )
    if isinstance(body, dict) and body.get("ready") is True:
        return ok(name, "ready")
    problems = body.get("problems") if isinstance(body, dict) else None
    return fail(
        name,
        "not ready: " + "; ".join(str(p) for p in problems or ["(no reason given)"]),
        "see /healthz?verbose=1 and the README's troubleshooting table",
    )


async def check_provider(name: str, address: str, tls_ca: bytes | None = None) -> Result:
    """The provider answers health SERVING and Describe."""
    label = f"provider {name} ({address})"
    async with client.channel(address, tls_ca) as channel:
        try:
            status = await health.check(channel, timeout=TIMEOUT_S)
            describe = await client.provider_stub(channel).Describe(pb.DescribeRequest(), timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            why = "timed out" if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else exc.code().name
            return fail(
                label,
                f"unreachable ({why} after at most {TIMEOUT_S:g}s)",
                f"start the {name} provider or fix its address in TACK_PROVIDERS",
            )
    if status != health.SERVING:
        return fail(
            label,
            "reachable but NOT_SERVING",
            f"read the {name} provider's logs: it is not ready (credentials? upstream down?)",
        )
    sim = ", a SIMULATION" if describe.simulation else ""
    if describe.name != name:
        return fail(
            label,
            f"answers as {describe.name!r}, not {name!r}",
            "make the TACK_PROVIDERS name match the provider (its `tack:` key)",
        )
    return ok(label, f"SERVING, {describe.name} {describe.version}{sim}")


async def check_buildkite(environ: Mapping[str, str]) -> Result:
    """The Buildkite token is valid, has the scopes tack needs and sees the org."""
    token = environ.get("TACK_BUILDKITE_TOKEN", "")
    if not token:
        return Result(
            "skip", "buildkite token", "TACK_BUILDKITE_TOKEN not set here (set it to check the token and org)"
        )
    api = environ.get("TACK_BUILDKITE_API_URL", "https://api.buildkite.com").rstrip("/")
    org = environ.get("TACK_BUILDKITE_ORG", "")
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            async with session.get(f"{api}/v2/access-token") as resp:
                if resp.status != 200:
                    return fail(
                        "buildkite token",
                        f"rejected (HTTP {resp.status})",
                        "create a new API access token in Buildkite and set TACK_BUILDKITE_TOKEN",
                    )
                scopes = set((await resp.json()).get("scopes", []))
            missing = [s for s in BUILDKITE_SCOPES if s not in scopes]
            if missing:
                return fail(
                    "buildkite token",
                    f"missing scopes: {', '.join(missing)}",
                    "edit the token in Buildkite to add " + ", ".join(missing),
                )
            if not org:
                return fail(
                    "buildkite org",
                    "TACK_BUILDKITE_ORG is not set",
                    "set TACK_BUILDKITE_ORG to your organization slug",
                )
            async with session.get(f"{api}/v2/organizations/{org}") as resp:
                if resp.status != 200:
                    return fail(
                        "buildkite org",
                        f"{org!r} not visible to this token (HTTP {resp.status})",
                        "check the slug and that the token is allowed in that organization",
                    )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return fail(
            "buildkite api",
            f"{api} unreachable ({type(exc).__name__}, timeout {TIMEOUT_S:g}s)",
            "check network access to Buildkite and TACK_BUILDKITE_API_URL",
        )
    return ok("buildkite token", f"valid, scopes ok, org {org!r} visible")


async def _provider_check(environ: Mapping[str, str], module: str, label: str, fix: str) -> Result:
    """Run ``python -m <module> check`` with this environment: its last ``ok`` line, or its ``FAIL`` lines."""
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            "check",
            env=dict(environ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 6 * TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        return fail(label, f"no answer within {6 * TIMEOUT_S:g}s", "check the address and the network")
    except OSError as exc:
        return fail(label, f"the check could not run ({exc})", f"install tack with {module}")
    lines = [line for line in out.decode("utf-8", "replace").splitlines() if line.strip()]
    if proc.returncode == 0:
        return ok(label, lines[-1].removeprefix("ok").strip() if lines else "access granted")
    return fail(
        label,
        "; ".join(line.removeprefix("FAIL").strip() for line in lines[-10:])
        or f"exit status {proc.returncode}",
        fix,
    )


async def check_tekton(environ: Mapping[str, str]) -> Result:
    """The Tekton provider's cluster access (``python -m tack_provider_tekton check``, with this environment)."""
    if not (environ.get("TACK_TEKTON_KUBECONFIG") or environ.get("TACK_TEKTON_NAMESPACE")):
        return Result("skip", "tekton cluster", "TACK_TEKTON_KUBECONFIG/TACK_TEKTON_NAMESPACE not set here")
    return await _provider_check(
        environ,
        "tack_provider_tekton",
        "tekton cluster",
        "apply deploy/kubernetes/rbac.yaml (or grant those verbs) to the provider's service account in its namespace",
    )


async def check_sourcehut(environ: Mapping[str, str]) -> Result:
    """The sourcehut provider's token (``python -m tack_provider_sourcehut check``, with this environment)."""
    if not environ.get("TACK_SOURCEHUT_TOKEN"):
        return Result("skip", "sourcehut token", "TACK_SOURCEHUT_TOKEN not set here")
    return await _provider_check(
        environ,
        "tack_provider_sourcehut",
        "sourcehut token",
        "make a personal access token at meta.sr.ht/oauth2 with builds.sr.ht/JOBS:RW and builds.sr.ht/LOGS:RO"
        " and set TACK_SOURCEHUT_TOKEN (and TACK_SOURCEHUT_INSTANCE for a self-hosted builds.sr.ht)",
    )


async def check_git() -> Result:
    """The git client is installed and at least MIN_GIT_VERSION (tack loads workflows from knots with it)."""
    wanted = ".".join(map(str, MIN_GIT_VERSION))
    fix = f"install git {wanted} or newer (Debian: apt-get install git)"
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        async with asyncio.timeout(TIMEOUT_S):
            out, _ = await proc.communicate()
    except FileNotFoundError:
        return fail("git client", "not installed", fix)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return fail("git client", f"`git --version` did not answer within {TIMEOUT_S:g}s", fix)
    version = parse_git_version(out.decode(errors="replace"))
    if version is None:
        return fail("git client", f"unrecognised version {out.decode(errors='replace').strip()[:80]!r}", fix)
    shown = ".".join(map(str, version))
    if version[:2] < MIN_GIT_VERSION:
        return fail("git client", f"git {shown} is too old (tack needs {wanted})", fix)
    return ok("git client", f"git {shown}")


async def check_jetstream(settings: Settings) -> Result:
    """The Jetstream URL accepts a WebSocket."""
    name = f"jetstream {settings.jetstream_url}"
    try:
        async with asyncio.timeout(TIMEOUT_S):
            async with connect(settings.jetstream_url, open_timeout=TIMEOUT_S, proxy=None) as ws:
                await ws.close()
    except TimeoutError:
        return fail(
            name, f"no answer within {TIMEOUT_S:g}s", "check outbound network access or TACK_JETSTREAM_URL"
        )
    except (OSError, websockets.exceptions.WebSocketException) as exc:
        return fail(name, f"unreachable ({str(exc)[:120]})", "check TACK_JETSTREAM_URL")
    return ok(name, "reachable")


async def check_plc(settings: Settings) -> Result:
    """The PLC directory answers (through the same address checks as DID resolution)."""
    name = f"plc directory {settings.plc_url}"
    fetcher = Fetcher(settings.dev, timeout_s=TIMEOUT_S, max_bytes=64 << 10)
    try:
        status, _, _ = await fetcher.get_bytes(f"{settings.plc_url}/_health", target="doctor")
    except (OSError, ValueError) as exc:
        return fail(
            name,
            f"unreachable ({str(exc)[:160]})",
            "check outbound network access or TACK_PLC_URL (DIDs of callers cannot be resolved meanwhile)",
        )
    finally:
        await fetcher.close()
    if status >= 500:
        return fail(name, f"answers HTTP {status}", "the PLC directory is failing; check TACK_PLC_URL")
    return ok(name, f"reachable (HTTP {status})")


async def check_owner(settings: Settings) -> Result:
    """``/xrpc/sh.tangled.owner`` at the public hostname answers with this owner."""
    scheme = "http" if settings.dev else "https"
    url = f"{scheme}://{settings.hostname}/xrpc/sh.tangled.owner"
    name = f"public owner check {url}"
    answer = await _get_json(url)
    if isinstance(answer, Exception):
        return fail(
            name,
            f"no valid answer within {TIMEOUT_S:g}s ({type(answer).__name__})",
            "make tack reachable at https://TACK_HOSTNAME (DNS, TLS proxy, firewall)",
        )
    status, body = answer
    if status != 200:
        return fail(
            name,
            f"HTTP {status} (Tangled requires exactly 200)",
            "route https://TACK_HOSTNAME/ to tack's TACK_LISTEN_ADDR without redirects",
        )
    owner = body.get("owner") if isinstance(body, dict) else None
    if owner != settings.owner_did:
        return fail(
            name,
            f"answers owner {owner!r}, expected {settings.owner_did!r}",
            "TACK_HOSTNAME points at another spindle, or TACK_OWNER_DID is wrong",
        )
    problem = await _did_document_problem(settings, f"{scheme}://{settings.hostname}/.well-known/did.json")
    if problem is not None:
        return problem
    return ok(name, f"answers {owner}; did.json names {did_web(settings.hostname)}")


async def _get_json(url: str) -> tuple[int, Any] | Exception:
    """(HTTP status, JSON body; None unless 200) of a GET that follows no redirect, or why there was no answer."""
    try:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                return resp.status, None
            return resp.status, await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return exc


async def _did_document_problem(settings: Settings, url: str) -> Result | None:
    """What is wrong with the public did.json (PDS service proxying reads it), or None."""
    name = f"public did.json {url}"
    expected = did_document(settings.hostname, settings.dev)
    fix = "route /.well-known/did.json to tack too (a PDS proxying calls to the spindle reads it)"
    answer = await _get_json(url)
    if isinstance(answer, Exception):
        return fail(name, f"no valid answer within {TIMEOUT_S:g}s ({type(answer).__name__})", fix)
    status, body = answer
    if status != 200:
        return fail(name, f"HTTP {status}", fix)
    services = body.get("service") if isinstance(body, dict) else None
    if not isinstance(body, dict) or body.get("id") != expected["id"] or services != expected["service"]:
        return fail(
            name,
            f"is not this spindle's document (expected id {expected['id']} with service"
            f" {expected['service'][0]['serviceEndpoint']}): {str(body)[:160]}",
            "serve tack's own /.well-known/did.json at TACK_HOSTNAME (another did.json is in the way)",
        )
    return None


async def check_registrations(settings: Settings) -> list[Result]:
    """Read the owner's and members' records from their PDSes, as reconciliation does, and compare with the database."""
    try:
        conn = open_db(settings.db_path)
    except (sqlite3.Error, OSError) as exc:
        return [Result("skip", "registrations", f"the database cannot be read ({exc})")]
    fetcher = Fetcher(settings.dev, timeout_s=TIMEOUT_S)
    reader = PdsReader(DidResolver(fetcher, settings.plc_url, dev=settings.dev), fetcher)
    limits = Limits(fetch_timeout_s=4 * TIMEOUT_S)
    try:
        registry = Registry(conn, settings.hostname, settings.owner_did)
        owner = settings.owner_did
        read = {owner: await read_did(reader, owner, (MEMBER, REPO, COLLABORATOR), limits)}
        members = _members(read[owner][0].get(MEMBER), settings.hostname, registry.members) - {owner}
        gate = asyncio.Semaphore(limits.concurrency)

        async def one(did: str) -> None:
            async with gate:
                read[did] = await read_did(reader, did, (REPO, COLLABORATOR), limits)

        await asyncio.gather(*(one(did) for did in sorted(members)))
        return _registrations_report(conn, registry, read)
    finally:
        conn.close()
        await fetcher.close()


def _members(snapshot: Snapshot | None, hostname: str, known: set[str]) -> set[str]:
    """The members the owner's member records name (what the database holds when they could not be read)."""
    if snapshot is None:
        return set(known)
    members = set()
    for value in snapshot.values():
        try:
            projection = project(MEMBER, value) if value is not None else None
        except BadRecord:
            continue
        if projection is not None and concerns(MEMBER, projection, hostname):
            members.add(projection[0])
    return members


def _registrations_report(
    conn: sqlite3.Connection,
    registry: Registry,
    read: Mapping[str, tuple[dict[str, Snapshot], Exception | None]],
) -> list[Result]:
    lines: list[str] = []
    counts = {MEMBER: 0, REPO: 0, COLLABORATOR: 0}
    states: dict[str, int] = {}
    failed: list[Result] = []
    for did, (snapshots, failure) in sorted(read.items()):
        for collection, snapshot in snapshots.items():
            mirrored = registry.mirrored(conn, did, collection)
            for rkey, value in sorted(snapshot.items()):
                try:
                    projection = project(collection, value) if value is not None else None
                except BadRecord:
                    projection = None
                if projection is None:
                    lines.append(f"{SHORT[collection]} {did}/{rkey}: unreadable on the PDS (ignored)")
                    continue
                if not concerns(collection, projection, registry.hostname):
                    continue
                counts[collection] += 1
                known = "" if rkey in mirrored else " (not yet in tack's database)"
                if collection == MEMBER:
                    lines.append(f"member {projection[0]}{known}")
                elif collection == COLLABORATOR:
                    lines.append(f"collaborator {projection[0]} on {projection[1]}, granted by {did}{known}")
                else:
                    row = conn.execute(
                        "SELECT state, reason FROM repos WHERE did=? AND rkey=?", (did, rkey)
                    ).fetchone()
                    state = "new" if row is None else row[0]
                    states[state] = states.get(state, 0) + 1
                    what = f"repo DID {projection[3]}" if projection[3] else f"name {projection[0]!r}"
                    status = state + (f" ({row[1][:120]})" if row is not None and row[1] else "")
                    lines.append(f"repo {did}/{rkey} ({what}, knot {projection[1]}): {status}{known}")
            for change in plan(collection, registry.hostname, mirrored, snapshot).changes:
                if change.kind == "removed":
                    lines.append(
                        f"{SHORT[collection]} {did}/{change.rkey}: in tack's database, no longer on the PDS"
                        " (removed at the next reconciliation)"
                    )
                elif change.kind == "updated":
                    lines.append(
                        f"{SHORT[collection]} {did}/{change.rkey}: changed on the PDS"
                        " (updated at the next reconciliation)"
                    )
        if failure is not None:
            failed.append(
                fail(
                    f"records of {did}",
                    f"could not be read: {str(failure)[:300]}",
                    "check that the DID's PDS (#atproto_pds in its DID document) is up and reachable from here;"
                    " tack keeps what it last read for this DID and retries with backoff",
                )
            )
    by_state = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    summary = (
        f"read {len(read) - len(failed)} of {len(read)} DIDs: {counts[MEMBER]} members, "
        f"{counts[REPO]} repositories{f' ({by_state})' if by_state else ''}, {counts[COLLABORATOR]} collaborators"
    )
    detail = "".join(f"\n        {line}" for line in lines)
    return [ok("registrations", summary + detail), *failed]


async def run_checks(environ: Mapping[str, str]) -> list[Result]:
    """Every check, in order; configuration errors stop the rest."""
    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        return [
            fail("configuration", str(exc), "set the variable as the README's configuration table describes")
        ]
    results = [
        ok("configuration", f"hostname {settings.hostname}, owner {settings.owner_did}"),
        *check_database(settings),
        *check_knots(settings),
    ]
    if not settings.providers:
        results.append(
            fail(
                "providers",
                "TACK_PROVIDERS is empty",
                "set TACK_PROVIDERS=name=host:port,... (e.g. stub=127.0.0.1:7102)",
            )
        )
    checks: list[Callable[[], Awaitable[Result]]] = [
        *(
            lambda n=n, a=a: check_provider(n, a, settings.provider_tls_ca)
            for n, a in settings.providers.items()
        ),
        check_git,
        lambda: check_buildkite(environ),
        lambda: check_tekton(environ),
        lambda: check_sourcehut(environ),
        lambda: check_jetstream(settings),
        lambda: check_plc(settings),
        lambda: check_owner(settings),
        lambda: check_running(settings),
    ]
    results.extend(await asyncio.gather(*(c() for c in checks)))
    plc = next(r for r in results if r.name.startswith("plc directory"))
    if plc.verdict == "ok":
        results.extend(await check_registrations(settings))
    else:
        results.append(
            Result("skip", "registrations", "the PLC directory is unreachable, so no DID can be resolved")
        )
    return results


def main(argv: list[str]) -> int:
    """Print the checks; 1 if any failed."""
    del argv
    results = asyncio.run(run_checks(os.environ))
    for result in results:
        print(result.line(), flush=True)
    failed = sum(r.verdict == "FAIL" for r in results)
    print(
        f"\n{len(results) - failed} passed, {failed} failed"
        if failed
        else f"\nall {len(results)} checks passed"
    )
    return 1 if failed else 0
