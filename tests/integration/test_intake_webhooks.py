"""Agencies told at once, against real Redis, a real database and a real HTTP receiver of
the test's own on 127.0.0.1 (development mode allows a loopback receiver): every timeline
step is POSTed signed per Standard Webhooks 1.0, retried with the same webhook-id, and
enqueued with the step so that nothing is lost; URLs that would reach into the network are
refused; secrets rotate with an overlap; another agency sees nothing; polling misses nothing."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import func, select, text
from standardwebhooks import Webhook, WebhookVerificationError

from intake.adapters.crypto import FieldCipher
from intake.adapters.orm import Referral, TimelineEntry, WebhookDelivery
from intake.adapters.webhook_http import UnsafeUrl, address_problem, check_url, guarded_client
from intake.bootstrap import DEMO_STAFF_EMAIL, create_app
from intake.service_layer.webhooks import WebhookSender, backoff, reseal_secrets, secrets_by_key
from intake.settings import Settings
from shared.db import make_engine, sessions
from shared.events import new_id, utcnow
from shared.streams.topology import publish
from tests.apps import TEST_KEYS, eventually, running
from tests.integration.test_intake import AUTH, body, matched
from tests.integration.test_intake import settings as base_settings
from tests.integration.test_intake_closed_loop import changed

PERSONAL = ("Siti", "3456", "s@example.org", "cerita")


class Receiver:
    """An HTTP receiver on 127.0.0.1: answers each POST with the next scripted status (the
    last one from then on) and keeps what it got."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [200])
        self.got: list[tuple[dict[str, str], str, int]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                data = self.rfile.read(length).decode()
                with outer.lock:
                    code = outer.statuses.pop(0) if len(outer.statuses) > 1 else outer.statuses[0]
                    outer.got.append(({k.lower(): v for k, v in self.headers.items()}, data, code))
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, *statuses: int) -> None:
        with self.lock:
            self.statuses = list(statuses)

    def ok(self) -> list[tuple[dict[str, str], str, int]]:
        with self.lock:
            return [g for g in self.got if 200 <= g[2] < 300]

    async def taken(self, n: int = 1, timeout: float = 15.0) -> list[tuple[dict[str, str], str, int]]:
        """Once at least `n` calls were answered 2xx: those calls."""

        async def enough() -> list[tuple[dict[str, str], str, int]]:
            return got if len(got := self.ok()) >= n else []

        found: list[tuple[dict[str, str], str, int]] = await eventually(enough, timeout=timeout)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def settings(database_url: str, redis_url: str, **over: Any) -> Settings:
    return base_settings(database_url, redis_url).model_copy(update={
        "rujukan_env": "development", "webhook_poll_interval_s": 0.05, "webhook_backoff_base_s": 0.05,
        "webhook_backoff_max_s": 0.2, "webhook_lease_s": 5.0, "poll_settle_s": 0.0, **over})


async def register(client: Any, url: str, headers: dict[str, str] = AUTH) -> dict[str, Any]:
    r = await client.post("/v1/webhooks", json={"url": url}, headers=headers)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    assert created["secret"].startswith("whsec_")
    return created


async def submitted(client: Any, ref: str = "PPA-WH-1") -> str:
    r = await client.post("/v1/referrals", json=body(ref), headers=AUTH)
    assert r.status_code == 202, r.text
    rid: str = r.json()["id"]
    return rid


