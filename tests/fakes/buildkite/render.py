"""JSON shapes of the fake's objects: REST Build, Job, Pipeline and Organization, and their webhook variants.

Field names and order follow docs/buildkite-api.md §2, §4 and §10.6. REST
timestamps are ISO 8601 with milliseconds; webhooks use the format the
``webhook_timestamp_format`` knob picks (both formats are seen in the wild).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable

from tests.fakes.buildkite.config import GENESIS, JobTemplate, JsonObject, TimestampFormat, User
from tests.fakes.buildkite.state import Build, Job, Pipeline, World, job_state_counts


Formatter = Callable[[float | None], str | None]


def iso(t: float | None) -> str | None:
    """``2026-01-01T00:00:00.100Z``: ISO 8601 UTC with milliseconds, as REST responses use."""
    if t is None:
        return None
    moment = dt.datetime.fromtimestamp(t, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def utc_space(t: float | None) -> str | None:
    """``2026-01-01 00:00:00 UTC``: the older format seen in webhooks and nested objects."""
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


FORMATTERS: dict[TimestampFormat, Formatter] = {"iso": iso, "utc_space": utc_space}


def graphql_id(kind: str, ident: str) -> str:
    """Buildkite's GraphQL node id: base64 of ``<Kind>---<uuid>``."""
    return base64.b64encode(f"{kind}---{ident}".encode()).decode()


