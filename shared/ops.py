"""Operator HTTP endpoints, mounted in every service: dead letters (list, inspect, replay as
they were) and the state of the streams for the operations role; the audit log for the
audit role.

Dead letters hold the original entry as it was on the stream: ids and non-identifying
facts only (no personal data ever travels on a stream), so showing them is safe. A replay
puts back the dead letter's own event, once it parses: an operator cannot put an event of
their own making on a stream."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel

from shared.audit import audit_log
from shared.events import BadEvent, parse_entry
from shared.operators import Role, operator_with
from shared.streams.dead_letters import dead_letters, find_dead_letter, replay_dead_letter
from shared.streams.report import stream_report
from shared.streams.topology import TOPOLOGY

# A Redis stream entry id: "<milliseconds>-<sequence>".
DEAD_LETTER_ID = r"^\d{1,20}-\d{1,20}$"
DeadLetterId = Annotated[str, Path(pattern=DEAD_LETTER_ID, description="its entry id, e.g. 1700000000000-0")]
GroupQuery = Annotated[str | None, Query(description=f"one of: {', '.join(TOPOLOGY)}")]


def is_dead_letter_id(text: str) -> bool:
    return re.fullmatch(DEAD_LETTER_ID, text) is not None


class DeadLetter(BaseModel):
    id: str
    group: str | None
    stream: str | None
    entry_id: str | None
    consumer: str | None
    deliveries: int
    error: str | None
    type: str | None
    at: float
    event: Any = None


class DeadLetters(BaseModel):
    items: list[DeadLetter]


class Replayed(BaseModel):
    replayed: str
    group: str
    entry_id: str


class AuditEntryView(BaseModel):
    id: int
    at: datetime
    operator: str
    role: str
    method: str
    action: str
    target: dict[str, str]
    status: int
    client: str


class AuditEntries(BaseModel):
    items: list[AuditEntryView]


def letter_view(d: dict[str, str]) -> dict[str, Any]:
    entry = json.loads(d.get("entry", "{}"))
    raw = entry.get("event")
    try:
        event: Any = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError:
        event = raw  # malformed JSON: shown as the text it was
    return {
        "id": d["id"], "group": d.get("group") or d.get("dead_letter_group"), "stream": d.get("stream"),
        "entry_id": d.get("entry_id"), "consumer": d.get("consumer"), "deliveries": int(d.get("deliveries", 0)),
        "error": d.get("error"), "type": d.get("type") or entry.get("type"), "at": float(d.get("at", 0)),
        "event": event,
    }


async def replay_as_it_was(redis: Any, dead_id: str, group: str | None) -> tuple[str, str]:
    """Put a dead letter's own event back to its group, once it parses (the fault was
    elsewhere, e.g. a bug since fixed): (group, new entry id). KeyError: no such dead
    letter (or replayed meanwhile); LookupError: several groups hold it; BadEvent: its
    event does not parse, so replaying it would only fail again (discard it instead)."""
    letter = await find_dead_letter(redis, dead_id, group)
    parse_entry(json.loads(letter["entry"]))
    return letter["dead_letter_group"], await replay_dead_letter(redis, letter["dead_letter_group"], dead_id)


def _group(group: str | None) -> str | None:
    if group is not None and group not in TOPOLOGY:
        raise HTTPException(422,
                            [{"field": "group", "reason": f"unknown group; one of {', '.join(TOPOLOGY)}"}])
    return group


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such dead letter"},
                                               409: {"description": "several groups hold this id"}}


def ops_router() -> APIRouter:
    router = APIRouter(prefix="/v1/ops", tags=["operators"])
    operations = APIRouter(dependencies=[Depends(operator_with(Role.operations))])
    audit = APIRouter(dependencies=[Depends(operator_with(Role.audit))])

    @operations.get("/dead-letters", response_model=DeadLetters)
    async def list_dead_letters(
        request: Request,
        group: GroupQuery = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        redis = request.app.state.runtime.redis
        items = []
        for g in [_group(group)] if group else list(TOPOLOGY):
            assert g is not None
            items += [letter_view({**d, "dead_letter_group": g}) for d in await dead_letters(redis, g, limit)]
        return {"items": items[:limit]}

    @operations.get("/dead-letters/{dead_id}", response_model=DeadLetter, responses=NOT_FOUND)
    async def show_dead_letter(request: Request, dead_id: DeadLetterId, group: GroupQuery = None) -> dict[str, Any]:
        try:
            return letter_view(await find_dead_letter(request.app.state.runtime.redis, dead_id, _group(group)))
        except KeyError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such dead letter") from None
        except LookupError as e:
            raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None

    @operations.post("/dead-letters/{dead_id}/replay", status_code=status.HTTP_202_ACCEPTED,
                     response_model=Replayed,
                     responses={**NOT_FOUND, 422: {"description": "its event does not parse: discard it"}})
    async def replay(request: Request, dead_id: DeadLetterId, group: GroupQuery = None) -> dict[str, Any]:
        try:
            replayed_to, new_id = await replay_as_it_was(request.app.state.runtime.redis, dead_id, _group(group))
        except KeyError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such dead letter") from None
        except LookupError as e:
            raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
        except BadEvent as e:
            raise HTTPException(422, [{
                "field": "event", "reason": f"{e}; replayed, it would only fail again: discard it",
            }]) from None
        return {"replayed": dead_id, "group": replayed_to, "entry_id": new_id}

    @operations.get("/streams")
    async def streams(request: Request) -> dict[str, Any]:
        return await stream_report(request.app.state.runtime.redis)

    @audit.get("/audit", response_model=AuditEntries)
    async def audit_entries(
        request: Request,
        since: Annotated[datetime | None, Query(description="entries at or after this time (ISO 8601)")] = None,
        operator: Annotated[str | None, Query(max_length=64, description="one operator's name")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Operator actions on this service, in the order they happened."""
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)  # a time without a zone is read as UTC
        rows = await audit_log(request.app).entries(since, operator, limit)
        return {"items": [AuditEntryView.model_validate(r, from_attributes=True) for r in rows]}

    router.include_router(operations)
    router.include_router(audit)
    return router