async def test_each_step_is_signed_and_retried_until_taken_once_with_the_same_id(
    database_url: str, redis_url: str, redis: Any, receiver: Receiver
) -> None:
    receiver.answer(500, 500, 500, 200)
    async with running(create_app(settings(database_url, redis_url))) as client:
        hook = await register(client, receiver.url)
        listed = (await client.get("/v1/webhooks", headers=AUTH)).json()["items"]
        assert [e["id"] for e in listed] == [hook["id"]]
        assert "secret" not in listed[0]
        assert listed[0]["status"] == "active"
        rid = await submitted(client)
        await publish(redis, [matched(rid)])

        await receiver.taken(1, timeout=20)
        assert [code for _, _, code in receiver.got] == [500, 500, 500, 200]
        ids = {h["webhook-id"] for h, _, _ in receiver.got}
        assert len(ids) == 1  # one delivery, the same id on every attempt
        wh = Webhook(hook["secret"])
        for headers, data, _ in receiver.got:
            payload = wh.verify(data, headers)
            assert payload["type"] == "referral.proposed"
            assert payload["data"]["referral_id"] == rid
            assert payload["data"]["external_ref"] == "PPA-WH-1"
            assert payload["data"]["status"] == "proposed"
            assert payload["data"]["decision_id"] == "D1"
            for secret in PERSONAL:
                assert secret not in data
        with pytest.raises(WebhookVerificationError):  # another secret does not verify it
            Webhook("whsec_" + "A" * 43 + "=").verify(receiver.got[-1][1], receiver.got[-1][0])
        tampered = receiver.got[-1][1].replace("proposed", "accepted")
        with pytest.raises(WebhookVerificationError):
            wh.verify(tampered, receiver.got[-1][0])

        # The agency sees the delivery's attempts.
        async def delivered() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = (await client.get(
                f"/v1/webhooks/{hook['id']}/deliveries", headers=AUTH)).json()["items"]
            return items if items and items[0]["status"] == "delivered" else []

        (delivery,) = await eventually(delivered)
        assert delivery["id"] == ids.pop()
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 500, 200]
        assert delivery["attempts"][0]["error"] == "HTTP 500"
        assert delivery["attempts"][-1]["error"] == ""
        assert delivery["next_attempt_at"] is None

        # The next steps: a decline with its reason code, the agency's cancel with its own.
        await publish(redis, [changed(rid, "declined", reason_code="outside_mandate")])
        await receiver.taken(2)
        r = await client.post(f"/v1/referrals/{rid}/cancel", json={"reason_code": "duplicate"}, headers=AUTH)
        assert r.status_code == 200
        await receiver.taken(3)
        bodies = [json.loads(d) for _, d, _ in receiver.ok()]
        assert [(b["type"], b["data"].get("reason_code")) for b in bodies] == [
            ("referral.proposed", None), ("referral.declined", "outside_mandate"),
            ("referral.cancelled", "duplicate")]
        assert bodies[2]["data"]["status"] == "cancelled"
        assert len({h["webhook-id"] for h, _, _ in receiver.ok()}) == 3

        # A redelivery, asked for: the same id again.
        first = delivery["id"]
        r = await client.post(f"/v1/webhooks/{hook['id']}/deliveries/{first}/redeliver", headers=AUTH)
        assert r.status_code == 202, r.text
        await receiver.taken(4)
        assert receiver.ok()[-1][0]["webhook-id"] == first
        r = await client.post(f"/v1/webhooks/{hook['id']}/deliveries/msg_nope/redeliver", headers=AUTH)
        assert r.status_code == 404

        # Removed: nothing more is sent to it.
        assert (await client.delete(f"/v1/webhooks/{hook['id']}", headers=AUTH)).status_code == 204
        assert (await client.get("/v1/webhooks", headers=AUTH)).json()["items"] == []
        rid2 = await submitted(client, "PPA-WH-2")
        await publish(redis, [matched(rid2)])
        await asyncio.sleep(0.5)
        assert len(receiver.got) == 7


