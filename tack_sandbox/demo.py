"""The sample repository the sandbox hosts: two workflows for the stub provider, one that passes and one
that fails, so both kinds of status and log are visible; both run for pushes and pull requests to main
and for manual runs."""

from __future__ import annotations

from tack_sandbox._loopback import JsonObject
from tack_sandbox.knot import workflow_entry


WHEN = """\
when:
  - event: ["push", "pull_request", "manual"]
    branch: ["main"]
engine: tack
"""

BUILD_YML = f"""\
# A simulated build: the stub provider prints these lines over about ten seconds.
{WHEN}tack:
  stub:
    steps:
      - name: checkout
        command: git clone --depth 1 $REPO .
        output: ["Cloning into '.'...", "HEAD is now at 9f2c1e0 sample commit"]
        duration: 1
      - name: build
        command: make build
        output: ["cc -O2 -c main.c", "cc -o hello main.o", "build ok"]
        duration: 2
      - name: test
        command: make test
        output_count: 20
        duration: 7
"""

LINT_YML = f"""\
# A simulated lint run that fails, to show a failed status with its exit code.
{WHEN}tack:
  stub:
    steps:
      - name: lint
        command: ruff check .
        output: ["main.py:3:1: F401 'os' imported but unused", "Found 1 error."]
        stream: stderr
        duration: 2
    outcome: failed
    exit_code: 1
    error: "lint found 1 error"
"""

README_MD = """\
# sample

The repository tack's sandbox hosts on its simulated knot. `.tangled/workflows/` holds its CI:
`build.yml` passes, `lint.yml` fails. Both run on pushes and pull requests to `main`.
"""

MAIN_C = """\
#include <stdio.h>

int main(void) {
    puts("hello from the tack sandbox");
    return 0;
}
"""


def repository_files() -> dict[str, str | bytes | None]:
    """The sample repository's first commit: its workflows, a README and a source file."""
    return {
        ".tangled/workflows/build.yml": BUILD_YML,
        ".tangled/workflows/lint.yml": LINT_YML,
        "README.md": README_MD,
        "src/main.c": MAIN_C,
    }


def workflows() -> list[JsonObject]:
    """The sample pipeline's workflows as a 2025-protocol knot compiles them (legacy mode)."""
    return [
        workflow_entry("build.yml", BUILD_YML, engine="tack"),
        workflow_entry("lint.yml", LINT_YML, engine="tack"),
    ]
