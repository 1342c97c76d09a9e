"""Dead letters: how an entry becomes one (atomically, with the reason), and what an operator
does with them (list, find, replay, discard)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis

from shared.events import parse_entry
from shared.streams.topology import TOPOLOGY, dead_letter_stream, decoded, error_key, replay_stream, stats_key

log = logging.getLogger("rujukan.streams")

# Dead-lettering is one atomic step: the entry is acknowledged and copied to the dead-letter
# stream only if it was still pending in the group, so two consumers racing on the same
# entry (a slow one and the one that reclaimed it) leave exactly one dead letter.
DEAD_LETTER = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('DEL', KEYS[3])
redis.call('HINCRBY', KEYS[4], 'dead_lettered', 1)
return id
"""

# Replaying moves a dead letter: it is removed and put on the group's replay stream in one
# step, so two operators replaying the same letter replay it once.
_REPLAY = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', KEYS[2], '*', unpack(fields))
"""


def dead_letter_call(*, group: str, consumer: str, stream: str, entry_id: str, fields: dict[Any, Any],
                     reason: str, deliveries: int) -> tuple[list[str], list[Any]]:
    """The keys and arguments of DEAD_LETTER: the record that find_dead_letter and
    replay_dead_letter read back."""
    original = {decoded(k): decoded(v) for k, v in fields.items()}
    record = {
        "stream": stream, "entry_id": entry_id, "group": group, "consumer": consumer,
        "deliveries": str(deliveries), "error": reason[:2000], "entry": json.dumps(original),
        "at": str(time.time()), "type": original.get("type", ""),
    }
    args: list[Any] = [group, entry_id]
    for k, v in record.items():
        args += [k, v]
    keys = [stream, dead_letter_stream(group), error_key(group, stream, entry_id), stats_key(group)]
    return keys, args


def _dead_letter_view(group: str, entry_id: Any, fields: dict[Any, Any]) -> dict[str, str]:
    return {"id": decoded(entry_id), "dead_letter_group": group, **{decoded(k): decoded(v) for k, v in fields.items()}}


async def dead_letters(redis: aioredis.Redis, group: str, count: int = 100, start: str = "-") -> list[dict[str, str]]:
    """A group's dead letters, oldest first, from `start` (an id, inclusive)."""
    rows: Any = await redis.xrange(dead_letter_stream(group), min=start, count=count)
    return [{"id": decoded(i), **{decoded(k): decoded(v) for k, v in f.items()}} for i, f in rows]


def is_entry_id(text: str) -> bool:
    """A complete stream entry id, `milliseconds-sequence`, each a 64-bit unsigned integer."""
    ms, sep, seq = text.partition("-")
    return bool(sep) and all(p.isascii() and p.isdigit() and int(p) < 2**64 for p in (ms, seq))


async def find_dead_letter(redis: aioredis.Redis, dead_id: str, group: str | None = None,
                           topology: dict[str, list[str]] | None = None) -> dict[str, str]:
    """One dead letter by id, in the given group or in whichever group holds it.

    Raises KeyError when there is none, LookupError when several groups hold that id."""
    if not is_entry_id(dead_id):
        raise KeyError(dead_id)  # Redis would refuse the id: no dead letter has it
    groups = [group] if group else list(topology or TOPOLOGY)
    found = []
    for g in groups:
        rows: Any = await redis.xrange(dead_letter_stream(g), min=dead_id, max=dead_id)
        found += [_dead_letter_view(g, i, f) for i, f in rows]
    if not found:
        raise KeyError(dead_id)
    if len(found) > 1:
        raise LookupError(f"dead letter {dead_id} exists in several groups; name one")
    return found[0]


async def replay_dead_letter(redis: aioredis.Redis, group: str, dead_id: str,
                             event: str | None = None) -> str:
    """Put a dead letter (or a repaired version of its event) on the group's replay stream,
    removing it from the dead letters in the same step; returns the new entry id.

    A repaired event must parse (BadEvent otherwise). The original is replayed as it was
    when no repair is given (the failure was elsewhere, e.g. a bug since fixed)."""
    letter = await find_dead_letter(redis, dead_id, group)
    original: dict[str, str] = json.loads(letter["entry"])
    if event is not None:
        env, _ = parse_entry({"event": event})
        original = env.to_fields()
    entry = {**original, "replay_of": dead_id, "original_stream": letter.get("stream", ""),
             "original_entry_id": letter.get("entry_id", "")}
    args: list[Any] = [dead_id]
    for k, v in entry.items():
        args += [k, v]
    script = redis.register_script(_REPLAY)
    new_id = await script(keys=[dead_letter_stream(group), replay_stream(group)], args=args)
    if not new_id:
        raise KeyError(dead_id)  # replayed or discarded meanwhile by someone else
    log.info("dead letter %s of %s replayed as %s", dead_id, group, decoded(new_id))
    return decoded(new_id)


async def discard_dead_letter(redis: aioredis.Redis, group: str, dead_id: str) -> None:
    if not is_entry_id(dead_id) or not await redis.xdel(dead_letter_stream(group), dead_id):
        raise KeyError(dead_id)
