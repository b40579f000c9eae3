"""Loading ``.tangled/workflows/*`` at a commit from a knot over git smart HTTP, anonymously, bounded.

How (git 2.39, Debian 12's, has no ``clone --revision``): one bare repository per knot repository in
a cache directory, reused across pushes, ``git init [--object-format=sha256 for 64-hex SHAs]``, then

1. ``fetch --depth=1 --filter=blob:none origin <sha>``: the commit and its trees, no file contents.
   (``--filter=tree:0``, as Tangled's spindle uses, ends in the same bytes: the first lazy fetch of a
   missing tree asks for it with ``blob:none`` and gets every tree below it; this does it in one
   round trip instead of two.)
2. ``ls-tree -z <sha> .tangled/workflows/``: the directory's entries, counted as they stream in; too
   many files fail here, before any content is fetched. Only regular files directly in the directory
   are workflows: subdirectories, submodules and **symlinks are skipped** (Tangled's spindle reads a
   symlink's target path as if it were the workflow's text, which never parses as a workflow; tack
   says it skipped it instead).
3. ``fetch --filter=blob:none origin <blob>…``: those files' contents in one request. (Their sizes
   cannot be learnt before fetching: ``ls-tree -l`` lazily fetches each blob to size it. A sparse
   checkout would fetch the same blobs and write them out unchecked.)
4. ``cat-file --batch``: their bytes, each object's size (in git's header, before its bytes) checked
   against the per-file and total limits as the output streams in.

On a cached repository the commit and the blobs already there are looked up first (``cat-file
--batch-check``), so a push that changes no workflow fetches only its trees, and a repeated push
nothing at all.

Bounds, each failing with ``GitFetchError`` naming the limit: an overall deadline, curl's low-speed
abort for a stalled transfer, the bytes written into the object store during fetches (git is killed
past it), the number of entries in the directory, each file's size and their total size. One lock
per repository serializes fetches of the same repository; the cache is bounded in size (least
recently used repositories are removed) and a repository directory that fails is removed, so a
corrupt cache heals on the next push. Hardening of the git process itself is in ``gitcli``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tack_control import metrics
from tack_control.ingest.addresses import AddressRefused, split_knot, vet_host
from tack_control.ingest.gitcli import (
    ByteBudget,
    GitFetchError,
    Remote,
    base_env,
    remote_options,
    run_git,
    tree_size,
)
from tack_control.ingest.workflow_yaml import MAX_YAML_BYTES


log = logging.getLogger(__name__)

WORKFLOW_DIR = b".tangled/workflows/"
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REPO_DID = re.compile(r"did:[a-z]+:(?:[A-Za-z0-9._:-]|%[0-9A-Fa-f]{2}){1,2048}")
_REGULAR_MODES = (b"100644", b"100755")


@dataclass(frozen=True)
class FetchLimits:
    """Bounds on one load from a knot."""

    deadline_s: float = 30.0
    stall_s: float = 10.0
    max_fetch_bytes: int = 16 << 20
    max_files: int = 256
    max_file_bytes: int = MAX_YAML_BYTES  # a larger workflow could not be read anyway
    max_total_bytes: int = 4 << 20
    max_refs: int = 10_000
    max_cache_bytes: int = 2 << 30
    max_repo_cache_bytes: int = 256 << 20
    max_repo_packs: int = 64
    trim_interval_s: float = 60.0


@dataclass(frozen=True)
class WorkflowFile:
    """One file of ``.tangled/workflows`` at the commit: its name (no directory) and raw bytes."""

    name: str
    data: bytes

    @property
    def text(self) -> str:
        """The contents as text (invalid UTF-8 replaced, as Go's JSON encoding of the record would)."""
        return self.data.decode("utf-8", "replace")


@dataclass
class FetchTimings:
    """Where the time of one load went, in seconds."""

    resolve: float = 0.0
    lock_wait: float = 0.0
    fetch_trees: float = 0.0
    list: float = 0.0
    fetch_blobs: float = 0.0
    read: float = 0.0
    total: float = 0.0
    bytes_fetched: int = 0


@dataclass(frozen=True)
class FetchedWorkflows:
    """The workflow files at a commit (bytewise name order), what was skipped and why, and the timings."""

    files: tuple[WorkflowFile, ...]
    skipped: tuple[tuple[str, str], ...]
    timings: FetchTimings


@dataclass(frozen=True)
class RemoteRefs:
    """A repository's branches and tags (annotated tags peeled to their commit) and the branch HEAD names."""

    head: str | None
    refs: dict[str, str] = field(default_factory=dict)


def clone_url(knot: str, repo_did: str, *, dev: bool) -> str:
    """``https://<knot>/<repoDid>`` (``http://`` in dev), the URL Tangled's spindle fetches from."""
    return f"{'http' if dev else 'https'}://{knot}/{repo_did}"


def _name_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _check_request(repo_did: str, sha: str | None) -> None:
    if not _REPO_DID.fullmatch(repo_did):
        raise GitFetchError("invalid_request", f"not a repo DID: {repo_did[:100]!r}")
    if sha is not None and (not _SHA.fullmatch(sha) or set(sha) == {"0"}):
        raise GitFetchError("invalid_request", f"not a commit SHA (40 or 64 lowercase hex): {sha[:100]!r}")


async def _remote(knot: str, repo_did: str, *, dev: bool) -> Remote:
    try:
        host, port = split_knot(knot, 80 if dev else 443)
        endpoint = await vet_host(host, port, dev=dev)
    except AddressRefused as exc:
        raise GitFetchError(exc.reason, str(exc)) from None
    shown = host if port == (80 if dev else 443) else f"{host}:{port}"
    return Remote(clone_url(shown, repo_did, dev=dev), endpoint, dev)


def _count(operation: str, outcome: str, seconds: float) -> None:
    metrics.GIT_FETCHES.labels(operation, outcome).inc()
    metrics.GIT_FETCH_SECONDS.labels(operation).observe(seconds)


class WorkflowFetcher:
    """Loads workflow files from knots into a bounded cache directory; one fetch per repository at a time."""

    def __init__(self, cache_dir: Path, *, dev: bool = False, limits: FetchLimits | None = None) -> None:
        self.cache_dir = cache_dir
        self.dev = dev
        self.limits = limits or FetchLimits()
        self._locks: dict[str, asyncio.Lock] = {}
        self._trimmed = -float("inf")

    def repo_dir(self, url: str, sha: str) -> Path:
        """The cache directory of a repository (one per clone URL and object format)."""
        fmt = "sha256" if len(sha) == 64 else "sha1"
        return self.cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:32]}-{fmt}"

    async def fetch(self, knot: str, repo_did: str, sha: str) -> FetchedWorkflows:
        """The files of ``.tangled/workflows`` at ``sha``; GitFetchError (logged and counted) when it fails."""
        started = time.monotonic()
        try:
            result = await self._fetch(knot, repo_did, sha, started)
        except GitFetchError as exc:
            elapsed = time.monotonic() - started
            _count("workflows", exc.reason, elapsed)
            log.warning(
                "loading workflows failed",
                extra={
                    "knot": knot,
                    "repo_did": repo_did,
                    "sha": sha,
                    "reason": exc.reason,
                    "error": str(exc),
                },
            )
            raise
        _count("workflows", "ok", result.timings.total)
        return result

    async def _fetch(self, knot: str, repo_did: str, sha: str, started: float) -> FetchedWorkflows:
        _check_request(repo_did, sha)
        deadline = started + self.limits.deadline_s
        timings = FetchTimings()
        remote = await _remote(knot, repo_did, dev=self.dev)
        timings.resolve = time.monotonic() - started
        directory = self.repo_dir(remote.url, sha)
        lock = self._locks.setdefault(str(directory), asyncio.Lock())
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await lock.acquire()
        except TimeoutError:
            raise GitFetchError(
                "timeout", "waited past the deadline for another fetch of this repository"
            ) from None
        try:
            timings.lock_wait = time.monotonic() - started - timings.resolve
            reused = directory.exists()
            try:
                files, skipped = await self._load(directory, remote, sha, deadline, timings)
            except GitFetchError as exc:
                await asyncio.to_thread(shutil.rmtree, directory, True)
                if not (reused and exc.reason in ("git_failed", "not_found")):
                    raise
                # Perhaps a damaged cache directory (objects lost, config broken): once more from scratch.
                files, skipped = await self._load(directory, remote, sha, deadline, timings)
            (directory / "tack-last-used").touch()
        finally:
            lock.release()
        if time.monotonic() - self._trimmed >= self.limits.trim_interval_s:
            self._trimmed = time.monotonic()
            await self._trim_cache(keep=directory)
        timings.total = time.monotonic() - started
        return FetchedWorkflows(files, skipped, timings)

    async def _trim_cache(self, keep: Path) -> None:
        """Remove least recently used repositories while the cache is over its size limit."""

        def trim() -> None:
            entries = []
            total = 0
            for child in self.cache_dir.iterdir():
                if not child.is_dir():
                    continue
                size = tree_size(child)
                stamp = child / "tack-last-used"
                used = stamp.stat().st_mtime if stamp.exists() else 0.0
                entries.append((used, child, size))
                total += size
            for _, child, size in sorted(entries, key=lambda e: e[0]):
                if total <= self.limits.max_cache_bytes:
                    break
                lock = self._locks.get(str(child))
                if child == keep or (lock is not None and lock.locked()):
                    continue
                shutil.rmtree(child, ignore_errors=True)
                total -= size

        await asyncio.to_thread(trim)

    async def _load(
        self, directory: Path, remote: Remote, sha: str, deadline: float, timings: FetchTimings
    ) -> tuple[tuple[WorkflowFile, ...], tuple[tuple[str, str], ...]]:
        repo = _CachedRepo(directory, remote, self.limits, base_env(self.cache_dir), deadline)
        fresh = await self._prepare(repo, sha)

        mark = time.monotonic()
        if fresh or await repo.missing([sha]):
            await repo.fetch("--depth=1", sha)
        timings.fetch_trees = time.monotonic() - mark

        mark = time.monotonic()
        regular, skipped = parse_ls_tree(await repo.list_workflows(sha))
        timings.list = time.monotonic() - mark

        mark = time.monotonic()
        oids = sorted({oid for _, oid in regular})
        missing = oids if fresh else await repo.missing(oids)
        if missing:
            await repo.fetch(*missing)
        timings.fetch_blobs = time.monotonic() - mark
        timings.bytes_fetched = self.limits.max_fetch_bytes - repo.budget.remaining

        mark = time.monotonic()
        files = await repo.read(regular)
        timings.read = time.monotonic() - mark
        return files, skipped

    async def _prepare(self, repo: _CachedRepo, sha: str) -> bool:
        """A bare repository for this knot repository; True when it was just created.

        A cached one is started afresh when it is not a repository, too big, or holds too many packs
        (each load adds up to two, and git does not repack here; many packs slow every look-up).
        """
        directory = repo.directory
        if directory.exists():
            size, packs = await asyncio.to_thread(_size_and_packs, directory)
            limits = self.limits
            if (
                not (directory / "config").is_file()
                or size > limits.max_repo_cache_bytes
                or packs > limits.max_repo_packs
            ):
                await asyncio.to_thread(shutil.rmtree, directory, True)
        fresh = not directory.exists()
        if fresh:
            directory.parent.mkdir(parents=True, exist_ok=True)
            fmt = "sha256" if len(sha) == 64 else "sha1"
            await repo.git(
                "init",
                "--quiet",
                "--bare",
                "--template=",
                f"--object-format={fmt}",
                str(directory),
                local=True,
            )
        repo.write_config()  # also undoes what a fetch killed half-way left behind
        return fresh


