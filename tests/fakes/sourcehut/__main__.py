"""Serve a fake builds.sr.ht that runs every job to success: ``python -m tests.fakes.sourcehut [--port N]``."""

from __future__ import annotations

import argparse
import asyncio

from tests.fakes.sourcehut.fake import DEFAULT_TOKEN, FakeSourcehut


async def serve(port: int, tick: float) -> None:
    async with FakeSourcehut(port=port) as fake:
        fake.autorun(tick=tick)
        print(f"fake builds.sr.ht at {fake.url} (token {DEFAULT_TOKEN})", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.sourcehut", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--tick", type=float, default=0.5, help="seconds between job steps")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.tick))


if __name__ == "__main__":
    main()
