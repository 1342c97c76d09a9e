"""Operators' pages shared by the three services: signing in with an operator key, and the
dead letters of each service (list, one entry, replay, discard).

The page session lives in Redis, which every service and replica shares: the cookie holds
a random id, Redis holds (under the id's SHA-256) the operator's name, role and the hash of
the key that opened it, for 8 hours. Nothing in the configuration lets anyone make a
session: only the key itself. Removing or replacing that key, or giving the operator another
role, ends every session it opened; signing out deletes the session. Without Redis to ask,
a session is refused (fails closed).

Every page request of a signed-in operator, allowed or refused for its role, is named on
the request for the audit log exactly as the API's operator dependency does
(shared/operators.py), so the same middleware records it with its outcome.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from redis.exceptions import RedisError

from shared.audit import STATE_KEY, OperatorCall
from shared.events import BadEvent
from shared.operators import Operator, Role, key_digest, parse_operator_keys, route_template
from shared.ops import is_dead_letter_id, letter_view, replay_as_it_was
from shared.streams.dead_letters import dead_letters, discard_dead_letter, find_dead_letter
from shared.streams.topology import dead_letter_stream
from shared.web.csrf import is_https
from shared.web.i18n import gettext_for, language_of
from shared.web.pages import PageProblem, form_of, safe_next

log = logging.getLogger("rujukan.operator.pages")

COOKIE = "rujukan_operator"
SESSION_SECONDS = 8 * 3600
SIGNIN = "/operator/signin"
SIGNOUT = "/operator/signout"
HOME = "/operator/"
SESSION_KEY = "rujukan:operator-session:"  # + SHA-256 of the cookie's value
SERVICES = ("intake", "matching", "notify")
MAX_KEY_CHARS = 200
LISTED = 100  # dead letters listed on a page  # an operator key is ~47 characters; anything far longer is not one


def _settings(request: Request) -> Any:
    return getattr(request.app.state, "settings", None) or request.app.state.runtime.settings


def audit_as(request: Request, op: Operator) -> None:
    """Name the operator on the request: the audit middleware records it with the outcome
    (the same entry as for an API call: name, role, method, route, its path parameters)."""
    call = OperatorCall(operator=op.name, role=op.role.value, method=request.method,
                        action=route_template(request),
                        target={k: str(v)[:100] for k, v in request.path_params.items()},
                        client=request.client.host if request.client else "")
    setattr(request.state, STATE_KEY, call)


def _by_name(request: Request) -> dict[str, tuple[str, Operator]]:
    """name -> (the SHA-256 of its key as configured, the operator)."""
    known = parse_operator_keys(_settings(request).operator_keys or "")
    return {op.name: (digest, op) for digest, op in known.items()}


def _session_key(value: str) -> str:
    return SESSION_KEY + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


async def start_session(request: Request, digest: str, op: Operator, *, seconds: int = SESSION_SECONDS) -> str:
    """A new page session for the operator whose configured key hash is `digest`: its
    cookie value (a random id; Redis keeps what it stands for)."""
    value = secrets.token_urlsafe(32)
    expires = int(time.time()) + seconds
    redis = request.app.state.runtime.redis
    await redis.hset(_session_key(value), mapping={"name": op.name, "role": op.role.value, "digest": digest,
                                                   "expires": str(expires)})
    await redis.expire(_session_key(value), max(seconds, 1))
    return value


@dataclass(frozen=True)
class Session:
    operator: Operator
    expires: int
    value: str


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw or "")


async def read_session(request: Request, value: str | None) -> Session | None:
    """The session the cookie holds, if Redis knows it, it is current, and its operator
    still has that key and that role; else None. Without Redis to ask: None."""
    if not value or len(value) > 100:
        return None
    try:
        stored = await request.app.state.runtime.redis.hgetall(_session_key(value))
    except (RedisError, OSError) as e:
        log.warning("operator session not checked (%s): refused", type(e).__name__)
        return None
    fields = {_text(k): _text(v) for k, v in stored.items()}
    if not fields or not fields.get("expires", "").isdigit() or int(fields["expires"]) <= time.time():
        return None
    found = _by_name(request).get(fields.get("name", ""))
    if found is None:
        return None
    digest, op = found
    if op.role.value != fields.get("role") or not hmac.compare_digest(digest, fields.get("digest", "")):
        return None
    return Session(op, int(fields["expires"]), value)


async def end_session(request: Request, value: str) -> None:
    await request.app.state.runtime.redis.delete(_session_key(value))


async def current_session(request: Request) -> Session | None:
    return await read_session(request, request.cookies.get(COOKIE))


def to_signin(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{SIGNIN}?next={quote(target, safe='/')}", status_code=303)


async def operator_for(request: Request, *roles: Role) -> Operator | RedirectResponse:
    """The signed-in operator holding one of `roles` (any role when none is given), named on
    the request for the audit log; a redirect to sign in when there is no session; a 403
    page (audited) for an operator of another role."""
    session = await current_session(request)
    if session is None:
        return to_signin(request)
    op = session.operator
    audit_as(request, op)
    if roles and op.role not in roles:
        _ = gettext_for(language_of(request))
        raise PageProblem(403, _("Your operator role may not open this page."), title=_("Not allowed"))
    return op


def page_context(op: Operator) -> dict[str, Any]:
    """What every operator page shows in its header."""
    return {"operator": op, "services": SERVICES}


# --- dead letters ------------------------------------------------------------------------------


def _when(at: float) -> datetime | None:
    return datetime.fromtimestamp(at, UTC) if at else None


def letter_summary(d: dict[str, str]) -> dict[str, Any]:
    """What a page shows of a dead letter: where and why it failed, and the event's
    envelope (ids, type, source, time); never the event's data."""
    view = letter_view(d)
    event = view.pop("event")
    envelope: dict[str, str] = {}
    if isinstance(event, dict):
        envelope = {k: str(event[k])[:200] for k in ("id", "type", "source", "subject", "time")
                    if isinstance(event.get(k), str | int | float)}
    view["envelope"] = envelope
    view["parses"] = isinstance(event, dict)
    view["when"] = _when(view["at"])
    view["error"] = (view["error"] or "")[:2000]
    return view


