"""The command line every provider's ``python -m`` module shares: serve, or ``check`` its access to its CI."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from tack_common.env import ConfigError


S = TypeVar("S")


def check(load: Callable[[Mapping[str, str]], S], probe: Callable[[S], Coroutine[Any, Any, int]]) -> int:
    """``check``: ``probe`` the settings ``load`` reads from the environment; exit status 2 (after one
    ``FAIL configuration`` line) when they cannot be loaded, else the probe's."""
    try:
        settings = load(os.environ)
    except ConfigError as exc:
        print(f"FAIL configuration: {exc}")
        return 2
    return asyncio.run(probe(settings))


def report(problems: Sequence[str], ok: str) -> int:
    """Print a ``FAIL`` line per problem, or the ``ok`` line when there is none; the exit status (1: problems)."""
    for problem in problems:
        print(f"FAIL {problem}")
    if not problems:
        print(f"ok   {ok}")
    return 1 if problems else 0


def dispatch(run: Callable[[], None], check: Callable[[], int]) -> None:
    """``python -m <provider> check`` exits with ``check()``; with no arguments it serves (``run()``)."""
    if sys.argv[1:] == ["check"]:
        raise SystemExit(check())
    run()
