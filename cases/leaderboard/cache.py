"""The Redis fast path: one sorted set per bucket, kept in step with PostgreSQL by versions.

Each bucket's set holds the *full* count of every key in it (score = count), plus one
reserved member, "\\0v" (event keys cannot contain NUL), whose score is minus the bucket's
version in PostgreSQL. The invariant: a set whose version member says v holds exactly the
counts of version v. It is kept by three scripts, each atomic in Redis:

- APPLY (after an ingest commits): adds the batch's counts only if the set is at v - 1, and
  moves it to v; otherwise the set is stale (a lost write, a concurrent ingest applied out of
  order, a restarted Redis) and is deleted.
- LOAD: replaces a set with a version read from PostgreSQL, unless it already holds that
  version or a newer one.
- TOP: first checks every bucket's version against what PostgreSQL said at the start of the
  query; any difference returns the stale buckets (the caller loads them and asks again).
  Then it finds the exact top k with the threshold algorithm (Fagin et al.): it reads every
  bucket from its largest count down, `depth` entries at a time, summing what it sees. A key
  never seen totals at most the sum of the last score read from each unfinished bucket (T).
  Once the k-th largest partial sum exceeds T, only keys whose partial sum plus T reaches it
  can still be in the top k; those get their exact total from every bucket (ZMSCORE), and if
  the k-th exact total still exceeds T the answer is complete. Keys tied with the k-th total
  all come back, and the caller orders ties by key. Reading stops far above the tail for
  skewed (Zipf-like) counts, and reads everything at worst, so it is exact either way.

Because the sets carry every key's count, never a truncated top list, the bounds above hold,
and a Redis that lost data answers nothing wrong: its sets are stale or missing, and reloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as redis

VERSION = "\0v"

_APPLY = """
local pos = 1
local stale = 0
for i = 1, #KEYS do
  local n = tonumber(ARGV[pos])
  local version = tonumber(ARGV[pos + 1])
  local expire = ARGV[pos + 2]
  pos = pos + 3
  local current = redis.call('ZSCORE', KEYS[i], '\\0v')
  local ok
  if current then ok = (-tonumber(current) == version - 1) else ok = (version == 1) end
  if ok then
    for j = pos, pos + 2 * n - 1, 2 do
      redis.call('ZINCRBY', KEYS[i], ARGV[j + 1], ARGV[j])
    end
    redis.call('ZADD', KEYS[i], -version, '\\0v')
    redis.call('EXPIRE', KEYS[i], expire)
  else
    redis.call('DEL', KEYS[i])
    stale = stale + 1
  end
  pos = pos + 2 * n
