"""The sandbox's commands: what `make trigger`, `make ci-run` and `make ci-cancel` run, and their answers without a sandbox."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tack_sandbox.launcher import main
from tests.support.codefacts import ROOT


def make_dry_run(*args: str) -> str:
    """The sandbox command ``make -n args`` would run (as from a shell: not as a sub-make of ``make test``)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    }
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    [command] = [line for line in done.stdout.splitlines() if "-m tack_sandbox" in line]
    return command.strip()


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (("trigger",), "-m tack_sandbox trigger"),
        (("trigger", "PR=1"), "-m tack_sandbox trigger --pr"),
        (("trigger", "PR=0"), "-m tack_sandbox trigger"),
        (("ci-run",), "-m tack_sandbox run-ci"),
        (("ci-run", "PIPELINE=3n3obufex7v22"), "-m tack_sandbox run-ci --pipeline 3n3obufex7v22"),
        (("ci-cancel",), "-m tack_sandbox cancel"),
        (("ci-cancel", "PIPELINE=3n3obufex7v22"), "-m tack_sandbox cancel --pipeline 3n3obufex7v22"),
    ],
)
def test_make_targets_pass_their_variables(args: tuple[str, ...], command: str) -> None:
    """PR=1 opens a pull request and PIPELINE=<id> names a pipeline; without them the defaults run."""
    assert make_dry_run(*args).endswith(command)


@pytest.mark.parametrize(
    "argv", [["trigger"], ["trigger", "--pr"], ["run-ci"], ["cancel", "--pipeline", "x"]]
)
def test_commands_without_a_sandbox_say_so(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command exits 1 and tells the person to start `make run` when no sandbox runs in TACK_DATA_DIR."""
    monkeypatch.setenv("TACK_DATA_DIR", str(tmp_path))
    assert main(argv) == 1
    assert "make run" in capsys.readouterr().out


def test_an_unknown_sandbox_protocol_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """TACK_SANDBOX_PROTOCOL other than current or legacy stops the launcher at once, naming the variable."""
    monkeypatch.setenv("TACK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TACK_SANDBOX_PROTOCOL", "v3")
    for name in ("TACK_HOSTNAME", "TACK_OWNER_DID"):
        monkeypatch.delenv(name, raising=False)
    assert main([]) == 1
    assert "TACK_SANDBOX_PROTOCOL" in capsys.readouterr().out
    assert not (tmp_path / "sandbox").exists()
