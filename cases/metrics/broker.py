"""The broker: one Redis stream per resource, on the platform's Redis with its append-only
file fsynced before every answer (`appendfsync always`), read through a consumer group.

- A server appends each validated batch as ONE entry (the `Batch` message's bytes) and
  answers its sender after Redis answered the XADD: the batch is then on disk. Concurrent
  senders share Redis's fsync (it writes the file once per event-loop turn for every client
  served in it), so durability costs one fsync per turn, not per batch.
- Consumers XREADGROUP entries, write them into column files, register the files and the
  entry ids in PostgreSQL in one transaction, then XACK and XDEL. A consumer that dies before
  its XACK leaves its entries pending; after `claim_after` another consumer takes them with
  XAUTOCLAIM (at least once), and the ids registered with the files stop a second write of
  an entry that was already applied.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ResponseError

GROUP = "consumers"
READ_COUNT = 64


def stream_key(schema: str) -> str:
    return f"hourglass:metrics:{schema}:stream"


class Broker:
    def __init__(self, client: redis.Redis, schema: str, *, claim_after: float) -> None:
        self.client = client
        self.stream = stream_key(schema)
        self.claim_after_ms = int(claim_after * 1000)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"

    async def append(self, batch: bytes, points: int) -> str:
        """Durable once this returns: the entry's id."""
        entry = await self.client.xadd(self.stream, {"b": batch, "n": points})
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    async def prepare(self) -> None:
        try:
            await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def claim(self) -> list[tuple[str, bytes]]:
        """Entries another consumer read and never acknowledged, idle for claim_after."""
        answer = await self.client.xautoclaim(
            self.stream, GROUP, self.consumer, self.claim_after_ms, "0-0", count=READ_COUNT
        )
        return _entries(answer[1])

    async def read(self, block_ms: int = 1000) -> list[tuple[str, bytes]]:
        answer: Any = await self.client.xreadgroup(
            GROUP, self.consumer, {self.stream: ">"}, count=READ_COUNT, block=block_ms
        )
        return _entries(answer[0][1]) if answer else []

    async def done(self, ids: list[str]) -> None:
        if ids:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.stream, GROUP, *ids)
                pipe.xdel(self.stream, *ids)
                await pipe.execute()

    async def backlog(self) -> int:
        """Entries not yet applied (acknowledged entries are deleted)."""
        return int(await self.client.xlen(self.stream))


def _entries(raw: list[Any]) -> list[tuple[str, bytes]]:
    out = []
    for entry_id, fields in raw:
        if fields and b"b" in fields:  # a deleted entry comes back empty
            name = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            out.append((name, fields[b"b"]))
    return out


def entry_ms(entry_id: str) -> int:
    """When Redis added the entry (its id is <unix ms>-<seq>)."""
    return int(entry_id.split("-", 1)[0])
