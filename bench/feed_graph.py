"""The Feed bench's follow graph: N users, Zipf-distributed follower counts (the top author
has N/2 followers, the median about 20), loaded straight into the case's PostgreSQL tables
with COPY (the graph is the bench's input, not what it measures; Follow is a plain
transaction of four statements).

Followers of the author ranked r: round(top / r**s), with s chosen so that the median rank
(N/2) has MEDIAN followers; each author's followers are drawn uniformly from the others.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

MEDIAN = 20
FIRST_ID = 1_000_000  # bench user ids: FIRST_ID + index


@dataclass
class Graph:
    users: list[int]
    followers: dict[int, list[int]] = field(default_factory=dict)  # author -> followers

    @property
    def edges(self) -> int:
        return sum(len(f) for f in self.followers.values())

    def count(self, author: int) -> int:
        return len(self.followers.get(author, ()))

    def ranked(self) -> list[int]:
        """Authors, most followed first."""
        return sorted(self.users, key=lambda u: -self.count(u))


def zipf(n: int, *, seed: int = 7) -> Graph:
    rng = random.Random(seed)
    users = [FIRST_ID + i for i in range(n)]
    top = n // 2
    exponent = math.log(top / MEDIAN) / math.log(n / 2)
    order = users[:]
    rng.shuffle(order)  # ranks are not id order
    graph = Graph(users)
    for rank, author in enumerate(order, start=1):
        wanted = min(n - 1, max(0, round(top / rank**exponent)))
        picked = set(rng.sample(users, min(n, wanted + 1)))
        picked.discard(author)
        graph.followers[author] = sorted(picked)[:wanted]
    return graph


def load(dsn: str, schema: str, graph: Graph) -> None:
    """COPY the graph into the resource's tables (the schema is migrated already)."""
    now = datetime.now(UTC)
    following: dict[int, int] = dict.fromkeys(graph.users, 0)
    for followers in graph.followers.values():
        for f in followers:
            following[f] += 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        with conn.cursor() as cur:
            with cur.copy("COPY handles (handle, user_id) FROM STDIN") as copy:
                for user in graph.users:
                    copy.write_row((f"u{user}", user))
            with cur.copy(
                "COPY users (id, handle, created_at, followers, following, active_at) FROM STDIN"
            ) as copy:
                for user in graph.users:
                    copy.write_row((user, f"u{user}", now, graph.count(user), following[user], now))
            with cur.copy("COPY follows (follower, followee, created_at) FROM STDIN") as copy:
                for author, followers in graph.followers.items():
                    for f in followers:
                        copy.write_row((f, author, now))
            with cur.copy("COPY followers (followee, follower) FROM STDIN") as copy:
                for author, followers in graph.followers.items():
                    for f in followers:
                        copy.write_row((author, f))
        conn.execute("ANALYZE")
