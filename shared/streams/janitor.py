"""Keeping streams bounded: trimming what every group acknowledged, and forgetting the
consumers of processes long gone."""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared.periodic import PeriodicWorker
from shared.streams.topology import PREFIX, stream_groups

log = logging.getLogger("rujukan.streams")

# Trimming, atomically: the first id any group still needs is the lowest of, per group, its
# oldest pending entry and the entry after its last delivered one. Everything below it was
# acknowledged by every group. Nothing is trimmed while an expected group is missing (Redis
# flushed and groups not yet provisioned again) or when the stream has no group at all.
_TRIM = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  if am ~= bm then return am < bm end
  return as < bs
end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local present = {}
local floor = false
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  present[info['name']] = true
  local ms, seq = string.match(info['last-delivered-id'], '^(%d+)-(%d+)$')
  local need = ms .. '-' .. tostring(tonumber(seq) + 1)
  if tonumber(info['pending']) > 0 then
    local p = redis.call('XPENDING', KEYS[1], info['name'])
    if before(p[2], need) then need = p[2] end
  end
  if (not floor) or before(need, floor) then floor = need end
end
for _, name in ipairs(ARGV) do
  if not present[name] then return -2 end
end
if not floor then return -3 end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
"""

# Consumers with nothing pending that have been idle long are gone processes: remove them
# (never one with pending entries: that would drop its entries from the group's PEL).
FORGET_CONSUMERS = """
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[2])
     and (ARGV[3] == '' or ARGV[3] == info['name']) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
"""


async def trim_streams(redis: aioredis.Redis, topology: dict[str, list[str]] | None = None) -> dict[str, int]:
    """Trim every consumed stream below the first entry some group still needs; returns
    how many entries each stream lost (streams skipped for safety are left out)."""
    script = redis.register_script(_TRIM)
    trimmed: dict[str, int] = {}
    for stream, groups in stream_groups(topology).items():
        n = int(await script(keys=[stream], args=groups))
        if n >= 0:
            trimmed[stream] = n
        elif n == -2:
            log.warning("not trimming %s: a consumer group is missing (provisioning pending)", stream)
    return trimmed


async def forget_idle_consumers(redis: aioredis.Redis, idle_ms: int,
                                topology: dict[str, list[str]] | None = None) -> int:
    script = redis.register_script(FORGET_CONSUMERS)
    removed = 0
    for stream, groups in stream_groups(topology).items():
        for group in groups:
            try:
                removed += int(await script(keys=[stream], args=[group, idle_ms, ""]))
            except ResponseError as e:
                if "NOGROUP" not in str(e) and "no such key" not in str(e).lower():
                    raise
    return removed


class StreamJanitor(PeriodicWorker):
    """Keeps streams bounded: trims what every group acknowledged and forgets consumers of
    processes long gone. Every replica runs one; a lock lets one of them work per period."""

    LOCK = f"{PREFIX}:janitor:lock"
    name = "stream janitor"
    round_at_start = False

    def __init__(self, redis: aioredis.Redis, *, interval_s: float = 60.0, forget_after_s: float = 3600.0,
                 topology: dict[str, list[str]] | None = None) -> None:
        super().__init__(interval_s)
        self.redis = redis
        self.forget_after_s = forget_after_s
        self.topology = topology
        self.trimmed = 0
        self.runs = 0

    async def round(self) -> None:
        await self.run_once()

    async def run_once(self, *, force: bool = False) -> dict[str, int] | None:
        token = f"{time.time()}"
        got = await self.redis.set(self.LOCK, token, nx=True, px=max(int(self.interval_s * 900), 100))
        if not got and not force:
            return None  # another replica did it this period
        trimmed = await trim_streams(self.redis, self.topology)
        await forget_idle_consumers(self.redis, int(self.forget_after_s * 1000), self.topology)
        self.runs += 1
        self.trimmed += sum(trimmed.values())
        if any(trimmed.values()):
            log.info("trimmed %s", {k: v for k, v in trimmed.items() if v})
        return trimmed
