"""A scorer worker on uvloop's event loop instead of asyncio's (an experiment of the
throughput benchmark: a third of the worker's time is the event loop's own):

    python -m benchmarks.uvloop_worker worker [--loglevel warn]

Otherwise `python -m streams.cli`, unchanged.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

from streams.cli import main

if __name__ == "__main__":
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    raise SystemExit(main(sys.argv[1:]))