async def test_urls_that_reach_inside_are_refused_when_registered_and_when_called(
    database_url: str, redis_url: str, redis: Any, receiver: Receiver
) -> None:
    app = create_app(settings(database_url, redis_url))
    async with running(app) as client:
        for url, why in [("ftp://example.org/x", "http and https"), ("http://169.254.169.254/latest", "link-local"),
                         ("https://user:pw@example.org/", "user name"), ("https://[ff02::1]/", "multicast"),
                         ("http://0.0.0.0:9/", "unspecified"), ("not a url", "http and https")]:
            r = await client.post("/v1/webhooks", json={"url": url}, headers=AUTH)
            assert r.status_code == 422, (url, r.text)
            assert r.json()["errors"][0]["field"] == "url"
            assert why in r.json()["errors"][0]["reason"], r.json()
        assert (await client.post("/v1/webhooks", json={}, headers=AUTH)).json()["errors"][0]["field"] == "url"
        assert (await client.post("/v1/webhooks", json={"url": receiver.url})).status_code == 401

        # Registered in development, then called with production's rule: refused when called.
        hook = await register(client, receiver.url)
        app.state.webhooks.allow_private = False
        sender: WebhookSender = app.state.webhook_sender
        sender.settings.allow_private = False
        for url in ("http://127.0.0.1:8080/", "https://127.0.0.1/", "https://10.1.2.3/", "https://192.168.1.1/",
                    "https://[::1]/", "https://[fd00::1]/", "https://[::ffff:127.0.0.1]/", "https://localhost/",
                    "https://100.64.0.1/"):
            r = await client.post("/v1/webhooks", json={"url": url}, headers=AUTH)
            assert r.status_code == 422, (url, r.text)
            assert r.json()["errors"][0]["field"] == "url"
        rid = await submitted(client)
        await publish(redis, [matched(rid)])

        async def refused() -> list[dict[str, Any]]:
            items = (await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=AUTH)).json()["items"]
            return items if items and items[0]["attempts"] else []

        (delivery,) = await eventually(refused, timeout=15)
        assert delivery["attempts"][0]["error"].startswith("refused: "), delivery
        assert "https" in delivery["attempts"][0]["error"]
        assert delivery["status"] == "pending"
        assert delivery["next_attempt_at"] is not None
        assert receiver.got == []


async def test_address_rules() -> None:
    import ipaddress

    for bad in ("127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254", "::1", "fd00::1",
                "fe80::1", "224.0.0.1", "0.0.0.0", "::", "100.64.0.1", "::ffff:10.0.0.1"):
        assert address_problem(ipaddress.ip_address(bad), allow_private=False) is not None, bad
    for dev_ok in ("127.0.0.1", "10.0.0.1", "::1", "fd00::1"):
        assert address_problem(ipaddress.ip_address(dev_ok), allow_private=True) is None, dev_ok
    for never in ("169.254.169.254", "fe80::1", "224.0.0.1", "0.0.0.0"):
        assert address_problem(ipaddress.ip_address(never), allow_private=True) is not None, never
    assert address_problem(ipaddress.ip_address("93.184.216.34"), allow_private=False) is None
    with pytest.raises(UnsafeUrl, match="https"):
        await check_url("http://93.184.216.34/", allow_private=False)
    await check_url("https://93.184.216.34/hook", allow_private=False)


async def test_the_client_checks_the_address_it_connects_to(receiver: Receiver) -> None:
    """Past the URL's check, the connection itself is refused to an address not allowed
    (a name that resolved elsewhere a moment before: DNS rebinding), and redirects stay put."""
    import httpx

    async with guarded_client(allow_private=False, timeout_s=5, concurrency=1) as client:
        with pytest.raises(httpx.ConnectError, match="loopback"):
            await client.post(receiver.url, content=b"{}")
        with pytest.raises(httpx.ConnectError, match="loopback"):
            await client.post(receiver.url.replace("127.0.0.1", "localhost"), content=b"{}")
    assert receiver.got == []
    receiver.answer(307)
    async with guarded_client(allow_private=True, timeout_s=5, concurrency=1) as client:
        r = await client.post(receiver.url, content=b"{}")
        assert r.status_code == 307
        assert len(receiver.got) == 1
    # Backoff: doubling, capped, with jitter between half and all of it.
    for n, full in ((1, 10.0), (2, 20.0), (3, 40.0), (30, 3600.0)):
        for _ in range(20):
            assert full / 2 <= backoff(n, 10.0, 3600.0) <= full


