"""Server-sent events: what the pages follow live, fed from the API's streams (WatchJob for
runs, GetRunLogs with follow for output). One browser connection per page; the console
holds one API stream per followed job, and ends them all when the browser goes away (a
comment every few seconds finds out)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from aiohttp import web

KEEPALIVE = 10.0
End = None


async def send(
    request: web.Request, source: AsyncIterator[tuple[str, object]]
) -> web.StreamResponse:
    """Streams (event name, JSON-able data) from `source` until it ends or the browser
    leaves; the stream ends with an `end` event so that the page knows not to reconnect."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    queue: asyncio.Queue[tuple[str, object] | None] = asyncio.Queue(maxsize=1000)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except Exception as exc:  # an API refusal ends the stream, told to the page
            await queue.put(("error", str(exc)))
        await queue.put(End)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if item is End:
                await response.write(b"event: end\ndata: {}\n\n")
                break
            name, data = item
            payload = json.dumps(data, separators=(",", ":"))
            await response.write(f"event: {name}\ndata: {payload}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    return response


async def merged(
    streams: list[AsyncIterator[tuple[str, object]]],
) -> AsyncIterator[tuple[str, object]]:
    """The items of several streams as they come; ends when all have."""
    queue: asyncio.Queue[tuple[str, object] | None] = asyncio.Queue(maxsize=1000)

    async def drain(stream: AsyncIterator[tuple[str, object]]) -> None:
        try:
            async for item in stream:
                await queue.put(item)
        except Exception as exc:
            await queue.put(("error", str(exc)))
        finally:
            await queue.put(End)

    tasks = [asyncio.create_task(drain(stream)) for stream in streams]
    remaining = len(tasks)
    try:
        while remaining:
            item = await queue.get()
            if item is End:
                remaining -= 1
                continue
            yield item
    finally:
        for task in tasks:
            task.cancel()
