"""A worker with only the webhook workflows and activities, run as a process of its own by the
tests that kill it (`tests.webhook_support.webhook_worker_process`); settings from the
environment, as `reverie worker` reads them."""

from __future__ import annotations

import asyncio
import signal

from reverie.connections import connect_database, connect_temporal
from reverie.settings import load_settings
from tests.webhook_support import webhook_worker


async def main() -> None:
    settings = load_settings()
    client = await connect_temporal(settings)
    pool = await connect_database(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with webhook_worker(client, pool, settings, sessions=False):
        await stop.wait()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
