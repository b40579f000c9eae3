"""Real git repositories for the sandbox knot and the tests: create bare repos, commit files, push.

Everything is done with the ``git`` command: a commit is made in a temporary work tree (a clone of
the bare repository) and pushed back, so the bare repository sees a real push. SHA-256 repositories
are made when the local git supports ``--object-format=sha256`` (``sha256_supported``).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


ObjectFormat = Literal["sha1", "sha256"]
ZERO = {"sha1": "0" * 40, "sha256": "0" * 64}
_IDENTITY = {
    "GIT_AUTHOR_NAME": "Sandbox Author",
    "GIT_AUTHOR_EMAIL": "author@sandbox.invalid",
    "GIT_COMMITTER_NAME": "Sandbox Author",
    "GIT_COMMITTER_EMAIL": "author@sandbox.invalid",
}


class GitCommandError(RuntimeError):
    """A git command failed; the message has its stderr."""


@dataclass(frozen=True)
class Symlink:
    """A file that is a symbolic link to ``target``."""

    target: str


@dataclass(frozen=True)
class Executable:
    """A file with the executable bit."""

    content: bytes


FileContent = str | bytes | Symlink | Executable | None  # None deletes the path


@dataclass(frozen=True)
class Push:
    """What a push changed: the ref, its old and new SHA (zeros when absent) and the files changed."""

    ref: str
    old_sha: str
    new_sha: str
    changed_files: tuple[str, ...]


def _env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": tempfile.gettempdir(),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "LC_ALL": "C",
        **_IDENTITY,
    }


async def git(*args: str, cwd: Path | None = None) -> str:
    """Run ``git args…`` (no system or user config) and return its stdout; GitCommandError on failure."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        "-c",
        "core.autocrlf=false",
        "-c",
        "commit.gpgsign=false",
        "-c",
        "tag.gpgsign=false",
        *args,
        cwd=cwd,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise GitCommandError(f"git {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out.decode()


async def sha256_supported() -> bool:
    """Whether the local git can create SHA-256 repositories."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            await git("init", "-q", "--bare", "--object-format=sha256", tmp)
        except GitCommandError:
            return False
    return True


async def create_repository(
    path: Path, *, object_format: ObjectFormat = "sha1", branch: str = "main"
) -> Path:
    """A new empty bare repository at ``path`` whose HEAD names ``branch``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    await git(
        "init", "-q", "--bare", f"--object-format={object_format}", f"--initial-branch={branch}", str(path)
    )
    return path


async def object_format(repo: Path) -> ObjectFormat:
    """The repository's object format."""
    fmt = (await git("rev-parse", "--show-object-format", cwd=repo)).strip()
    return "sha256" if fmt == "sha256" else "sha1"


async def commit(
    repo: Path,
    files: Mapping[str, FileContent],
    *,
    branch: str = "main",
    message: str = "sandbox commit",
    replace: bool = False,
    base: str | None = None,
) -> Push:
    """Commit ``files`` (path → content; None deletes) on ``branch`` of the bare ``repo`` and push it.

    Paths are relative to the repository root. With ``replace`` every other file is removed, so the
    commit holds exactly ``files``. A ``branch`` that does not exist yet starts from the branch
    ``base`` (a new branch with its own history when ``base`` is None).
    """
    ref = f"refs/heads/{branch}"
    fmt = await object_format(repo)
    with tempfile.TemporaryDirectory(prefix="tack-commit-") as tmp:
        work = Path(tmp) / "work"
        await git("init", "-q", f"--object-format={fmt}", str(work))
        await git("remote", "add", "origin", str(repo), cwd=work)
        old = ZERO[fmt]
        heads = await git("ls-remote", "origin", ref, cwd=work)
        if heads.strip():
            old = heads.split()[0]
            await git("fetch", "-q", "origin", ref, cwd=work)
            await git("checkout", "-q", old, cwd=work)
        elif base is not None:
            await git("fetch", "-q", "origin", f"refs/heads/{base}", cwd=work)
            await git("checkout", "-q", "FETCH_HEAD", cwd=work)
        if replace:
            await git("rm", "-rq", "--ignore-unmatch", ".", cwd=work)
        _write(work, files)
        await git("add", "-A", cwd=work)
        await git("commit", "-q", "--allow-empty", "-m", message, cwd=work)
        new = (await git("rev-parse", "HEAD", cwd=work)).strip()
        await git("push", "-q", "origin", f"HEAD:{ref}", cwd=work)
        if old == ZERO[fmt]:
            changed = await git("ls-tree", "-r", "--name-only", "-z", new, cwd=work)
        else:
            changed = await git("diff", "--name-only", "-z", "--no-renames", old, new, cwd=work)
    return Push(ref, old, new, tuple(p for p in changed.split("\0") if p))


def _write(work: Path, files: Mapping[str, FileContent]) -> None:
    for name, content in files.items():
        path = work / name
        if content is None:
            if path.is_symlink() or path.exists():
                path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        if isinstance(content, Symlink):
            path.symlink_to(content.target)
        elif isinstance(content, Executable):
            path.write_bytes(content.content)
            path.chmod(0o755)
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)


async def tag(repo: Path, name: str, sha: str, *, message: str | None = None) -> None:
    """Tag ``sha`` in the bare ``repo``: lightweight, or annotated when ``message`` is given."""
    if message is None:
        await git("tag", name, sha, cwd=repo)
    else:
        await git("tag", "-a", "-m", message, name, sha, cwd=repo)


async def delete_ref(repo: Path, ref: str) -> None:
    """Delete ``ref`` from the bare ``repo``."""
    await git("update-ref", "-d", ref, cwd=repo)
