"""Operator HTTP endpoints, mounted in every service: dead letters (list, inspect, replay
with an optional repaired event) and the state of the streams. ADMIN_API_KEY bearer.

Dead letters hold the original entry as it was on the stream: ids and non-identifying
facts only (no personal data ever travels on a stream), so showing them is safe."""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from shared.events import BadEvent
from shared.http import BearerToken, unauthorized
from shared.streams import TOPOLOGY, dead_letters, find_dead_letter, replay_dead_letter, stream_report


def operator(token: BearerToken, request: Request) -> None:
    key = request.app.state.runtime.settings.admin_api_key
    if not key or not hmac.compare_digest(token.encode(), key.encode()):
        raise unauthorized()


class ReplayRequest(BaseModel):
    """A repaired event (the whole CloudEvents envelope) to replay instead of the original."""

    model_config = ConfigDict(extra="forbid")
    event: dict[str, Any] | None = Field(default=None, description="the repaired envelope; omit to replay as is")


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


def _group(group: str | None) -> str | None:
    if group is not None and group not in TOPOLOGY:
        raise HTTPException(422,
                            [{"field": "group", "reason": f"unknown group; one of {', '.join(TOPOLOGY)}"}])
    return group


def ops_router() -> APIRouter:
    router = APIRouter(prefix="/v1/ops", tags=["operators"], dependencies=[Depends(operator)])

    @router.get("/dead-letters")
    async def list_dead_letters(
        request: Request,
        group: Annotated[str | None, Query(description="matching, notify, intake, ...")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        redis = request.app.state.runtime.redis
        items = []
        for g in [_group(group)] if group else list(TOPOLOGY):
            assert g is not None
            items += [letter_view({**d, "dead_letter_group": g}) for d in await dead_letters(redis, g, limit)]
        return {"items": items[:limit]}

    @router.get("/dead-letters/{dead_id}")
    async def show_dead_letter(request: Request, dead_id: str, group: str | None = None) -> dict[str, Any]:
        try:
            return letter_view(await find_dead_letter(request.app.state.runtime.redis, dead_id, _group(group)))
        except KeyError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such dead letter") from None
        except LookupError as e:
            raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None

    @router.post("/dead-letters/{dead_id}/replay", status_code=status.HTTP_202_ACCEPTED)
    async def replay(request: Request, dead_id: str, body: ReplayRequest | None = None,
                     group: str | None = None) -> dict[str, Any]:
        redis = request.app.state.runtime.redis
        try:
            letter = await find_dead_letter(redis, dead_id, _group(group))
            repaired = json.dumps(body.event) if body is not None and body.event is not None else None
            if repaired is None:
                # Replaying as is only helps if the event parses (the fault was elsewhere).
                from shared.events import parse_entry

                parse_entry(json.loads(letter["entry"]))
            new_id = await replay_dead_letter(redis, letter["dead_letter_group"], dead_id, repaired)
        except KeyError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such dead letter") from None
        except LookupError as e:
            raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
        except BadEvent as e:
            raise HTTPException(422, [{
                "field": "event", "reason": f"{e}" + ("" if body and body.event else "; send a repaired event"),
            }]) from None
        return {"replayed": dead_id, "group": letter["dead_letter_group"], "entry_id": new_id}

    @router.get("/streams")
    async def streams(request: Request) -> dict[str, Any]:
        return await stream_report(request.app.state.runtime.redis)

    return router
