"""`hourglass sync DIR --workspace W`: the long-running sync client.

Each round pulls (ListChanges since the saved cursor; each change applied atomically: the
bytes are downloaded into STATE_DIR/tmp, checked against their sha256, and renamed over the
file), then pushes (a scan compares every file's stat with the state database; changed files
are cut, only missing chunks are sent, and the versions are committed against the version
each was made from). A round runs when the folder changes (watchfiles: inotify on Linux,
bursts grouped), when the server's WatchChanges stream says something changed, and every
RESCAN seconds. When the server cannot be reached the round is retried with a backoff; the
edits made meanwhile are found by the next scan, so offline work syncs on reconnect.

Conflicts keep both sides, as Dropbox does: when a remote version arrives for a file that
was also changed here, the local bytes move to "name (<device>'s conflicted copy <date>).ext"
(then pushed as a new file) and the remote version takes the name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import secrets
import time
from datetime import date
from pathlib import Path

import grpc
import watchfiles

from hourglass.cases.filesync import chunking, paths
from hourglass.cases.filesync.localstate import Row, State
from hourglass.cases.filesync.remote import Remote, Upload
from hourglass.cases.filesync.v1 import filesync_pb2 as pb

log = logging.getLogger(__name__)
# watchfiles says "N changes detected" at INFO for every event: not news in a sync log.
logging.getLogger("watchfiles").setLevel(logging.WARNING)

RESCAN = 30.0
BATCH_FILES = 500
BATCH_BYTES = 64 * 1024 * 1024
# A file modified this recently after its row was written may have changed within the same
# mtime tick: it is re-read rather than trusted by its stat ("racy git").
RACY_NS = 2_000_000_000


class Syncer:
    def __init__(self, root: Path, remote: Remote, *, device: str) -> None:
        self.root = root.resolve()
        self.remote = remote
        self.device = device
        self.state = State(self.root)
        self.wake = asyncio.Event()
        self.rounds = 0

    # -- the folder ----------------------------------------------------------------------

    def local(self, path: str) -> Path:
        return self.root.joinpath(*path.split("/"))

    def scan(self) -> dict[str, os.stat_result]:
        """Every regular file under the root with a safe name (symlinks are not followed)."""
        found: dict[str, os.stat_result] = {}
        for folder, dirs, files in os.walk(self.root):
            relative = os.path.relpath(folder, self.root)
            prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
            if not prefix:
                dirs[:] = [d for d in dirs if d != paths.STATE_DIR]
            for name in files:
                path = prefix + name
                if not paths.is_safe(path):
                    log.warning("not syncing %r: not a safe workspace path", path)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    st = os.lstat(os.path.join(folder, name))
                    if st.st_mode & 0o170000 == 0o100000:
                        found[path] = st
        return found

    @staticmethod
    def same(row: Row | None, st: os.stat_result | None) -> bool:
        if row is None or st is None or not row.digest:
            return False
        return (
            row.size == st.st_size
            and row.mtime_ns == st.st_mtime_ns
            and row.ino == st.st_ino
            and time.time_ns() - st.st_mtime_ns > RACY_NS
        )

    def _row(self, path: str, version: int, digest: str, st: os.stat_result) -> Row:
        return Row(path, version, digest, st.st_size, st.st_mtime_ns, st.st_ino)

    # -- pull ----------------------------------------------------------------------------

    async def pull(self) -> None:
        cursor = self.state.cursor
        while True:
            answer = await self.remote.changes(cursor)
            latest = {change.path: change for change in answer.changes}
            for change in latest.values():
                await self.apply(change)
            cursor = answer.cursor
            self.state.set_meta("cursor", str(cursor))
            if not answer.more:
                return

    def _stat(self, path: str) -> os.stat_result | None:
        try:
            st = os.lstat(self.local(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st if st.st_mode & 0o170000 == 0o100000 else None

    def _modified(self, path: str, row: Row | None, st: os.stat_result | None) -> bool:
        """Whether the local file holds bytes the server has not seen from us."""
        if st is None:
            return False
        if self.same(row, st):
            return False
        cut, _ = chunking.cut_file(self.local(path))
        return row is None or cut.digest != row.digest

    async def apply(self, change: pb.Change) -> None:
        path: str = change.path
        version: int = change.version
        if not paths.is_safe(path):  # never write outside the folder, whatever the server says
            log.warning("ignoring remote change of %r: not a safe path", path)
            return
        row = self.state.get(path)
        if row is not None and row.version >= version:
            return
        st = self._stat(path)
        modified = await asyncio.to_thread(self._modified, path, row, st)
        if change.deleted:
            if modified and st is not None:
                # Kept: an edit here outlives a deletion there; the next push sends it.
                self.state.put([Row(path, version, "", -1, -1, -1)])
                return
            if st is not None and self._inside(self.local(path)):
                with contextlib.suppress(FileNotFoundError):
                    self.local(path).unlink()
                self._prune(path)
            self.state.forget(path)
            return
        digest: str = change.digest
        if modified and st is not None:
            if row is None and await asyncio.to_thread(_digest, self.local(path)) == digest:
                self.state.put([self._row(path, version, digest, st)])
                return
            self._conflict(path)
        target = self.local(path)
        if not self._inside(target):
            log.warning("ignoring remote change of %r: a folder on its way is a symlink", path)
            return
        temp = self.state.tmp / f"{secrets.token_hex(8)}.part"
        try:
            await self.remote.download(path, version, digest, temp)
            # The user may have written the file while it downloaded: keep those bytes too.
            now = self._stat(path)
            if (now is not None and st is not None and not _stat_equal(now, st)) or (
                now is not None and st is None
            ):
                self._conflict(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        done = self._stat(path)
        if done is not None:
            self.state.put([self._row(path, version, digest, done)])
        log.info("applied %s version %d", path, version)

    def _inside(self, target: Path) -> bool:
        """Whether `target`'s folder really is inside the synced folder: a symlinked folder
        (made here, never synced) must not lead a remote write elsewhere."""
        folder = target.parent
        while not folder.exists() and folder != self.root:
            folder = folder.parent
        return folder.resolve() == self.root or self.root in folder.resolve().parents

    def _conflict(self, path: str) -> None:
        taken = set(self.scan())
        name = paths.conflict_copy(path, device=self.device, day=date.today(), taken=taken)
        os.replace(self.local(path), self.local(name))
        self.state.count("conflicts")
        log.warning("conflict on %s: local bytes kept as %s", path, name)

    def _prune(self, path: str) -> None:
        """Removes folders that the deletion of `path` left empty."""
        folder = posixpath.dirname(path)
        while folder:
            try:
                self.local(folder).rmdir()
            except OSError:
                return
            folder = posixpath.dirname(folder)

    # -- push ----------------------------------------------------------------------------

    async def push(self) -> bool:
        """Sends what changed here; False when a commit met a newer version (pull first)."""
        found = await asyncio.to_thread(self.scan)
        rows = self.state.rows()
        clean = True
        batch: list[tuple[Upload, os.stat_result]] = []
        size = 0
        for path, st in sorted(found.items()):
            row = rows.get(path)
            if self.same(row, st):
                continue
            read = await asyncio.to_thread(_read, self.local(path), st)
            if read is None:
                continue  # being written: the next round reads it whole
            cut, data = read
            if row is not None and row.digest == cut.digest:
                self.state.put([self._row(path, row.version, cut.digest, st)])
                continue
            batch.append((Upload(path, row.version if row else 0, cut, data), st))
            size += len(data)
            if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
                clean &= await self._upload(batch)
                batch, size = [], 0
        if batch:
            clean &= await self._upload(batch)
        for path, row in rows.items():
            if path in found:
                continue
            if not row.digest:  # kept over a remote deletion, then deleted here too
                self.state.forget(path)
                continue
            answer = await self.remote.delete(path, row.version)
            if answer.committed:
                self.state.forget(path)
                log.info("deleted %s (version %d)", path, answer.version)
            else:
                clean = False
        return clean

    async def _upload(self, batch: list[tuple[Upload, os.stat_result]]) -> bool:
        uploads = [u for u, _ in batch]

        def sent(chunks: int, size: int) -> None:
            self.state.count("chunks_uploaded", chunks)
            self.state.count("bytes_uploaded", size)

        await self.remote.send_missing(uploads, sent)
        results = await self.remote.commit(uploads)
        done = []
        clean = True
        for (upload, st), result in zip(batch, results, strict=True):
            if result.committed:
                done.append(self._row(upload.path, result.version, upload.cut.digest, st))
            else:
                clean = False
        self.state.put(done)
        self.state.count("versions_committed", len(done))
        for row in done:
            log.info("committed %s version %d", row.path, row.version)
        return clean

    # -- the loop ------------------------------------------------------------------------

    async def round(self) -> None:
        await self.pull()
        for _ in range(5):
            if await self.push():
                break
            await self.pull()  # a newer version arrived: conflict copies, then push again
        self.rounds += 1
        self.state.set_meta("rounds", str(self.rounds))

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._watch_folder(stop), name="watch folder"),
            asyncio.create_task(self._watch_server(stop), name="watch server"),
        ]
        backoff = 0.2
        try:
            while not stop.is_set():
                self.wake.clear()
                try:
                    await self.round()
                    backoff = 0.2
                except grpc.aio.AioRpcError as exc:
                    log.warning(
                        "sync round failed (%s: %s); retrying", exc.code().name, exc.details()
                    )
                    await _sleep(stop, backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                waiter = asyncio.create_task(self.wake.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=RESCAN, return_when="FIRST_COMPLETED")
                waiter.cancel()
                stopper.cancel()
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.state.close()

    async def _watch_folder(self, stop: asyncio.Event) -> None:
        def wanted(_: watchfiles.Change, name: str) -> bool:
            return paths.STATE_DIR not in Path(name).relative_to(self.root).parts[:1]

        async for _ in watchfiles.awatch(
            self.root, watch_filter=wanted, stop_event=stop, debounce=500, step=30,
            recursive=True,
        ):  # fmt: skip
            self.wake.set()

    async def _watch_server(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                async for batch in self.remote.watch(self.state.cursor):
                    backoff = 0.2
                    if batch.changes:
                        self.wake.set()
            except grpc.aio.AioRpcError as exc:
                log.debug("change stream lost (%s); reopening", exc.code().name)
            await _sleep(stop, backoff)
            backoff = min(backoff * 2, 2.0)
            self.wake.set()  # whatever happened while the stream was away


def _stat_equal(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ino) == (b.st_size, b.st_mtime_ns, b.st_ino)


def _digest(path: Path) -> str:
    return chunking.cut_file(path)[0].digest


def _read(path: Path, st: os.stat_result) -> tuple[chunking.Cut, bytes] | None:
    """The file cut, if it did not change while it was read (else None)."""
    try:
        cut, data = chunking.cut_file(path)
        after = os.lstat(path)
    except FileNotFoundError:
        return None
    return (cut, data) if _stat_equal(after, st) else None


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
