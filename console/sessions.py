"""Server-side sessions: the browser holds only a random session id, in an HttpOnly,
SameSite=Strict cookie; the API token it stands for stays in this process.

Why not the token itself in a cookie: a cookie is sent with every request and lands in
proxies' and browsers' storage; an id that means nothing outside this process can be ended
at sign-out (the token cannot), and it carries the per-session CSRF token beside it. The
price is that sessions live in one process: a restart or a second replica signs people out
(the chart runs one replica).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

IDLE_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000


@dataclass
class Session:
    id: str
    # The API token ("" when the API takes calls without one).
    token: str
    # Sent in every form and compared on every POST (double protection with SameSite).
    csrf: str
    # What the sign-in learned about the token, for the header.
    namespace: str
    last_seen: float = field(default=0.0)
    # What the case pages keep for this session, by case (bounded by each page): the
    # shortener's links made or looked up here, the FileSync workspace tokens opened here.
    # It goes with the session, at sign-out or when it expires.
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)

    def csrf_matches(self, given: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), given.encode())


class Sessions:
    """Sessions by id, oldest use first; an idle one expires, and past MAX_SESSIONS the
    least recently used goes, so that nobody can grow this without bound by signing in."""

    def __init__(
        self,
        *,
        idle_seconds: float = IDLE_SECONDS,
        limit: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._idle = idle_seconds
        self._limit = limit
        self._clock = clock

    def create(self, token: str, namespace: str) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32),
            token=token,
            csrf=secrets.token_urlsafe(32),
            namespace=namespace,
            last_seen=self._clock(),
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session of this id, touched; None for an unknown or idle one."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self._idle:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)
