"""Home timelines in Redis: one capped sorted set per user, and how its members are spelled.

Every member has score 0, so the set is ordered by its members' bytes (ZRANGEBYLEX), and a
member is spelled so that byte order is the order we want. A float score cannot hold a
63-bit Snowflake id exactly (53 bits of mantissa), which would misorder posts of the same
millisecond and make cursors skip them; bytes can.

    id (8 bytes) + author (8)     a post, big-endian: newest last; 16 bytes exactly
    b"\\xfe" + author + ms        the user unfollowed author at ms: drop stragglers
    b"\\xff" + author             the user follows hot author: merge their posts on read
    b"\\xff\\xfe"                  a rebuild is under way (fan-out already writes into it)
    b"\\xff\\xff"                  the timeline is complete (built from PostgreSQL, or kept)

A post id's first byte is below 0x80 (ids are positive), and an author's below 0x80 too, so
the markers sort above every post and the sentinels above every marker: one
ZREVRANGEBYLEX from the top reads whether the timeline is complete, its markers and its
newest posts, in one command, as cheap as the bare read it is compared with.

ZADD of a member that is there already changes nothing, so a
fan-out delivered twice leaves one entry: duplicates collapse by id.

A user's own posts (`ut:`) use the same spelling; the server keeps them for hot authors,
whose posts are merged into their followers' timelines on read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

COMPLETE = b"\xff\xff"
BUILDING = b"\xff\xfe"
UNFOLLOWED = b"\xfe"
HOT = b"\xff"
POST_BYTES = 16
_PAIR = struct.Struct(">qq")
_ONE = struct.Struct(">q")
# Below every marker and sentinel.
TOP = b"(\xfe"
# Timelines (and users' post lists) unread this long leave Redis; prewarm rebuilds the
# timelines of the users active in the last day.
TTL = 3 * 86400
# How long an unfollow marker guards against a fan-out already under way for that author.
MARKER_TTL_MS = 3600 * 1000


def post(post_id: int, author: int) -> bytes:
    return _PAIR.pack(post_id, author)


def unpost(member: bytes) -> tuple[int, int]:
    """(post id, author) of a post member."""
    post_id, author = _PAIR.unpack(member)
    return int(post_id), int(author)


def hot(author: int) -> bytes:
    return HOT + _ONE.pack(author)


def unfollowed(author: int, at_ms: int) -> bytes:
    return UNFOLLOWED + _ONE.pack(author) + _ONE.pack(at_ms)


def below(cursor: int | None) -> bytes:
    """The exclusive upper bound of ZREVRANGEBYLEX for posts older than `cursor`: a post
    member of that id sorts above its bare 8 bytes, so it is excluded too."""
    return TOP if cursor is None else b"(" + _ONE.pack(cursor)


@dataclass(frozen=True, slots=True)
class Read:
    """One ZREVRANGEBYLEX from the top, taken apart."""

    complete: bool
    hot: set[int]
    gone: set[int]
    posts: list[bytes]


def split(members: list[bytes], *, now_ms: int) -> Read:
    """The members of a read from the top (sentinels, markers, then posts, all descending)."""
    above = [m for m in members if m[:1] >= UNFOLLOWED]
    hot_authors, gone = markers(above, now_ms=now_ms)
    posts = [m for m in members[len(above) :] if len(m) == POST_BYTES]
    return Read(COMPLETE in above, hot_authors, gone, posts)


def markers(members: Iterable[bytes], *, now_ms: int) -> tuple[set[int], set[int]]:
    """(hot authors followed, authors unfollowed in the last MARKER_TTL_MS) from the
    members above the posts."""
    hot_authors: set[int] = set()
    gone: set[int] = set()
    for member in members:
        if member[:1] == HOT and len(member) == 9:
            hot_authors.add(int(_ONE.unpack(member[1:])[0]))
        elif member[:1] == UNFOLLOWED and len(member) == 17:
            author, at = (int(v) for v in _PAIR.unpack(member[1:]))
            if now_ms - at < MARKER_TTL_MS:
                gone.add(author)
    return hot_authors, gone


def stale_markers(members: Iterable[bytes], *, now_ms: int) -> list[bytes]:
    """The unfollow markers older than MARKER_TTL_MS: the trim job removes them."""
    return [
        m
        for m in members
        if m[:1] == UNFOLLOWED
        and len(m) == 17
        and now_ms - int(_ONE.unpack(m[9:])[0]) >= MARKER_TTL_MS
    ]


# Applies one fan-out step to many timelines: to each that EXISTS (a timeline Redis does
# not hold is built from PostgreSQL when read, so it is skipped), add ARGV's members to add,
# remove ARGV's members to remove, and cap it when it has grown 64 past the cap (keeping the
# sentinels and markers). ARGV: cap, number to add, added..., removed...
# Returns how many timelines it wrote.
APPLY = """
local cap = tonumber(ARGV[1])
local nadd = tonumber(ARGV[2])
local adds = {}
for j = 3, 2 + nadd do adds[#adds + 1] = 0; adds[#adds + 1] = ARGV[j] end
local written = 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    if nadd > 0 then redis.call('ZADD', key, unpack(adds)) end
    for j = 3 + nadd, #ARGV do redis.call('ZREM', key, ARGV[j]) end
    written = written + 1
    if redis.call('ZCARD', key) > cap + 64 then
      local top = redis.call('ZLEXCOUNT', key, '[\\254', '+')
      redis.call('ZREMRANGEBYRANK', key, 0, -(cap + 1 + top))
    end
  end
end
return written
"""

# Unfollow, on one timeline (KEYS[1]): removes the author's posts and hot marker, and
# leaves an unfollow marker (ARGV: author's 8 bytes, the marker) so that a fan-out of theirs
# already under way is dropped on read. Returns the posts removed.
UNFOLLOW = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local removed = 0
for _, member in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], '-', '(\\254')) do
  if string.len(member) == 16 and string.sub(member, 9, 16) == ARGV[1] then
    redis.call('ZREM', KEYS[1], member)
    removed = removed + 1
  end
end
redis.call('ZREM', KEYS[1], '\\255' .. ARGV[1])
redis.call('ZADD', KEYS[1], 0, ARGV[2])
return removed
"""

# A rebuild, finishing (KEYS[1]): the members from PostgreSQL (ARGV[2..]) go in, the
# timeline is marked complete, and it expires after ARGV[1] seconds unless read again.
FINISH = """
local adds = {0, '\\255\\255'}
for j = 2, #ARGV do adds[#adds + 1] = 0; adds[#adds + 1] = ARGV[j] end
redis.call('ZADD', KEYS[1], unpack(adds))
redis.call('ZREM', KEYS[1], '\\255\\254')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# Caps one timeline now (the trim job), like APPLY does on the way. ARGV: cap.
TRIM = """
local cap = tonumber(ARGV[1])
local top = redis.call('ZLEXCOUNT', KEYS[1], '[\\254', '+')
if redis.call('ZCARD', KEYS[1]) <= top + cap then return 0 end
return redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(cap + 1 + top))
"""
