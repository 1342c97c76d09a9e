"""Issue 8, finding 4: no operator role reads personal data or acts as a receiver. With a
referral accepted and its personal data readable by its receiver, every route of every
service (from its OpenAPI) is called with every role's key: none answers with the person's
details, an operator key opens neither the inbox nor the personal-data route, and each call
is in the service's audit log (three service processes, real Redis and SMTP)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
import redis

from devtools.mailcatcher import MailCatcher
from shared.operators import Role
from shared.streams.topology import SUBMITTED
from tests.apps import AUDIT_KEY, ROLE_KEYS
from tests.e2e.conftest import StackFactory
from tests.e2e.test_closed_loop import Loop

pytestmark = pytest.mark.e2e

# What the referral holds that no operator may ever see. ("SN", the initials, is left out:
# it can occur in any ULID.)
PERSONAL = ("Siti", "Nurhaliza", "812 3456", "3456 7890", "siti@example.org", "Mengalami kekerasan",
            "rumah tangga sejak 2024", '"initials"', '"narrative"')


def personal_in(text: str) -> list[str]:
    return [p for p in PERSONAL if p in text]


def operations(base: str) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(method, path template, parameters) of every route in the service's OpenAPI."""
    spec = httpx.get(f"{base}/openapi.json").json()
    return [(method.upper(), path, op.get("parameters", []))
            for path, item in spec["paths"].items() for method, op in item.items()
            if method in ("get", "post", "put", "patch", "delete")]


def test_no_role_reads_personal_data_or_acts_as_a_receiver(
    stack_factory: StackFactory, smtp_server: MailCatcher
) -> None:
    smtp_server.clear()
    # Many calls refused on purpose: no limit on failed authentication here (tested elsewhere).
    stack = stack_factory(smtp_url=smtp_server.url, AUTH_FAILURES_PER_MINUTE="0")
    loop = Loop(stack, smtp_server)
    rid = loop.refer("PPA-MDN-OPS-1", client={"consent": {"share_with_provider": True, "contact_by_provider": True}})
    loop.wait_status(rid, "proposed")
    _, proposal, session = loop.proposal_mail(rid, "unit.ppa@polrestabes-medan.example")
    assert loop.respond(session, proposal, response="accepted").status_code == 202
    loop.wait_status(rid, "accepted")
    offer = httpx.get(f"{loop.notify}/v1/inbox/{proposal}", headers=loop.auth(session)).json()["personal_data"]
    # The receiver reads it: the details are there to be leaked, had an operator a way.
    assert personal_in(httpx.get(offer["url"], headers={"Authorization": offer["authorization"]}).text)
    # A dead letter on every service's operator routes.
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    r.xadd(SUBMITTED, {"type": "rujukan.referral.submitted", "event": '{"id": '})
    dead_id = ""
    ops = {"Authorization": f"Bearer {ROLE_KEYS[Role.operations]}"}
    for _ in range(100):
        letters = httpx.get(f"{loop.matching}/v1/ops/dead-letters", headers=ops).json()["items"]
        if letters:
            dead_id = letters[0]["id"]
            break
        time.sleep(0.1)
    assert dead_id
    receiver_id = loop.receiver_of("svc-ppa-polrestabes-medan")
    ids = {"referral_id": rid, "proposal_id": proposal, "receiver_id": receiver_id, "dead_id": dead_id,
           "service_id": "svc-ppa-polrestabes-medan", "agency_id": "demo"}

    bases = {"intake": loop.intake, "matching": loop.matching, "notify": loop.notify}
    calls = 0
    # Reading first, then what changes something (so that a revoke does not hide a later read).
    for mutating in (False, True):
        for service, base in bases.items():
            for method, template, parameters in operations(base):
                if (method != "GET") != mutating:
                    continue
                path = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "x"), template)
                query = {p["name"]: ids.get(p["name"], "x") for p in parameters
                         if p.get("in") == "query" and p.get("required")}
                for role, key in ROLE_KEYS.items():
                    res = httpx.request(method, f"{base}{path}", params=query,
                                        json={} if method in ("POST", "PUT", "PATCH") else None,
                                        headers={"Authorization": f"Bearer {key}"})
                    calls += 1
                    assert res.status_code < 500, (service, method, path, role, res.text)
                    assert not personal_in(res.text), (service, method, path, role, personal_in(res.text))
                    assert not personal_in(json.dumps(dict(res.headers))), (service, method, path, role)
                    # Nor a receiver's credential (a system token, a session) to act as one.
                    assert "rjk_" not in res.text, (service, method, path, role)
                    assert "rjs_" not in res.text, (service, method, path, role)
    assert calls > 100

    # No operator key is a receiver's credential, nor a grant for personal data.
    for key in ROLE_KEYS.values():
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{loop.notify}/v1/inbox", headers=auth).status_code == 401
        assert httpx.get(f"{loop.notify}/v1/inbox/{proposal}", headers=auth).status_code == 401
        r2 = httpx.post(f"{loop.notify}/v1/inbox/{proposal}/responses", json={"response": "in_progress"}, headers=auth)
        assert r2.status_code == 401
        assert httpx.get(f"{loop.intake}/v1/receivers/referrals/{rid}", headers=auth).status_code == 401

    # Every one of those calls made by a known operator is in its service's audit log.
    auditor = {"Authorization": f"Bearer {AUDIT_KEY}"}
    for service, base in bases.items():
        entries = httpx.get(f"{base}/v1/ops/audit", params={"limit": 1000}, headers=auditor).json()["items"]
        assert entries, service
        assert {e["role"] for e in entries} == {r.value for r in Role}, service
        assert not personal_in(json.dumps(entries)), service
