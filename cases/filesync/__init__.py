"""The FileSync case: files synced across devices, with offline edits (Dropbox).

A sync service (gRPC: workspaces and members, HaveChunks, PutChunk, CommitVersion,
ListChanges and WatchChanges, Download, versions, share links, and the admin
CollectGarbage, EnforceRetention and ExpireShareLinks its ScheduledJobs call; HTTP for
downloads and share links) over PostgreSQL (workspaces, members, chunk references,
versions, share links) and the object store (chunks, named by sha256). The client
(`hourglass sync DIR --workspace W`, client.py) cuts files with FastCDC (chunking.py), sends
only missing chunks, watches the folder, and applies remote changes atomically.
"""

from __future__ import annotations

from pathlib import Path

from hourglass.cases import Case
from hourglass.cases.filesync import spec
from hourglass.cases.filesync.objects import objects
from hourglass.cases.filesync.server import serve

CASE = Case(
    name="filesync",
    kind="FileSync",
    plural="filesyncs",
    short_names=("fs",),
    serve=serve,
    objects=objects,
    # schema.sql and migrations/: `hourglass serve` applies them into the resource's schema.
    migrations=Path(__file__).parent,
    http=True,
    spec_schema=spec.SCHEMA,
    columns=spec.COLUMNS,
    description="File sync across devices: chunked, deduplicated, versioned, with share links.",
)