def _size_and_packs(directory: Path) -> tuple[int, int]:
    """Bytes under ``directory`` and the number of pack files in its object store."""
    try:
        packs = sum(1 for p in (directory / "objects" / "pack").iterdir() if p.suffix == ".pack")
    except FileNotFoundError:
        packs = 0
    return tree_size(directory), packs


class _CachedRepo:
    """The git commands of one load, on one cache repository, under one deadline and byte budget."""

    def __init__(
        self, directory: Path, remote: Remote, limits: FetchLimits, env: dict[str, str], deadline: float
    ):
        self.directory = directory
        self.remote = remote
        self.limits = limits
        self.env = env
        self.deadline = deadline
        self.budget = ByteBudget(directory / "objects", limits.max_fetch_bytes)

    async def git(self, *args: str, local: bool = False, **kwargs: Any) -> bytes:
        """Run git on this repository (``local``: no ``--git-dir``, e.g. for ``init``)."""
        prefix = [] if local else ["--git-dir", str(self.directory)]
        return await run_git([*prefix, *args], env=self.env, deadline=self.deadline, **kwargs)

    async def fetch(self, *what: str) -> None:
        """Fetch commits (with their trees) or blobs by id, without file contents, within the byte budget.

        git records the remote as a "promisor" after a filtered fetch, which makes every later local
        read of a missing object fetch it, one round trip each and outside these steps. tack rewrites
        the configuration at once: the reads below stay local, and every byte comes through a bounded
        fetch.
        """
        options = remote_options(self.remote, stall_seconds=self.limits.stall_s)
        try:
            await self.git(
                *options, "fetch", "--quiet", "--filter=blob:none", "--no-tags", "--no-write-fetch-head",
                "--no-recurse-submodules", "origin", *what, budget=self.budget,
            )  # fmt: skip
        finally:
            self.write_config()

    def write_config(self) -> None:
        """The repository's whole configuration: its object format and the knot as ``origin``, nothing else."""
        sha256 = self.directory.name.endswith("-sha256")
        url = self.remote.url.replace("\\", "\\\\").replace('"', '\\"')
        text = "[core]\n\trepositoryformatversion = 1\n\tbare = true\n"
        if sha256:
            text += "[extensions]\n\tobjectformat = sha256\n"
        text += f'[remote "origin"]\n\turl = "{url}"\n'
        (self.directory / "config").write_text(text)

    async def missing(self, oids: list[str]) -> list[str]:
        """Which of ``oids`` are not in the repository (a local look-up)."""
        if not oids:
            return []
        out = await self.git("cat-file", "--batch-check", stdin="".join(f"{o}\n" for o in oids).encode())
        return [line.split()[0] for line in out.decode().splitlines() if line.endswith(" missing")]

    async def list_workflows(self, sha: str) -> bytes:
        """``ls-tree -z`` of ``.tangled/workflows`` at ``sha``, stopped as soon as it has too many entries."""
        limit = self.limits.max_files

        def too_many(out: bytearray) -> None:
            if out.count(b"\0") > limit:
                raise GitFetchError(
                    "too_many_files", f".tangled/workflows has more than {limit} entries (limit)"
                )

        return await self.git(
            "ls-tree", "-z", sha, "--", WORKFLOW_DIR.decode(), max_output=64 << 20, check_output=too_many
        )

    async def read(self, regular: list[tuple[str, str]]) -> tuple[WorkflowFile, ...]:
        """The regular files' bytes; each size, and their total, checked from git's headers as they stream in."""
        if not regular:
            return ()
        limits = self.limits
        names = {oid: name for name, oid in regular}
        check = _BatchCheck(names, limits.max_file_bytes, limits.max_total_bytes)
        oids = "".join(f"{oid}\n" for oid in names).encode()
        out = await self.git(
            "cat-file", "--batch", stdin=oids, max_output=limits.max_total_bytes + 200 * len(names) + 200,
            check_output=check,
        )  # fmt: skip
        check(out, final=True)
        blobs = parse_batch(out)
        files = [WorkflowFile(name, blobs[oid]) for name, oid in regular]
        return tuple(sorted(files, key=lambda f: _name_bytes(f.name)))