def operator_pages(service: str) -> APIRouter:
    """The operator pages every service serves: sign in and out under /operator/, and its
    dead letters under /operator/{service}/dead-letters."""
    router = APIRouter(include_in_schema=False)
    base = f"/operator/{service}/dead-letters"

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        response: HTMLResponse = request.app.state.pages.render(request, name, context, status=status)
        return response

    # --- sign in / out ---------------------------------------------------------------------

    @router.get(SIGNIN)
    async def signin_form(request: Request, next: str = HOME, signed_out: str = "") -> HTMLResponse:
        session = await current_session(request)
        return render(request, "operator_signin.html", {
            "next": safe_next(next), "error": None, "signed_out": signed_out == "1",
            "operator": session.operator if session else None})

    @router.post(SIGNIN)
    async def signin(request: Request) -> Response:
        _ = gettext_for(language_of(request))
        form = await form_of(request)
        target = safe_next(form.get("next") or HOME)
        key = (form.get("key") or "").strip()
        known = parse_operator_keys(_settings(request).operator_keys or "")
        op = known.get(key_digest(key)) if key and len(key) <= MAX_KEY_CHARS else None
        if op is None:
            # 401: the boundary counts it against this address, as a wrong key on the API.
            error = _("Enter your operator key.") if not key else _("This operator key is not known.")
            return render(request, "operator_signin.html", {"next": target, "error": error, "operator": None},
                          status=401)
        audit_as(request, op)
        response = RedirectResponse(target if target != "/" else HOME, status_code=303)
        response.set_cookie(COOKIE, await start_session(request, key_digest(key), op), max_age=SESSION_SECONDS,
                            httponly=True, samesite="strict", secure=is_https(request), path="/")
        return response

    @router.post(SIGNOUT)
    async def signout(request: Request) -> Response:
        await form_of(request)
        session = await current_session(request)
        if session is not None:
            audit_as(request, session.operator)
            await end_session(request, session.value)
        response = RedirectResponse(f"{SIGNIN}?signed_out=1", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=is_https(request))
        return response

    # --- dead letters ----------------------------------------------------------------------

    def _redis(request: Request) -> Any:
        return request.app.state.runtime.redis

    async def _letter(request: Request, dead_id: str) -> dict[str, str]:
        _ = gettext_for(language_of(request))
        if not is_dead_letter_id(dead_id):
            raise PageProblem(404, _("There is no such dead letter (replayed or discarded already?)."),
                              title=_("Not found"))
        try:
            return await find_dead_letter(_redis(request), dead_id, service)
        except KeyError:
            raise PageProblem(404, _("There is no such dead letter (replayed or discarded already?)."),
                              title=_("Not found")) from None

    @router.get(base)
    async def list_letters(request: Request, done: str = "", id: str = "") -> Response:
        op = await operator_for(request, Role.operations)
        if isinstance(op, Response):
            return op
        rows = await dead_letters(_redis(request), service, LISTED)  # oldest first: the order they failed in
        items = [letter_summary({**d, "dead_letter_group": service}) for d in rows]
        total = int(await _redis(request).xlen(dead_letter_stream(service)))
        return render(request, "operator_dead_letters.html", {
            **page_context(op), "service": service, "items": items, "base": base, "total": total,
            "done": done if done in ("replayed", "discarded") else "",
            "done_id": id if is_dead_letter_id(id) else "",
        })

    @router.get(base + "/{dead_id}")
    async def show_letter(request: Request, dead_id: str) -> Response:
        op = await operator_for(request, Role.operations)
        if isinstance(op, Response):
            return op
        letter = letter_summary(await _letter(request, dead_id))
        return render(request, "operator_dead_letter.html", {**page_context(op), "service": service,
                                                             "letter": letter, "base": base})

    @router.post(base + "/{dead_id}/replay")
    async def replay(request: Request, dead_id: str) -> Response:
        op = await operator_for(request, Role.operations)
        if isinstance(op, Response):
            return op
        await form_of(request)
        _ = gettext_for(language_of(request))
        await _letter(request, dead_id)
        try:
            await replay_as_it_was(_redis(request), dead_id, service)
        except KeyError:
            raise PageProblem(404, _("There is no such dead letter (replayed or discarded already?)."),
                              title=_("Not found")) from None
        except BadEvent:
            raise PageProblem(422, _("Its event does not parse: replayed, it would only fail again. "
                                     "Discard it instead."), title=_("Not replayed")) from None
        return RedirectResponse(f"{base}?done=replayed&id={dead_id}", status_code=303)

    @router.post(base + "/{dead_id}/discard")
    async def discard(request: Request, dead_id: str) -> Response:
        op = await operator_for(request, Role.operations)
        if isinstance(op, Response):
            return op
        await form_of(request)
        _ = gettext_for(language_of(request))
        await _letter(request, dead_id)
        try:
            await discard_dead_letter(_redis(request), service, dead_id)
        except KeyError:
            raise PageProblem(404, _("There is no such dead letter (replayed or discarded already?)."),
                              title=_("Not found")) from None
        return RedirectResponse(f"{base}?done=discarded&id={dead_id}", status_code=303)

    return router

