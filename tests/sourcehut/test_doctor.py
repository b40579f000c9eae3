"""`tack doctor` checks the sourcehut provider's token when it is configured."""

from __future__ import annotations

import os

import pytest

from tack_control.doctor import check_sourcehut
from tests.fakes.sourcehut import DEFAULT_TOKEN, FakeSourcehut
from tests.support.sourcehut_harness import manifest, submit


pytestmark = pytest.mark.e2e

NO_LOGS = "NoLogsToken0123456789abcdefghijklmnopqrstuvwxyz"
NO_JOBS = "NoJobsToken0123456789abcdefghijklmnopqrstuvwxyz"


def env_for(fake: FakeSourcehut, token: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TACK_")}
    return {**base, "TACK_SOURCEHUT_TOKEN": token, "TACK_SOURCEHUT_INSTANCE": fake.url}


async def test_a_good_token_passes_and_each_missing_grant_is_named() -> None:
    """A token with both scopes passes (saying LOGS:RO is unproven while the account has no job); one without
    LOGS:RO or without JOBS fails naming the scope, with the fix."""
    async with FakeSourcehut() as fake:
        fake.add_token(NO_LOGS, grants={"JOBS:RW"})
        fake.add_token(NO_JOBS, grants={"LOGS:RO"})
        result = await check_sourcehut(env_for(fake, DEFAULT_TOKEN))
        assert result.verdict == "ok", result.detail
        assert "logs unproven (no job on the account yet" in result.detail
        await submit(fake, manifest("build"))
        result = await check_sourcehut(env_for(fake, DEFAULT_TOKEN))
        assert result.verdict == "ok", result.detail
        assert result.detail == f"{fake.url} accepts the token; it reads jobs (JOBS:RW assumed) and logs"
        result = await check_sourcehut(env_for(fake, NO_LOGS))
        assert result.verdict == "FAIL" and "needs builds.sr.ht/LOGS:RO" in result.detail
        assert "JOBS:RW and builds.sr.ht/LOGS:RO" in result.fix
        result = await check_sourcehut(env_for(fake, NO_JOBS))
        assert result.verdict == "FAIL" and "needs builds.sr.ht/JOBS:RW" in result.detail


async def test_a_revoked_token_fails_and_no_token_skips() -> None:
    """A token builds.sr.ht refuses fails naming the variable; without TACK_SOURCEHUT_TOKEN the check is skipped."""
    async with FakeSourcehut() as fake:
        fake.revoke(DEFAULT_TOKEN)
        result = await check_sourcehut(env_for(fake, DEFAULT_TOKEN))
        assert result.verdict == "FAIL" and "refused TACK_SOURCEHUT_TOKEN" in result.detail
    assert (await check_sourcehut({})).verdict == "skip"
