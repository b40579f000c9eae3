"""The stub's workflow script: parsing and validating ``tack: {stub: {...}}``, free of I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tack_provider_kit.provider import InvalidArgument


OUTCOMES = ("success", "failed", "timeout", "cancelled")
STREAMS = ("stdout", "stderr")
MAX_STEPS = 1000
MAX_SECONDS = 86_400.0
MAX_LINES = 10_000_000


@dataclass(frozen=True)
class Step:
    """One scripted step: its output lines are spread evenly over ``duration`` seconds."""

    name: str
    command: str = ""
    output: tuple[str, ...] = ()
    output_count: int = 0
    duration: float = 0.0
    stream: str = "stdout"

    @property
    def line_count(self) -> int:
        """How many data lines the step prints."""
        return len(self.output) + self.output_count

    def line(self, index: int) -> str:
        """The ``index``-th data line: the scripted ones, then generated ones."""
        if index < len(self.output):
            return self.output[index]
        return f"{self.name}: line {index - len(self.output) + 1}"


DEFAULT_STEPS = (
    Step(
        name="prepare", command="tack-stub prepare", output=("preparing a simulated workspace",), duration=0.2
    ),
    Step(
        name="build",
        command="tack-stub build",
        output=("building (simulated)...", "build ok"),
        duration=0.3,
    ),
)


@dataclass(frozen=True)
class Script:
    """How a stub run goes: pending for ``queue_seconds``, then the steps, then ``outcome``."""

    steps: tuple[Step, ...] = DEFAULT_STEPS
    queue_seconds: float = 0.1
    outcome: str = "success"
    exit_code: int = 1
    error: str = ""

    def failure_message(self) -> str:
        """The error reported for a ``failed`` outcome."""
        if self.error:
            return self.error
        last = self.steps[-1].name if self.steps else "workflow"
        return f"step {last!r} exited with status {self.exit_code}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form, read back by :func:`from_json`."""
        return asdict(self)


def from_json(data: Mapping[str, Any]) -> Script:
    """The script stored by :meth:`Script.to_json`."""
    steps = tuple(Step(**{**s, "output": tuple(s["output"])}) for s in data["steps"])
    return Script(**{**data, "steps": steps})


def _number(value: object, where: str, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= maximum:
        raise InvalidArgument(f"{where}: must be a number of seconds between 0 and {maximum:g}")
    return float(value)


def _integer(value: object, where: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidArgument(f"{where}: must be a whole number between {minimum} and {maximum}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: must be a string")
    return value


def _check_keys(config: Mapping[str, object], allowed: tuple[str, ...], where: str) -> None:
    for key in config:
        if key not in allowed:
            raise InvalidArgument(f"{where}.{key}: unknown key (known: {', '.join(allowed)})")


def _step(raw: object, where: str) -> Step:
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"{where}: must be a mapping with at least a name")
    _check_keys(raw, ("name", "command", "output", "output_count", "duration", "stream"), where)
    if "name" not in raw:
        raise InvalidArgument(f"{where}.name: required")
    name = _string(raw["name"], f"{where}.name")
    if not name:
        raise InvalidArgument(f"{where}.name: must not be empty")
    output = raw.get("output", [])
    if isinstance(output, str):
        output = output.splitlines()
    if not isinstance(output, list) or not all(isinstance(line, str) for line in output):
        raise InvalidArgument(f"{where}.output: must be a list of strings")
    stream = _string(raw.get("stream", "stdout"), f"{where}.stream")
    if stream not in STREAMS:
        raise InvalidArgument(f"{where}.stream: must be stdout or stderr")
    return Step(
        name=name,
        command=_string(raw.get("command", ""), f"{where}.command"),
        output=tuple(output),
        output_count=_integer(raw.get("output_count", 0), f"{where}.output_count", 0, MAX_LINES),
        duration=_number(raw.get("duration", 0.0), f"{where}.duration", MAX_SECONDS),
        stream=stream,
    )


def parse(config: object) -> Script:
    """Validate a ``tack.stub`` mapping; InvalidArgument names the offending key (``tack.stub.<key>``)."""
    where = "tack.stub"
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise InvalidArgument(f"{where}: must be a mapping")
    _check_keys(config, ("steps", "queue_seconds", "outcome", "exit_code", "error"), where)
    steps: tuple[Step, ...] = DEFAULT_STEPS
    if "steps" in config:
        raw_steps = config["steps"]
        if not isinstance(raw_steps, list) or len(raw_steps) > MAX_STEPS:
            raise InvalidArgument(f"{where}.steps: must be a list of at most {MAX_STEPS} steps")
        steps = tuple(_step(raw, f"{where}.steps[{i}]") for i, raw in enumerate(raw_steps))
    outcome = _string(config.get("outcome", "success"), f"{where}.outcome")
    if outcome not in OUTCOMES:
        raise InvalidArgument(f"{where}.outcome: must be one of {', '.join(OUTCOMES)}")
    return Script(
        steps=steps,
        queue_seconds=_number(config.get("queue_seconds", 0.1), f"{where}.queue_seconds", MAX_SECONDS),
        outcome=outcome,
        exit_code=_integer(config.get("exit_code", 1), f"{where}.exit_code", -(2**31), 2**31 - 1),
        error=_string(config.get("error", ""), f"{where}.error"),
    )