class Renderer:
    """Builds JSON objects with URLs under the fake's API base and a web base."""

    def __init__(self, world: World, api_base: str, web_base: str, org_id: str, org_name: str) -> None:
        self.world = world
        self.api_base = api_base.rstrip("/")
        self.web_base = web_base.rstrip("/")
        self.org_id = org_id
        self.org_name = org_name

    @property
    def org_path(self) -> str:
        """``/v2/organizations/<org>``."""
        return f"/v2/organizations/{self.world.org}"

    def build_url(self, build: Build) -> str:
        """The build's API URL (by number, as REST addresses builds)."""
        return f"{self.api_base}{self.org_path}/pipelines/{build.pipeline}/builds/{build.number}"

    def job_url(self, build: Build, job: Job) -> str:
        """The job's API URL."""
        return f"{self.build_url(build)}/jobs/{job.id}"

    def organization(self) -> JsonObject:
        """``GET /v2/organizations/<org>``."""
        org = self.world.org
        return {
            "id": self.org_id,
            "graphql_id": graphql_id("Organization", self.org_id),
            "url": f"{self.api_base}{self.org_path}",
            "web_url": f"{self.web_base}/{org}",
            "name": self.org_name,
            "slug": org,
            "pipelines_url": f"{self.api_base}{self.org_path}/pipelines",
            "agents_url": f"{self.api_base}{self.org_path}/agents",
            "emojis_url": f"{self.api_base}{self.org_path}/emojis",
            "created_at": iso(GENESIS),
        }

    def creator(self, user: User, fmt: Formatter = iso) -> JsonObject:
        """A build's ``creator``."""
        return {
            "id": user.id,
            "graphql_id": graphql_id("User", user.id),
            "name": user.name,
            "email": user.email,
            "avatar_url": "https://www.gravatar.com/avatar/00000000000000000000000000000000",
            "created_at": fmt(GENESIS),
        }

    def pipeline(self, pipeline: Pipeline, fmt: Formatter = iso, *, steps: bool = False) -> JsonObject:
        """A Pipeline object; webhooks add ``steps``."""
        url = f"{self.api_base}{self.org_path}/pipelines/{pipeline.slug}"
        builds = [b for b in self.world.builds if b.pipeline == pipeline.slug]
        jobs = [j for b in builds for j in b.current_jobs()]
        out: JsonObject = {
            "id": pipeline.id,
            "graphql_id": graphql_id("Pipeline", pipeline.id),
            "url": url,
            "web_url": f"{self.web_base}/{self.world.org}/{pipeline.slug}",
            "name": pipeline.spec.name or pipeline.slug,
            "description": "",
            "slug": pipeline.slug,
            "repository": pipeline.spec.repository,
            "cluster_id": None,
            "branch_configuration": pipeline.spec.branch_filter,
            "default_branch": pipeline.spec.default_branch,
            "skip_queued_branch_builds": False,
            "cancel_running_branch_builds": False,
            "provider": {"id": "git", "settings": {}, "webhook_url": ""},
            "builds_url": f"{url}/builds",
            "badge_url": f"{self.api_base}/badges/{pipeline.id}.svg",
            "created_at": fmt(pipeline.created_at),
            "archived_at": None,
            "visibility": "private",
            "scheduled_builds_count": sum(b.state == "scheduled" for b in builds),
            "running_builds_count": sum(b.state in ("running", "failing", "canceling") for b in builds),
            "scheduled_jobs_count": sum(j.state == "scheduled" for j in jobs),
            "running_jobs_count": sum(j.state == "running" for j in jobs),
            "waiting_jobs_count": sum(j.state == "waiting" for j in jobs),
        }
        if steps:
            out["steps"] = [_step(t) for t in pipeline.templates]
        return out

    def job(self, build: Build, job: Job, fmt: Formatter = iso) -> JsonObject:
        """A Job object; ``waiter`` jobs carry only a few fields, as on Buildkite."""
        if job.type == "waiter":
            return {
                "id": job.id,
                "graphql_id": graphql_id("Job", job.id),
                "type": "waiter",
                "step_key": job.step_key,
                "state": job.state,
            }
        url = self.job_url(build, job)
        web = f"{self.web_base}/{self.world.org}/{build.pipeline}/builds/{build.number}#{job.id}"
        return {
            "id": job.id,
            "graphql_id": graphql_id("Job", job.id),
            "type": job.type,
            "name": job.name,
            "step_key": job.step_key,
            "step": {"id": job.step_key, "signature": None},
            "agent_query_rules": list(job.agent_query_rules),
            "state": job.state,
            "build_url": self.build_url(build),
            "web_url": web,
            "log_url": f"{url}/log",
            "raw_log_url": f"{url}/log.txt",
            "artifacts_url": f"{url}/artifacts",
            "command": job.command,
            "soft_failed": job.soft_failed,
            "exit_status": job.exit_status,
            "signal": job.signal,
            "signal_reason": job.signal_reason,
            "artifact_paths": "",
            "agent": job.agent,
            "created_at": fmt(job.created_at),
            "scheduled_at": fmt(job.scheduled_at),
            "runnable_at": fmt(job.runnable_at),
            "started_at": fmt(job.started_at),
            "finished_at": fmt(job.finished_at),
            "expired_at": None,
            "retried": job.retried,
            "retried_in_job_id": job.retried_in_job_id,
            "retries_count": job.retries_count,
            "retry_source": job.retry_source,
            "retry_type": job.retry_type,
            "parallel_group_index": None,
            "parallel_group_total": None,
            "matrix": None,
            "cluster_id": None,
            "cluster_queue_id": None,
        }

    def build(
        self,
        build: Build,
        fmt: Formatter = iso,
        *,
        jobs: bool = True,
        retried: bool = False,
        pipeline: bool = True,
        state_counts: bool = False,
        webhook: bool = False,
        job_states: frozenset[str] | None = None,
    ) -> JsonObject:
        """A Build object. Webhook builds have no ``jobs`` but add ``tag`` and ``blocked_state``."""
        out: JsonObject = {
            "id": build.id,
            "graphql_id": graphql_id("Build", build.id),
            "url": self.build_url(build),
            "web_url": f"{self.web_base}/{self.world.org}/{build.pipeline}/builds/{build.number}",
            "number": build.number,
            "state": build.state,
            "blocked": build.blocked,
        }
        if webhook:
            out["blocked_state"] = None
        out["cancel_reason"] = build.cancel_reason
        out["message"] = build.message
        out["commit"] = build.commit
        out["branch"] = build.branch
        if webhook:
            out["tag"] = None
        out["env"] = build.env
        out["source"] = build.source
        out["author"] = build.author
        out["creator"] = self.creator(build.creator, fmt)
        if jobs and not webhook:
            shown = build.jobs if retried else build.current_jobs()
            if job_states is not None:
                shown = [j for j in shown if j.state in job_states]
            out["jobs"] = [self.job(build, j, fmt) for j in shown]
        if state_counts:
            out["job_state_counts"] = job_state_counts(build.current_jobs())
        for name in ("created_at", "scheduled_at", "started_at", "failing_at", "finished_at"):
            out[name] = fmt(getattr(build, name))
        out["meta_data"] = dict(build.meta_data)
        out["pull_request"] = build.pull_request
        origin = build.rebuilt_from
        out["rebuilt_from"] = (
            None
            if origin is None
            else {"id": origin.id, "number": origin.number, "url": self.build_url(origin)}
        )
        if pipeline and not webhook:
            out["pipeline"] = self.pipeline(self.world.pipelines[build.pipeline], fmt)
        return out


def _step(template: JobTemplate) -> JsonObject:
    if template.type == "waiter":
        return {"type": "waiter"}
    return {"type": "script", "name": template.name, "command": template.command}