end
return stale
"""

_LOAD = """
local version = tonumber(ARGV[1])
local current = redis.call('ZSCORE', KEYS[1], '\\0v')
if current and -tonumber(current) >= version then return 0 end
redis.call('DEL', KEYS[1])
local args = {}
for j = 3, #ARGV, 2 do
  args[#args + 1] = ARGV[j + 1]
  args[#args + 1] = ARGV[j]
  if #args >= 2000 then
    redis.call('ZADD', KEYS[1], unpack(args))
    args = {}
  end
end
if #args > 0 then redis.call('ZADD', KEYS[1], unpack(args)) end
redis.call('ZADD', KEYS[1], -version, '\\0v')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

_TOP = """
local n = #KEYS
local k = tonumber(ARGV[1])
local depth = tonumber(ARGV[2])
local stale = {}
local left = 0
for i = 1, n do
  local current = redis.call('ZSCORE', KEYS[i], '\\0v')
  if (not current) or (-tonumber(current) ~= tonumber(ARGV[i + 2])) then
    stale[#stale + 1] = i
  else
    left = left + redis.call('ZCARD', KEYS[i]) - 1
  end
end
if #stale > 0 then return {0, stale} end

local read, low, open = {}, {}, {}
for i = 1, n do read[i] = 0; low[i] = 0; open[#open + 1] = i end
local partial, keys, exact = {}, {}, {}
local rounds, evaluated = 0, 0
while true do
  rounds = rounds + 1
  local still = {}
  for _, i in ipairs(open) do
    local got = redis.call('ZREVRANGE', KEYS[i], read[i], read[i] + depth - 1, 'WITHSCORES')
    local finished = #got < 2 * depth
    for j = 1, #got, 2 do
      local score = tonumber(got[j + 1])
      if score < 0 then finished = true; break end
      local m = got[j]
      local p = partial[m]
      if p == nil then keys[#keys + 1] = m; partial[m] = score else partial[m] = p + score end
      low[i] = score
      left = left - 1
    end
    read[i] = read[i] + depth
    if finished then low[i] = 0 else still[#still + 1] = i end
  end
  open = still
  local bound = 0
  for _, i in ipairs(open) do bound = bound + low[i] end
  -- theta0: the k-th largest partial sum (0 with fewer than k keys): a floor of the k-th total.
  local theta0 = 0
  if #keys >= k then
    local sums = {}
    for x = 1, #keys do sums[x] = partial[keys[x]] end
    table.sort(sums)
    theta0 = sums[#sums - k + 1]
  end
  if #open == 0 then
    -- Everything read: partial sums are the totals.
    local out = {1, rounds, evaluated}
    for x = 1, #keys do
      local m = keys[x]
      if partial[m] >= theta0 then out[#out + 1] = m; out[#out + 1] = partial[m] end
    end
    return out
  end
  if bound < theta0 then
    -- Only keys with partial + bound >= theta0 can be in the top k.
    local todo = {}
    for x = 1, #keys do
      local m = keys[x]
      if exact[m] == nil and partial[m] + bound >= theta0 then todo[#todo + 1] = m end
    end
    -- Looking them up costs a call per open bucket each; when that is more than reading
    -- what is left, read on instead.
    if #todo * #open < left then
      for from = 1, #todo, 1000 do
        local chunk = {}
        for x = from, math.min(from + 999, #todo) do chunk[#chunk + 1] = todo[x] end
        local unread = {}
        for x = 1, #chunk do unread[x] = 0 end
        -- A finished bucket was read whole, so its share is in the partial sum already; in
        -- an open one, a score above the last one read was read, one below it was not, and
        -- one equal to it was read if its rank is within what was read.
        for _, i in ipairs(open) do
          local scores = redis.call('ZMSCORE', KEYS[i], unpack(chunk))
          for x = 1, #chunk do
            local s = scores[x]
            if s then
              s = tonumber(s)
              if s < low[i] then
                unread[x] = unread[x] + s
              elseif s == low[i] and redis.call('ZREVRANK', KEYS[i], chunk[x]) >= read[i] then
                unread[x] = unread[x] + s
              end
            end
          end
        end
        for x = 1, #chunk do exact[chunk[x]] = partial[chunk[x]] + unread[x] end
        evaluated = evaluated + #chunk
      end
      local best = {}
      for _, total in pairs(exact) do best[#best + 1] = total end
      table.sort(best)
      local theta = best[#best - k + 1]
      if theta > bound then
        local out = {1, rounds, evaluated}
        for m, total in pairs(exact) do
          if total >= theta then out[#out + 1] = m; out[#out + 1] = total end
        end
        return out
      end
    end
  end
  depth = depth * 2
end
"""


class Stale(Exception):
    """Some buckets' sets are not at the version PostgreSQL has: load them, then ask again."""

    def __init__(self, indexes: list[int]) -> None:
        super().__init__(f"{len(indexes)} stale buckets")
        self.indexes = indexes


class Cache:
    """The sorted sets of one leaderboard resource, under its own key prefix."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._apply = client.register_script(_APPLY)
        self._load = client.register_script(_LOAD)
        self._top = client.register_script(_TOP)

    def key(self, bucket_id: int) -> str:
        return f"{self.prefix}{bucket_id}"

    async def apply(self, changes: Sequence[tuple[int, int, int, dict[str, int]]]) -> int:
        """(bucket id, version it moved to, seconds to live, {key: added}) per bucket; returns how
        many buckets were stale (deleted, to be loaded when next read)."""
        keys: list[str] = []
        args: list[str | int] = []
        for bucket_id, version, expire_in, counts in changes:
            keys.append(self.key(bucket_id))
            args += [len(counts), version, expire_in]
            for member, count in counts.items():
                args += [member, count]
        return int(await self._apply(keys=keys, args=args))

    async def load(
        self, bucket_id: int, *, version: int, expire_in: int, counts: Sequence[tuple[str, int]]
    ) -> None:
        args: list[str | int] = [version, expire_in]
        for member, count in counts:
            args += [member, count]
        await self._load(keys=[self.key(bucket_id)], args=args)

    async def top(
        self, buckets: Sequence[tuple[int, int]], *, k: int
    ) -> tuple[list[tuple[str, int]], int, int]:
        """The exact top k over (bucket id, expected version) pairs: ([(key, total)] largest
        first, ties by key; the threshold algorithm's rounds; keys evaluated exactly). Raises
        Stale naming the buckets to load first."""
        if not buckets:
            return [], 0, 0
        keys = [self.key(bucket_id) for bucket_id, _ in buckets]
        depth = max(k, 32)
        reply = await self._top(keys=keys, args=[k, depth, *(v for _, v in buckets)])
        if int(reply[0]) == 0:
            raise Stale([int(i) - 1 for i in reply[1]])
        rounds, evaluated = int(reply[1]), int(reply[2])
        pairs = [(m.decode(), int(t)) for m, t in zip(reply[3::2], reply[4::2], strict=True)]
        pairs.sort(key=lambda p: (-p[1], p[0].encode()))
        return pairs[:k], rounds, evaluated

    async def forget(self, bucket_ids: Sequence[int]) -> None:
        ids = list(bucket_ids)
        for at in range(0, len(ids), 1000):
            await self.client.delete(*(self.key(i) for i in ids[at : at + 1000]))
