"""Notify's HTTP API: deliveries of a referral, for operators."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from notify.service_layer.deliveries import Notify
from shared.operators import Role, operator_with


def get_notify(request: Request) -> Notify:
    return request.app.state.notify


NotifyDep = Annotated[Notify, Depends(get_notify)]


# Deliveries are the operations role's: how mail went, never what it said or to whom.
admin = operator_with(Role.operations)


router = APIRouter(prefix="/v1", dependencies=[Depends(admin)])


@router.get("/deliveries")
async def deliveries(referral_id: str, notify: NotifyDep) -> dict[str, Any]:
    """The referral's mails (`items`) and its messages on other channels (`channels`:
    webhook, SMS, WhatsApp, the operators' webhook), each with its attempts."""
    return {"items": [
        {"id": d.id, "decision_id": d.decision_id, "receiver_id": d.receiver_id, "kind": d.kind,
         "state": d.state, "attempts": d.attempts, "last_error": d.last_error,
         "sent_at": d.sent_at.isoformat() if d.sent_at else None}
        for d in await notify.deliveries_of(referral_id)
    ], "channels": [
        {"id": c.id, "decision_id": c.decision_id, "receiver_id": c.receiver_id, "kind": c.kind,
         "channel": c.channel, "state": c.state, "attempts": c.attempts, "last_error": c.last_error,
         "sent_at": c.sent_at.isoformat() if c.sent_at else None}
        for c in await notify.channel_deliveries_of(referral_id)
    ]}