async def test_a_rotated_secret_signs_next_to_the_old_one_during_the_overlap(
    database_url: str, redis_url: str, redis: Any, receiver: Receiver
) -> None:
    app = create_app(settings(database_url, redis_url))
    async with running(app) as client:
        hook = await register(client, receiver.url)
        r = await client.post(f"/v1/webhooks/{hook['id']}/rotate", headers=AUTH)
        assert r.status_code == 200, r.text
        rotated = r.json()
        assert rotated["secret"] != hook["secret"]
        assert rotated["previous_secret_until"] is not None
        rid = await submitted(client)
        await publish(redis, [matched(rid)])
        (headers, data, _), = await receiver.taken(1)
        assert len(headers["webhook-signature"].split(" ")) == 2
        Webhook(hook["secret"]).verify(data, headers)
        Webhook(rotated["secret"]).verify(data, headers)

        # Once the overlap is over, only the new secret signs.
        app.state.webhooks.overlap_hours = 0
        again = (await client.post(f"/v1/webhooks/{hook['id']}/rotate", headers=AUTH)).json()
        await publish(redis, [changed(rid, "accepted")])
        await receiver.taken(2)
        headers, data, _ = receiver.ok()[-1]
        assert len(headers["webhook-signature"].split(" ")) == 1
        Webhook(again["secret"]).verify(data, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(rotated["secret"]).verify(data, headers)


async def test_another_agency_can_neither_see_nor_touch_an_endpoint(
    database_url: str, redis_url: str, redis: Any, receiver: Receiver
) -> None:
    app = create_app(settings(database_url, redis_url))
    async with running(app) as client:
        hook = await register(client, receiver.url)
        await app.state.intake.ensure_agency("other", "Dinas Lain", "other-key")
        other = {"Authorization": "Bearer other-key"}
        assert (await client.get("/v1/webhooks", headers=other)).json()["items"] == []
        eid = hook["id"]
        for method, path in (("DELETE", f"/v1/webhooks/{eid}"), ("POST", f"/v1/webhooks/{eid}/rotate"),
                             ("GET", f"/v1/webhooks/{eid}/deliveries"),
                             ("POST", f"/v1/webhooks/{eid}/deliveries/msg_x/redeliver")):
            r = await client.request(method, path, headers=other)
            assert r.status_code == 404, (method, path, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        # The other agency's own endpoint gets its own referrals' steps only.
        mine = await register(client, receiver.url + "?mine", headers=other)
        rid = await submitted(client)
        await publish(redis, [matched(rid)])
        await receiver.taken(1)
        await asyncio.sleep(0.3)
        assert len(receiver.ok()) == 1
        assert (await client.get(f"/v1/webhooks/{mine['id']}/deliveries", headers=other)).json()["items"] == []
        assert len((await client.get("/v1/webhooks", headers=AUTH)).json()["items"]) == 1


async def test_a_crash_between_the_step_and_its_send_loses_nothing(
    database_url: str, redis_url: str, redis: Any, receiver: Receiver
) -> None:
    app = create_app(settings(database_url, redis_url))
    async with running(app) as client:
        hook = await register(client, receiver.url)
        app.state.webhook_sender.stop()  # this replica dies before it sends
        await asyncio.sleep(0.2)
        rid = await submitted(client)
        await publish(redis, [matched(rid)])

        async def on_timeline() -> bool:
            view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
            return view["status"] == "proposed"

        await eventually(on_timeline)
        await asyncio.sleep(0.3)
        assert receiver.got == []

    engine = make_engine(database_url)
    try:
        async with sessions(engine)() as s:  # committed with the step
            rows = list((await s.scalars(select(WebhookDelivery))).all())
        assert [(r.status, r.referral_id, r.event_type) for r in rows] == [("pending", rid, "referral.proposed")]
    finally:
        await engine.dispose()

    async with running(create_app(settings(database_url, redis_url))):  # a new replica sends it
        (headers, data, _), = await receiver.taken(1, timeout=15)
        assert headers["webhook-id"] == rows[0].id
        assert Webhook(hook["secret"]).verify(data, headers)["data"]["referral_id"] == rid


async def test_a_step_rolled_back_enqueues_nothing(database_url: str, redis_url: str, receiver: Receiver) -> None:
    app = create_app(settings(database_url, redis_url))
    async with running(app) as client:
        await register(client, receiver.url)
        rid = await submitted(client)
        maker = app.state.intake.sessions

        async def step_then_crash() -> None:
            async with maker() as s, s.begin():
                s.add(TimelineEntry(referral_id=rid, event_id=new_id(), at=utcnow(), kind="accepted",
                                    status="accepted", actor="test"))
                await s.flush()
                assert await s.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
                raise RuntimeError("crash before commit")

        with pytest.raises(RuntimeError):
            await step_then_crash()
        async with maker() as s:
            assert await s.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


async def test_an_endpoint_that_keeps_failing_is_marked_and_its_agency_and_operators_are_told(
    database_url: str, redis_url: str, redis: Any, receiver: Receiver, mailbox: Any
) -> None:
    receiver.answer(503)
    app = create_app(settings(database_url, redis_url, smtp_url=mailbox.url, webhook_give_up_hours=1.5 / 3600,
                              operator_alert_emails="ops@rujukan.example"))
    async with running(app) as client:
        hook = await register(client, receiver.url)
        rid = await submitted(client)
        await publish(redis, [matched(rid)])

        async def failing() -> dict[str, Any] | None:
            (ep,) = (await client.get("/v1/webhooks", headers=AUTH)).json()["items"]
            return ep if ep["status"] == "failing" else None

        ep = await eventually(failing, timeout=20)
        assert ep["failing_since"] is not None
        for to in (DEMO_STAFF_EMAIL, "ops@rujukan.example"):
            mail = await mailbox.wait_for_async(lambda m, to=to: m["To"] == to)
            text = mail.get_body(preferencelist=("plain",)).get_content()
            assert hook["id"] in text
            assert "127.0.0.1" in text
            assert "/hook" not in text
            for secret in PERSONAL:
                assert secret not in text
        (delivery,) = (await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=AUTH)).json()["items"]
        assert delivery["status"] == "failed"
        assert len(delivery["attempts"]) >= 2
        assert delivery["next_attempt_at"] is None
        assert {a["status_code"] for a in delivery["attempts"]} == {503}

        # The receiver is back; a redelivery goes through and the endpoint is active again.
        receiver.answer(204)
        r = await client.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver", headers=AUTH)
        assert r.status_code == 202
        assert r.json()["status"] == "pending"
        await receiver.taken(1)

        async def active() -> bool:
            (ep,) = (await client.get("/v1/webhooks", headers=AUTH)).json()["items"]
            return bool(ep["status"] == "active")

        await eventually(active)


async def test_polling_with_a_cursor_misses_nothing_across_pages(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        rids = [await submitted(client, f"PPA-POLL-{i}") for i in range(5)]

        async def poll_all(params: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
            seen: list[dict[str, Any]] = []
            while True:
                r = await client.get("/v1/referrals", params={**params, "limit": 2}, headers=AUTH)
                assert r.status_code == 200, r.text
                page = r.json()
                seen += page["items"]
                params = {"cursor": page["next_cursor"]}
                if not page["has_more"]:
                    return seen, page["next_cursor"]

        seen, cursor = await poll_all({"updated_since": since})
        assert [i["id"] for i in seen] == rids  # in the order they changed, each once
        # Nothing new: the same cursor comes back, and an empty page.
        r = (await client.get("/v1/referrals", params={"cursor": cursor}, headers=AUTH)).json()
        assert r["items"] == []
        assert r["next_cursor"] == cursor
        assert r["has_more"] is False

        # Two of them move on: the next polls answer exactly those, in that order.
        await publish(redis, [matched(rids[3])])
        await eventually(lambda: _status(client, rids[3], "proposed"))
        await publish(redis, [matched(rids[1])])
        await eventually(lambda: _status(client, rids[1], "proposed"))
        seen, cursor = await poll_all({"cursor": cursor})
        assert [(i["id"], i["status"]) for i in seen] == [(rids[3], "proposed"), (rids[1], "proposed")]
        # A step that moves no status (the hold ran out) is a change the poll answers too.
        await publish(redis, [changed(rids[3], "hold_expired", actor="matching")])

        async def expiry_polled() -> list[dict[str, Any]]:
            return (await poll_all({"cursor": cursor}))[0]

        (moved,) = await eventually(expiry_polled)
        assert moved["id"] == rids[3]
        cursor = (await poll_all({"cursor": cursor}))[1]

        # Filters, and the list as before.
        r = (await client.get("/v1/referrals", params={"updated_since": since, "status": "proposed"},
                              headers=AUTH)).json()
        assert {i["id"] for i in r["items"]} == {rids[1], rids[3]}
        r = (await client.get("/v1/referrals", params={"external_ref": "PPA-POLL-2"}, headers=AUTH)).json()
        assert [i["id"] for i in r["items"]] == [rids[2]]
        assert "next_cursor" not in r  # the list as it always was
        r = (await client.get("/v1/referrals", headers=AUTH)).json()
        assert [i["id"] for i in r["items"]] == rids[::-1]
        assert r["offset"] == 0
        r = await client.get("/v1/referrals", params={"cursor": "bm90IGEgY3Vyc29y"}, headers=AUTH)
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "cursor"
        r = await client.get("/v1/referrals", params={"updated_since": "yesterday"}, headers=AUTH)
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "updated_since"


async def _status(client: Any, rid: str, status: str) -> bool:
    return bool((await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()["status"] == status)


async def test_polling_waits_for_changes_to_settle(database_url: str, redis_url: str) -> None:
    async with running(create_app(settings(database_url, redis_url, poll_settle_s=30.0))) as client:
        since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        await submitted(client)
        r = (await client.get("/v1/referrals", params={"updated_since": since}, headers=AUTH)).json()
        assert r["items"] == []  # too fresh: answered once it is older than POLL_SETTLE_S
        engine = make_engine(database_url)
        try:
            async with sessions(engine)() as s, s.begin():
                row = await s.scalar(select(Referral))
                assert row is not None
                row.updated_at = utcnow() - timedelta(seconds=31)
        finally:
            await engine.dispose()
        r = (await client.get("/v1/referrals", params={"updated_since": since}, headers=AUTH)).json()
        assert len(r["items"]) == 1


async def test_two_replicas_send_each_delivery_once(
    database_url: str, redis_url: str, redis: Any, receiver: Receiver
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("replicas share PostgreSQL (SQLite has one writer)")
    first = create_app(settings(database_url, redis_url, webhook_batch=2, webhook_concurrency=2))
    async with running(first) as client:
        await register(client, receiver.url)
        await register(client, receiver.url + "?second")
        first.state.webhook_sender.stop()  # let the steps pile up, then both replicas race for them
        await asyncio.sleep(0.2)
        rids = [await submitted(client, f"PPA-REP-{i}") for i in range(6)]
        await publish(redis, [matched(rid) for rid in rids])
        for rid in rids:
            await eventually(lambda rid=rid: _status(client, rid, "proposed"))
    replicas = [create_app(settings(database_url, redis_url, webhook_batch=2, webhook_concurrency=2))
                for _ in range(2)]
    async with running(replicas[0]), running(replicas[1]):
        got = await receiver.taken(12, timeout=30)
        await asyncio.sleep(0.5)
        assert len(receiver.ok()) == 12
        assert len({h["webhook-id"] for h, _, _ in got}) == 12


async def test_secrets_are_sealed_at_rest_and_follow_a_key_rotation(
    database_url: str, redis_url: str, redis: Any, receiver: Receiver
) -> None:
    old_keys = TEST_KEYS
    async with running(create_app(settings(database_url, redis_url))) as client:
        hook = await register(client, receiver.url)
        await client.post(f"/v1/webhooks/{hook['id']}/rotate", headers=AUTH)
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT secret_enc, previous_secret_enc FROM webhook_endpoint"))).one()
        assert row[1].startswith("v1:test1:")  # sealed, not the secret itself
        assert hook["secret"] not in json.dumps(list(row))
        new_keys = FieldCipher.generate("test2") + "," + old_keys
        cipher = FieldCipher(new_keys)
        assert await reseal_secrets(sessions(engine), cipher) == 1
        assert await secrets_by_key(sessions(engine)) == {"test2": 2}
    finally:
        await engine.dispose()
    # Only the new key configured: the endpoint still signs (with both secrets, in the overlap).
    only_new = new_keys.split(",")[0]
    async with running(create_app(settings(database_url, redis_url, encryption_keys=only_new))) as client:
        rid = await submitted(client)
        await publish(redis, [matched(rid)])
        (headers, data, _), = await receiver.taken(1)
        Webhook(hook["secret"]).verify(data, headers)
