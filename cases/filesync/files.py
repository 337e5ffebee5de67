"""What the FileSync service does, behind both faces (gRPC in server.py, HTTP in http.py):
members and their tokens, chunks, optimistic commits, changes, downloads, share links, and
the admin work its ScheduledJobs ask for (collector.py holds the garbage collection).

A commit is judged against the head of its path under the workspace row's lock: its base
must be the head (or 0 for a new path or one whose head is a deletion), otherwise nothing is
written and the caller learns the head; a stale base is a conflict, never an overwrite.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from hourglass import artifacts
from hourglass.cases.filesync import blobs, metrics, spec, store
from hourglass.cases.filesync.validation import ChunkIn, CommitIn, Invalid
from hourglass.clock import Clock
from hourglass.store import db

TOKEN_CACHE_SECONDS = 5.0
HEARTBEAT_SECONDS = 5.0


class Denied(Exception):
    """No token, an unknown one, or one without the access the call needs."""

    def __init__(self, reason: str, *, unauthenticated: bool = False) -> None:
        super().__init__(reason)
        self.unauthenticated = unauthenticated


class NotFound(Exception):
    pass


class NoObjectStore(Exception):
    pass


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True, slots=True)
class Result:
    committed: bool
    version: int
    cursor: int


@dataclass(frozen=True, slots=True)
class Pending:
    """A version to commit: new content, a deletion, or a restored old version."""

    path: str
    base: int
    chunks: list[str]
    digest: str
    device: str
    deleted: bool = False
    # A restore commits on top of whatever the head is.
    any_base: bool = False


EMPTY = hashlib.sha256(b"").hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Files:
    pool: db.Pool
    spec: spec.Spec
    clock: Clock
    blob_store: artifacts.ArtifactStore | None
    # For HaveChunks and PutChunk, the hot path of an upload, whose client retries a call
    # that meets a connection PostgreSQL dropped: no liveness check per loan.
    chunk_pool: db.Pool | None = None
    # Watchers of each workspace, woken by the NOTIFY a commit sends (see `notified`).
    watchers: dict[int, set[asyncio.Event]] = field(default_factory=dict)
    tokens: dict[bytes, tuple[store.Member, float]] = field(default_factory=dict)

    def now(self) -> datetime:
        return self.clock.now()

    # -- members -------------------------------------------------------------------------

    async def authenticate(self, token: str, workspace: str, need: str) -> store.Member:
        """The member the token names, if it belongs to `workspace` and may do `need`
        (read or write). Tokens are cached for a few seconds: a re-keyed member's old token
        works that much longer."""
        if not token:
            raise Denied("no token: send `authorization: Bearer <token>`", unauthenticated=True)
        key = hash_token(token)
        cached = self.tokens.get(key)
        if cached is not None and cached[1] > time.monotonic():
            found: store.Member | None = cached[0]
        else:
            async with self.pool.connection() as conn:
                found = await store.member(conn, key)
            if found is not None:
                if len(self.tokens) > 10_000:
                    self.tokens.clear()
                self.tokens[key] = (found, time.monotonic() + TOKEN_CACHE_SECONDS)
        if found is None:
            raise Denied("unknown token", unauthenticated=True)
        if found.workspace != workspace:
            raise Denied(f"workspace: the token is not a member of {workspace!r}")
        if need == "write" and found.access == "read":
            raise Denied(f"workspace: {found.user} may only read {workspace!r}")
        if need == "owner" and found.access != "owner":
            raise Denied(f"workspace: only the owner of {workspace!r} may add members")
        return found

    async def create_workspace(self, name: str, user: str) -> str:
        token = new_token("hgfs")
        async with db.transaction(self.pool) as conn:
            made = await store.create_workspace(conn, name)
            if made is None:
                raise Invalid("workspace", f"{name!r} exists already")
            await store.put_member(
                conn, workspace=made, user=user, access="owner", token_hash=hash_token(token)
            )
        return token

    async def add_member(self, owner: store.Member, user: str, access: str) -> str:
        if user == owner.user:
            raise Invalid("user", "is the owner already")
        token = new_token("hgfs")
        async with db.transaction(self.pool) as conn:
            await store.put_member(
                conn,
                workspace=owner.workspace_id,
                user=user,
                access=access,
                token_hash=hash_token(token),
            )
        return token

    # -- chunks --------------------------------------------------------------------------

    def _store(self) -> artifacts.ArtifactStore:
        if self.blob_store is None:
            raise NoObjectStore("chunks need an object store: start the server with --artifacts")
        return self.blob_store

    async def have_chunks(self, member: store.Member, digests: Sequence[str]) -> list[str]:
        async with (self.chunk_pool or self.pool).connection() as conn:
            held = await store.touch_chunks(
                conn, workspace=member.workspace_id, digests=digests, now=self.now()
            )
        return [d for d in dict.fromkeys(digests) if d not in held]

    async def put_chunks(self, member: store.Member, chunks: list[ChunkIn]) -> int:
        """Stores the chunks in the object store and records them, in one transaction that
        holds each digest's shared lock from before the bytes are written until the row is
        committed: the sweep, which takes it exclusively, never deletes bytes a row is about
        to name. A batch of several is verified before anything is written, so a bad chunk
        stores nothing; a single chunk is verified by the store's own hash on the way."""
        objects = self._store()
        if len(chunks) > 1:
            for i, chunk in enumerate(chunks):
                found = await asyncio.to_thread(_sha256, chunk.data)
                if found != chunk.digest:
                    metrics.refused.labels("chunks").inc()
                    raise Invalid(f"chunks[{i}].data", f"its sha256 is {found}, not its digest")
        # Pipelined: BEGIN, the settings and the locks go in one round trip (synced before
        # any byte is written), the INSERT and COMMIT in another.
        pool = self.chunk_pool or self.pool
        async with (
            pool.connection() as conn,
            conn.pipeline() as pipeline,
            conn.transaction(),
        ):
            await store.relax_durability(conn)
            for digest in sorted({c.digest for c in chunks}):
                await store.lock_digest(conn, digest, shared=True)
            await pipeline.sync()
            created = await self._store_chunks(objects, member, chunks, conn)
        metrics.chunks.labels("new" if created else "known").inc(len(chunks))
        metrics.chunk_bytes.inc(sum(len(c.data) for c in chunks))
        return created

    async def _store_chunks(
        self,
        objects: artifacts.ArtifactStore,
        member: store.Member,
        chunks: list[ChunkIn],
        conn: db.Connection,
    ) -> int:
        created = 0
        for chunk in chunks:
            try:
                new = await blobs.put(objects, chunk.digest, chunk.data, verify=len(chunks) == 1)
            except blobs.ChunkMismatch as exc:
                metrics.refused.labels("chunks").inc()
                raise Invalid("chunks[0].data", f"its sha256 is {exc}, not its digest") from None
            created += new
        await store.record_chunks(
            conn,
            workspace=member.workspace_id,
            chunks=[(c.digest, len(c.data)) for c in chunks],
            now=self.now(),
        )
        return created

    # -- versions ------------------------------------------------------------------------

    async def commit(self, member: store.Member, items: Sequence[CommitIn]) -> list[Result]:
        return await self._commit(
            member,
            [Pending(c.path, c.base, c.chunks, c.digest, c.device) for c in items],
        )

    async def _commit(self, member: store.Member, items: Sequence[Pending]) -> list[Result]:
        for attempt in range(5):
            try:
                return await self._commit_once(member, items)
            except store.RETRY_ERRORS:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _commit_once(self, member: store.Member, items: Sequence[Pending]) -> list[Result]:
        now = self.now()
        results: list[Result] = []
        async with db.transaction(self.pool) as conn:
            cursor = await store.lock_workspace(conn, member.workspace_id)
            heads = await store.heads(
                conn, workspace=member.workspace_id, paths=[i.path for i in items]
            )
            accepted: list[tuple[int, Pending]] = []
            for index, item in enumerate(items):
                head, deleted = heads.get(item.path, (0, True))
                if item.any_base or item.base == head or (deleted and item.base == 0):
                    heads[item.path] = (head + 1, item.deleted)
                    accepted.append((index, replace(item, base=head)))
                    results.append(Result(True, head + 1, 0))
                else:
                    results.append(Result(False, head, 0))
            if not accepted:
                return results
            named = [d for _, item in accepted for d in item.chunks]
            sizes = await store.reference(
                conn, workspace=member.workspace_id, digests=named, now=now
            )
            for index, item in accepted:
                for j, digest in enumerate(item.chunks):
                    if digest not in sizes:
                        prefix = f"commits[{index}]." if len(items) > 1 else ""
                        metrics.refused.labels("chunks").inc()
                        raise Invalid(
                            f"{prefix}chunks[{j}]",
                            f"unknown chunk {digest}: send it with PutChunk first",
                        )
            versions = []
            for index, item in accepted:
                cursor += 1
                results[index] = Result(True, item.base + 1, cursor)
                versions.append(
                    store.Version(
                        path=item.path, version=item.base + 1, cursor=cursor,
                        deleted=item.deleted, size=sum(sizes[d] for d in item.chunks),
                        digest=item.digest, chunks=item.chunks, device=item.device,
                        user=member.user, created_at=now,
                    )
                )  # fmt: skip
            await store.insert_versions(
                conn, workspace=member.workspace_id, versions=versions, last_cursor=cursor
            )
        for result in results:
            metrics.commits.labels("committed" if result.committed else "conflict").inc()
        return results

    async def delete(self, member: store.Member, path: str, base: int, device: str) -> Result:
        head = await self.head(member, path)
        if head is None or head.deleted:
            raise NotFound(f"path: {path!r} does not exist")
        pending = Pending(path, base, [], EMPTY, device, deleted=True)
        if base == 0:  # "whatever it is now": a deletion never loses an edit it cannot see
            pending = replace(pending, base=head.version)
        return (await self._commit(member, [pending]))[0]

    async def restore(self, member: store.Member, path: str, number: int, device: str) -> Result:
        async with self.pool.connection() as conn:
            old = await store.version(conn, workspace=member.workspace_id, path=path, number=number)
        if old is None:
            raise NotFound(f"version: {path!r} has no version {number}")
        pending = Pending(path, 0, old.chunks, old.digest, device, old.deleted, any_base=True)
        try:
            return (await self._commit(member, [pending]))[0]
        except Invalid:
            raise NotFound(f"version: version {number} of {path!r} was collected") from None

    async def head(self, member: store.Member, path: str, number: int = 0) -> store.Version | None:
        async with self.pool.connection() as conn:
            return await store.version(
                conn, workspace=member.workspace_id, path=path, number=number
            )

    async def versions(self, member: store.Member, path: str) -> list[store.Version]:
        async with self.pool.connection() as conn:
            return await store.versions_of(conn, workspace=member.workspace_id, path=path)

    async def changes(
        self, member: store.Member, cursor: int, limit: int
    ) -> tuple[list[store.Version], int, bool]:
        async with self.pool.connection() as conn:
            found = await store.changes(
                conn, workspace=member.workspace_id, cursor=cursor, limit=limit + 1
            )
        more = len(found) > limit
        found = found[:limit]
        return found, (found[-1].cursor if found else cursor), more

    def notified(self, payload: str) -> None:
        """A NOTIFY from any replica's commit: wake this process's watchers of it."""
        try:
            workspace = int(payload)
        except ValueError:
            return
        for event in self.watchers.get(workspace, ()):
            event.set()

    async def watch(
        self, member: store.Member, cursor: int, limit: int
    ) -> AsyncIterator[tuple[list[store.Version], int, bool]]:
        """Batches of changes after `cursor` as they are committed: a burst of commits that
        lands while a batch is being sent comes as the next batch, whole. An empty batch
        every HEARTBEAT_SECONDS tells the client the stream is alive."""
        event = asyncio.Event()
        self.watchers.setdefault(member.workspace_id, set()).add(event)
        try:
            event.set()
            while True:
                with_news = True
                try:
                    await asyncio.wait_for(event.wait(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    with_news = False
                event.clear()
                found, cursor, more = await self.changes(member, cursor, limit)
                if found or not with_news:
                    yield found, cursor, more
                if more:
                    event.set()
        finally:
            self.watchers[member.workspace_id].discard(event)

    async def download(self, version: store.Version) -> AsyncIterator[bytes]:
        objects = self._store()
        for digest in version.chunks:
            yield await blobs.read(objects, digest)

    # -- share links ---------------------------------------------------------------------

    async def share(
        self, member: store.Member, path: str, number: int, expires_in: int
    ) -> tuple[str, datetime]:
        found = await self.head(member, path, number)
        if found is None or (number == 0 and found.deleted):
            raise NotFound(f"path: {path!r} has no version {number or 'now'}")
        token = secrets.token_urlsafe(24)
        now = self.now()
        expires_at = now + timedelta(seconds=expires_in)
        async with db.transaction(self.pool) as conn:
            await store.create_share(
                conn, token_hash=hash_token(token), workspace=member.workspace_id, path=path,
                number=number, user=member.user, now=now, expires_at=expires_at,
            )  # fmt: skip
        return token, expires_at

    async def shared(self, token: str) -> store.Version | str:
        """The version a share link serves, or why not: "unknown" or "expired"."""
        async with self.pool.connection() as conn:
            link = await store.share(conn, hash_token(token))
            if link is None:
                return "unknown"
            if link["expires_at"] <= self.now():
                return "expired"
            found = await store.version(
                conn, workspace=link["workspace_id"], path=link["path"], number=link["version"]
            )
        if found is None or found.deleted:
            return "unknown"
        return found

    async def expire_shares(self) -> int:
        async with db.transaction(self.pool) as conn:
            return await store.expire_shares(conn, self.now())

    async def enforce_retention(self) -> int:
        now = self.now()
        for attempt in range(5):
            try:
                async with db.transaction(self.pool) as conn:
                    return await store.enforce_retention(
                        conn,
                        keep=self.spec.keep_versions,
                        cutoff=now - timedelta(seconds=self.spec.keep_for),
                        now=now,
                    )
            except store.RETRY_ERRORS:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.05)
        raise AssertionError("unreachable")
