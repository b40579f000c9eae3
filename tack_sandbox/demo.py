"""The sample pipeline the sandbox pushes: two workflows for the stub provider, one that passes and one
that fails, so both kinds of status and log are visible."""

from __future__ import annotations

from tack_sandbox.knot import workflow_entry


BUILD_YML = """\
# A simulated build: the stub provider prints these lines over a few seconds.
when:
  - event: ["push"]
    branch: ["main"]
engine: tack
tack:
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
        duration: 3
"""

LINT_YML = """\
# A simulated lint run that fails, to show a failed status with its exit code.
when:
  - event: ["push"]
    branch: ["main"]
engine: tack
tack:
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


def workflows() -> list[dict[str, object]]:
    """The sample pipeline's workflows as the knot compiles them."""
    return [
        workflow_entry("build.yml", BUILD_YML, engine="tack"),
        workflow_entry("lint.yml", LINT_YML, engine="tack"),
    ]
