"""Whether the token can do what the provider needs (docs/sourcehut-api.md §1-§2). Used at start and by ``check``.

builds.sr.ht has no query for a token's grants: the provider asks for a page of jobs with their log
URLs and reads the answer. An auth refusal means a bad token; an error at ``jobs`` means no
``builds.sr.ht/JOBS`` grant; one at ``log`` means no ``builds.sr.ht/LOGS:RO``. ``JOBS:RW`` (rather
than ``RO``) can only be proven by a mutation, so it is assumed once ``JOBS`` reads work; ``LOGS`` can only
be proven on an account that has a job (an empty page resolves no ``log`` field).
"""

from __future__ import annotations

from tack_provider_sourcehut.api import ApiError, SourcehutClient, error_text


async def problems(client: SourcehutClient) -> list[str]:
    """What stops the provider from working (empty when nothing); ApiError/Unreachable when unanswered."""
    return (await check(client))[0]


async def check(client: SourcehutClient) -> tuple[list[str], bool]:
    """(:func:`problems`, whether the answer proved the ``LOGS`` grant: False on an account without jobs)."""
    try:
        answer = await client.probe()
    except ApiError as exc:
        if exc.auth:
            return [f"builds.sr.ht refused TACK_SOURCEHUT_TOKEN (HTTP {exc.status}: {exc.message})"], False
        raise
    found = []
    if answer.denied("jobs") and not answer.denied("log"):
        found.append(f"the token may not read jobs (needs builds.sr.ht/JOBS:RW): {error_text(answer.errors)}")
    elif answer.denied("log"):
        found.append(f"the token may not read logs (needs builds.sr.ht/LOGS:RO): {error_text(answer.errors)}")
    elif answer.errors:
        found.append(f"builds.sr.ht answered with errors: {error_text(answer.errors)}")
    jobs = answer.data.get("jobs") if isinstance(answer.data, dict) else None
    results = jobs.get("results") if isinstance(jobs, dict) else None
    return found, bool(results) and not found