class _BatchCheck:
    """Checks ``cat-file --batch`` output while it streams: no missing object, sizes within the limits."""

    def __init__(self, names: dict[str, str], max_file: int, max_total: int) -> None:
        self.names = names
        self.max_file = max_file
        self.max_total = max_total
        self.at = 0
        self.total = 0

    def __call__(self, out: bytes | bytearray, final: bool = False) -> None:
        while (end := out.find(b"\n", self.at)) >= 0:
            header = out[self.at : end].decode(errors="replace").split(" ")
            oid = header[0]
            name = f".tangled/workflows/{self.names.get(oid, oid)}"
            if len(header) != 3:
                raise GitFetchError("not_found", f"the knot did not send {name}")
            size = int(header[2])
            if size > self.max_file:
                raise GitFetchError(
                    "file_too_large",
                    f"{name} is {size} bytes; the limit per workflow file is {self.max_file}",
                )
            self.total += size
            if self.total > self.max_total:
                raise GitFetchError(
                    "total_too_large",
                    f"the workflow files add up to more than {self.max_total} bytes (the limit)",
                )
            self.at = end + 1 + size + 1
            if self.at > len(out):
                break
        if final and self.at != len(out):
            raise GitFetchError("git_failed", "cat-file --batch ended in the middle of an object")


