"""One gateway process from start to stop: assemble it, run until SIGTERM or SIGINT, then stop.

On the signal the process stops taking new work, lets calls in flight finish within the grace
period, and closes the database.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable

from gateway.assembly import Gateway, assemble
from gateway.descriptors import raise_descriptor_limit
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


async def run_until_signalled(
    settings: GatewaySettings, *, announce: Callable[[Gateway], None] | None = None
) -> int:
    """Run the gateway `settings` describe until SIGTERM or SIGINT, then stop gracefully; the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Before anything listens: the connection caps are derived from the limit in force.
    raise_descriptor_limit()
    gateway = await assemble(settings)
    # Everything built so far (modules, compiled routes and encoders) lives as long as the process:
    # moved out of the collector's sight, it is not scanned again by every full collection, which
    # would otherwise pause all requests in flight.
    gc.collect()
    gc.freeze()
    if announce is not None:
        announce(gateway)
    await stop.wait()
    log.info("stopping", extra={"grace_s": settings.grace_s})
    await gateway.stop()
    log.info("stopped")
    return 0
