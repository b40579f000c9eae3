"""Configuration of the fake Buildkite: users, tokens, pipelines, job templates and runtime knobs."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args


JsonObject = dict[str, Any]
Scenario = Literal["pass", "fail", "timeout", "slow"]
TimestampFormat = Literal["iso", "utc_space"]
LogAbsentMode = Literal["404", "empty200"]
RateLimitScope = Literal["rest", "rest_user"]

ALL_SCOPES = (
    "read_builds",
    "write_builds",
    "read_build_logs",
    "write_build_logs",
    "read_job_env",
    "read_organizations",
    "read_pipelines",
)
DEFAULT_TOKEN = "bkua_fake0000000000000000000000000000000000"
DEFAULT_ORG_ID = "4a1a6c2e-0a8b-4b8e-9d57-2f3c2e1d9a10"
# The documented ping test vector (docs/buildkite-api.md §6) uses these ids for the webhook's creator.
WEBHOOK_SENDER_ID = "3d3c3bf0-7d58-4afe-8fe7-b3017d5504de"
WEBHOOK_SENDER_NAME = "Fake Admin"
# 2025-01-01T00:00:00Z: creation time of everything that exists before the fake starts.
GENESIS = 1_735_689_600.0


@dataclass(frozen=True)
class User:
    """A Buildkite user: the owner of an API token and the ``creator`` of the builds it makes."""

    name: str = "CI Bot"
    email: str = "ci@example.org"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class TokenInfo:
    """What an API access token is: its user, scopes and what it may see.

    ``orgs`` and ``pipelines`` restrict visibility (``None`` means everything);
    anything invisible answers 404, as Buildkite does when access is missing.
    """

    user: User = field(default_factory=User)
    scopes: Sequence[str] = ALL_SCOPES
    orgs: frozenset[str] | None = None
    pipelines: frozenset[str] | None = None
    description: str = "fake"
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class JobTemplate:
    """One step of a pipeline: a ``script`` (command) job, or a ``waiter`` (``wait`` step)."""

    name: str | None = None
    step_key: str | None = None
    command: str | None = None
    type: Literal["script", "waiter"] = "script"
    soft_fail: bool = False
    agent_query_rules: tuple[str, ...] = ("queue=default",)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> JobTemplate:
        """A template from §10.1's ``{type, name, step_key, command}`` mapping (``soft_fail`` optional)."""
        kind = raw.get("type", "script")
        if kind not in ("script", "waiter"):
            raise ValueError(f"unsupported job type {kind!r}")
        return cls(
            name=raw.get("name"),
            step_key=raw.get("step_key"),
            command=raw.get("command"),
            type=kind,
            soft_fail=bool(raw.get("soft_fail", False)),
        )


TemplateLike = JobTemplate | Mapping[str, Any]


@dataclass(frozen=True)
class PipelineSpec:
    """A pipeline of the fake org.

    ``branch_filter`` is Buildkite's space-separated glob list (``!`` negates);
    a create that does not match it and lacks ``ignore_pipeline_branch_filters``
    is refused with 422. ``auto_scenario`` overrides the global knob.
    """

    steps: Sequence[TemplateLike]
    name: str | None = None
    repository: str = "https://tangled.example/acme/app.git"
    default_branch: str = "main"
    branch_filter: str | None = None
    auto_scenario: Scenario | None = None
    first_build_number: int = 1

    def templates(self) -> list[JobTemplate]:
        """The steps as ``JobTemplate`` objects."""
        return [s if isinstance(s, JobTemplate) else JobTemplate.from_mapping(s) for s in self.steps]


PipelineLike = PipelineSpec | Sequence[TemplateLike]

DEFAULT_STEPS = (JobTemplate(name=":pytest: unit tests", step_key="unit", command="pytest -q"),)


def pipeline_spec(value: PipelineLike) -> PipelineSpec:
    """Normalise a pipeline given as a spec or as a bare list of job templates."""
    return value if isinstance(value, PipelineSpec) else PipelineSpec(steps=list(value))


_OPTIONAL = frozenset({"cancel_delay_s", "max_list_page", "fault_match"})
_CHOICES: dict[str, tuple[object, ...]] = {
    "force_429_scope": get_args(RateLimitScope),
    "log_absent_mode": get_args(LogAbsentMode),
    "webhook_timestamp_format": get_args(TimestampFormat),
    "auto_scenario": (None, *get_args(Scenario)),
}


@dataclass
class Knobs:
    """Runtime switches (docs/buildkite-api.md §10.1 plus fault injection); change them at any time."""

    rate_limit_org: int = 200
    rate_limit_user: int = 50
    rate_limit_window_s: float = 60.0
    force_429_next_n: int = 0
    force_429_scope: RateLimitScope = "rest_user"
    fail_next_n: int = 0
    fail_status: int = 502
    # True: the request takes effect (e.g. the build is created) and then the gateway answers fail_status.
    fail_after_effect: bool = False
    # A regex searched in "METHOD /path"; restricts force_429_next_n and fail_next_n to matching requests.
    fault_match: str | None = None
    create_delay_s: float = 0.0
    # Seconds from a cancel of a running build until its jobs are canceled; None: only finish_cancel() does it.
    cancel_delay_s: float | None = 0.1
    log_absent_mode: LogAbsentMode = "404"
    org_requires_scope: bool = False
    max_list_page: int | None = None
    webhook_timestamp_format: TimestampFormat = "iso"
    webhook_duplicate: bool = False
    webhook_reorder: bool = False
    webhook_reorder_window_ms: float = 50.0
    webhook_drop: float = 0.0
    webhook_drop_next_n: int = 0
    webhook_drop_events: frozenset[str] = frozenset()
    webhook_delay_ms: float = 0.0
    webhook_timeout_s: float = 5.0
    webhook_retry: int = 0
    webhook_retry_delay_ms: float = 100.0
    # True: the payload's build is rendered when the request is sent (it may show a later state).
    webhook_live_build: bool = False
    auto_scenario: Scenario | None = None
    auto_tick_s: float = 0.05

    def update(self, changes: Mapping[str, Any]) -> None:
        """Set knobs by name from JSON values, checking names, types and enumerations."""
        defaults = Knobs()
        kinds = {f.name: _kind(f.name, getattr(defaults, f.name)) for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(kinds))
        if unknown:
            raise ValueError(f"unknown knobs: {', '.join(unknown)}")
        checked = {name: _coerce(name, kinds[name], value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)

    def as_json(self) -> JsonObject:
        """The knobs as a JSON object."""
        out = dataclasses.asdict(self)
        out["webhook_drop_events"] = sorted(self.webhook_drop_events)
        return out


def _kind(name: str, default: object) -> str:
    if name in _CHOICES:
        return "choice"
    if name == "max_list_page":
        return "int"
    for kind, typ in (("bool", bool), ("int", int), ("float", float), ("set", frozenset)):
        if isinstance(default, typ):
            return kind
    return "str"


def _coerce(name: str, kind: str, value: Any) -> Any:
    if value is None and name in _OPTIONAL:
        return None
    if kind == "choice":
        if value not in _CHOICES[name]:
            raise ValueError(f"{name} must be one of {_CHOICES[name]}")
        return value
    if kind == "set" and isinstance(value, list | tuple | set | frozenset):
        return frozenset(str(v) for v in value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    if not isinstance(value, bool):
        if kind == "int" and isinstance(value, int):
            return value
        if kind == "float" and isinstance(value, int | float):
            return float(value)
    raise ValueError(f"{name} must be of kind {kind}, not {value!r}")