def parse_ls_tree(listing: bytes) -> tuple[list[tuple[str, str]], tuple[tuple[str, str], ...]]:
    """``ls-tree -z`` output → ([(name, blob id)] of regular files, [(name, why skipped)]); names without the directory."""
    regular: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, kind, oid = meta.split(b" ")
        raw_name = path[len(WORKFLOW_DIR) :] if path.startswith(WORKFLOW_DIR) else path
        name = raw_name.decode("utf-8", "surrogateescape")
        if kind == b"blob" and mode in _REGULAR_MODES:
            regular.append((name, oid.decode()))
        elif kind == b"blob" and mode == b"120000":
            skipped.append((name, "a symbolic link (not followed)"))
        elif kind == b"tree":
            skipped.append((name, "a directory (workflows are the files directly in .tangled/workflows)"))
        else:
            skipped.append((name, f"not a regular file (mode {mode.decode()})"))
    return regular, tuple(skipped)


def parse_batch(out: bytes) -> dict[str, bytes]:
    """``cat-file --batch`` output → blob id → contents."""
    blobs = {}
    at = 0
    while at < len(out):
        end = out.index(b"\n", at)
        oid, _, size = out[at:end].decode().split(" ")
        start = end + 1
        blobs[oid] = out[start : start + int(size)]
        at = start + int(size) + 1
    return blobs


async def ls_remote_refs(
    knot: str, repo_did: str, *, dev: bool = False, limits: FetchLimits | None = None
) -> RemoteRefs:
    """The repository's current branches and tags (``git ls-remote --symref``), for missed-push recovery."""
    limits = limits or FetchLimits()
    started = time.monotonic()
    try:
        _check_request(repo_did, None)
        remote = await _remote(knot, repo_did, dev=dev)

        def too_many(out: bytearray) -> None:
            if out.count(b"\n") > 2 * limits.max_refs + 2:
                raise GitFetchError(
                    "too_many_bytes", f"the repository has more than {limits.max_refs} refs (limit)"
                )

        out = await run_git(
            [*remote_options(remote, stall_seconds=limits.stall_s), "ls-remote", "--symref", remote.url],
            env=base_env(Path(tempfile.gettempdir())), deadline=started + limits.deadline_s,
            max_output=limits.max_refs * 400, check_output=too_many,
        )  # fmt: skip
        refs = parse_ls_remote(out.decode(errors="replace"))
    except GitFetchError as exc:
        _count("refs", exc.reason, time.monotonic() - started)
        log.warning(
            "listing refs failed",
            extra={"knot": knot, "repo_did": repo_did, "reason": exc.reason, "error": str(exc)},
        )
        raise
    _count("refs", "ok", time.monotonic() - started)
    return refs


def parse_ls_remote(text: str) -> RemoteRefs:
    """``ls-remote --symref`` output → branches and tags (peeled) and the branch HEAD points at."""
    head = None
    refs: dict[str, str] = {}
    peeled: dict[str, str] = {}
    for line in text.splitlines():
        left, _, name = line.partition("\t")
        if left.startswith("ref: "):
            if name == "HEAD":
                head = left[len("ref: ") :]
            continue
        if not _SHA.fullmatch(left):
            continue
        if name.endswith("^{}"):
            peeled[name[:-3]] = left
        elif name.startswith(("refs/heads/", "refs/tags/")):
            refs[name] = left
    for name, oid in peeled.items():
        if name in refs:
            refs[name] = oid
    return RemoteRefs(head, refs)
