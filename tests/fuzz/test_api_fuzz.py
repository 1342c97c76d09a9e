"""The API fuzzer (issue 8, "Proof"): schemathesis against every service's OpenAPI.

The three services run in this process as they run in production, each behind a real
uvicorn server with its real lifespan (migrations, streams, consumers, relays), on the
session's real Redis (so that what one service publishes reaches the others) and SQLite,
then PostgreSQL (FUZZ_DATABASE=sqlite or postgres runs one). Every operation gets valid
credentials for its role (an agency key; a receiver's grant and token; the operator of its
role) and a bounded number of generated requests, valid and invalid (deterministic:
derandomised, no example database), then requests about things that exist (a referral, a
service, a proposal), then a NUL in each string of a request that was accepted. Each
response must be no server error, and conform to the OpenAPI: a documented status code and
content type, and a body and headers matching the documented schema. Failures are
collected per operation and reported together, each with a curl command that reproduces it.

FUZZ_EXAMPLES sets the examples per operation and generation mode (default 25).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import redis
import requests
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text

from devtools.mailcatcher import MailCatcher
from devtools.redis_server import free_port
from shared.db import make_engine
from shared.events import Envelope, Recipient, ReferralMatched, utcnow
from shared.grants import sign
from shared.operators import Role
from shared.streams.topology import connect, publish
from shared.vocab import Urgency
from tests.apps import AGENCY_PEPPER, DEMO_KEY, GRANT_SECRET, OPERATOR_KEYS, ROLE_KEYS, TEST_KEYS
from tests.integration.test_directory_api import SEED
from tests.unit.test_referral_request import VALID

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(900)]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


# ------------------------------------------------------------------------------------------
# The services, each behind a uvicorn server in a thread of its own
# ------------------------------------------------------------------------------------------


class Served:
    """An app behind uvicorn on 127.0.0.1, in a thread with its own event loop."""

    def __init__(self, app: FastAPI, database_url: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="on",
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, name=f"fuzz-{self.port}", daemon=True)

    def start(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 90
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the app on port {self.port} did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@dataclass
class Service:
    """A running service and the credential of each role it serves."""

    name: str
    served: Served
    credentials: dict[str, str]  # path prefix -> bearer credential (the longest prefix wins)
    # path prefix -> {path parameter: the id of something that exists} (the longest prefix wins)
    known: dict[str, dict[str, str]] = field(default_factory=dict)

    def credential_for(self, path: str) -> str:
        return self.credentials[_longest_prefix(self.credentials, path)]

    def known_for(self, path: str) -> dict[str, str]:
        return self.known.get(_longest_prefix(self.known, path), {}) if self.known else {}


def _longest_prefix(by_prefix: dict[str, Any], path: str) -> str:
    return max((p for p in by_prefix if path.startswith(p)), key=len, default="")


# Operators of every service: dead letters and streams (operations), the audit log (audit).
OPERATORS = {"/v1/ops": ROLE_KEYS[Role.operations], "/v1/ops/audit": ROLE_KEYS[Role.audit]}


def _settings(database: Callable[[str], str], redis_url: str, name: str, **over: Any) -> dict[str, Any]:
    return dict(database_url=database(name), redis_url=redis_url, operator_keys=OPERATOR_KEYS,
                stream_block_ms=100, outbox_poll_interval_s=0.2, **over)


@contextmanager
def serving(app: Callable[[Any], FastAPI], settings_cls: Any, **values: Any) -> Iterator[Served]:
    cfg = settings_cls(**values)
    served = Served(app(cfg), cfg.database_url).start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             redis_url: str) -> Callable[[str], str]:
    """Each service's database: SQLite files, then PostgreSQL databases (where a NUL
    cannot be stored); FUZZ_DATABASE=sqlite or postgres runs one. Redis is emptied first."""
    if os.environ.get("FUZZ_DATABASE", request.param) != request.param:
        pytest.skip(f"FUZZ_DATABASE={os.environ['FUZZ_DATABASE']}")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        return lambda name: str(server.create_database(f"fuzz_{name}_{uuid.uuid4().hex[:8]}"))
    tmp = tmp_path_factory.mktemp("fuzz")
    return lambda name: f"sqlite+aiosqlite:///{tmp / name}.db"


@pytest.fixture(scope="module")
def intake(database: Callable[[str], str], redis_url: str) -> Iterator[Service]:
    from intake.bootstrap import create_app
    from intake.settings import Settings

    with serving(create_app, Settings, **_settings(
            database, redis_url, "intake", encryption_keys=TEST_KEYS, demo_api_key=DEMO_KEY,
            agency_key_pepper=AGENCY_PEPPER, receiver_grant_secret=GRANT_SECRET)) as served:
        agency = {"Authorization": f"Bearer {DEMO_KEY}"}
        r = requests.post(f"{served.url}/v1/referrals", json=VALID, headers=agency, timeout=30)
        assert r.status_code == 202, r.text
        referral_id = r.json()["id"]
        # Another, proposed to receiver R-fuzz, who accepted (as matching and notify would
        # say), so that the receiver's grant opens it (and the agency's requests cannot cancel it).
        r = requests.post(f"{served.url}/v1/referrals", json={**VALID, "external_ref": "FUZZ-2"}, headers=agency,
                          timeout=30)
        assert r.status_code == 202, r.text
        accepted_id = r.json()["id"]
        run_sql(served.database_url, "UPDATE referral SET status = 'accepted', matched_service = :m WHERE id = :id",
                id=accepted_id, m=json.dumps({"decision_id": "D-fuzz", "service_id": "svc-fuzz",
                                              "recipient_receiver_ids": ["R-fuzz"]}))
        grant, _ = sign(GRANT_SECRET, referral_id=accepted_id, decision_id="D-fuzz", receiver_id="R-fuzz",
                        credential_id="C-fuzz", ttl=timedelta(hours=1))
        # An agency for the onboarding operator's requests to rotate and revoke (not the
        # demo agency, whose key the fuzzer uses).
        onboarding = {"Authorization": f"Bearer {ROLE_KEYS[Role.onboarding]}"}
        r = requests.post(f"{served.url}/v1/agencies", json={"id": "fuzz-agency", "name": "Fuzz"},
                          headers=onboarding, timeout=30)
        assert r.status_code == 201, r.text
        yield Service("intake", served, {
            "": DEMO_KEY, "/v1/agencies": ROLE_KEYS[Role.onboarding], "/v1/receivers": grant, **OPERATORS},
            known={"/v1/referrals": {"referral_id": referral_id}, "/v1/receivers": {"referral_id": accepted_id},
                   "/v1/agencies": {"agency_id": "fuzz-agency"}})


@pytest.fixture(scope="module")
def matching(database: Callable[[str], str], redis_url: str) -> Iterator[Service]:
    from matching.bootstrap import create_app
    from matching.settings import Settings

    with serving(create_app, Settings, **_settings(database, redis_url, "matching")) as served:
        directory = {"Authorization": f"Bearer {ROLE_KEYS[Role.directory]}"}
        seed = json.loads((SEED / "demo_directory.json").read_text())
        r = requests.post(f"{served.url}/v1/services", json=seed[0], headers=directory, timeout=30)
        assert r.status_code == 201, r.text
        yield Service("matching", served, {"": ROLE_KEYS[Role.directory], **OPERATORS},
                      known={"/v1/services": {"service_id": seed[0]["id"]}})


@pytest.fixture(scope="module")
def notify(database: Callable[[str], str], redis_url: str, smtp_server: MailCatcher) -> Iterator[Service]:
    from notify.bootstrap import create_app
    from notify.settings import Settings

    # A real mail relay: notify is ready (its /ready checks the relay), and the mails go somewhere.
    with serving(create_app, Settings, **_settings(database, redis_url, "notify", smtp_url=smtp_server.url,
                                                   receiver_grant_secret=GRANT_SECRET)) as served:
        receiver_id, proposal_id = _propose(redis_url)
        onboarding = {"Authorization": f"Bearer {ROLE_KEYS[Role.onboarding]}"}
        deadline = time.monotonic() + 30
        while requests.get(f"{served.url}/v1/receivers/{receiver_id}/credentials", headers=onboarding,
                           timeout=30).status_code != 200:  # until notify has recorded the proposal
            assert time.monotonic() < deadline, "notify did not record the proposal"
            time.sleep(0.1)
        # One for the onboarding operator to revoke (issued as operators do: it is mailed) ...
        r = requests.post(f"{served.url}/v1/receivers/{receiver_id}/tokens", json={"valid_days": 1},
                          headers=onboarding, timeout=30)
        assert r.status_code == 202, r.text
        # ... and one for the inbox, as its mail would have brought it to the receiver.
        token = _system_token(served.database_url, receiver_id)
        yield Service("notify", served, {
            "": token, "/v1/receivers": ROLE_KEYS[Role.onboarding],
            "/v1/deliveries": ROLE_KEYS[Role.operations], **OPERATORS},
            known={"/v1/receivers": {"receiver_id": receiver_id, "credential_id": r.json()["id"]},
                   "/v1/inbox": {"proposal_id": proposal_id}})


def _system_token(database_url: str, receiver_id: str) -> str:
    """A receiver's system token, written as the delivery worker mints one (its hash only)."""
    from notify.adapters.orm import ReceiverToken
    from notify.service_layer.credentials import TOKEN_PREFIX, digest
    from shared.db import sessions
    from shared.events import new_id

    token = TOKEN_PREFIX + uuid.uuid4().hex

    async def add() -> None:
        engine = make_engine(database_url)
        try:
            async with sessions(engine)() as s, s.begin():
                s.add(ReceiverToken(id=new_id(), receiver_id=receiver_id, token_sha256=digest(token),
                                    issued_by="operator:fuzz", expires_at=utcnow() + timedelta(days=1)))
        finally:
            await engine.dispose()

    asyncio.run(add())
    return token


def _propose(redis_url: str) -> tuple[str, str]:
    """A proposal to a receiver, as matching decides one: (receiver id, proposal id)."""
    receiver_id, decision_id = "01FUZZRECEIVER000000000000", "01FUZZDECISION000000000000"
    event = Envelope.wrap(ReferralMatched(
        referral_id="01FUZZREFERRAL000000000000", decision_id=decision_id, service_id="svc-fuzz",
        service_name="Kelompok Fuzz", organization_name="Org Fuzz", resource_kind="peer_support",
        pmks_category="korban_tindak_kekerasan", region_code="12.71", urgency=Urgency.routine,
        hold_expires_at=utcnow() + timedelta(hours=1), reasons_id=["wilayah"], reasons_en=["area"],
        recipients=[Recipient(receiver_id=receiver_id, contact_id="ct-fuzz", email="fuzz@example.org")],
    ), source="rujukan/matching", subject="01FUZZREFERRAL000000000000")

    async def send() -> None:
        client = connect(redis_url)
        try:
            await publish(client, [event])
        finally:
            await client.aclose()

    asyncio.run(send())
    return receiver_id, decision_id


def run_sql(database_url: str, statement: str, **params: Any) -> None:
    async def run() -> None:
        engine = make_engine(database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(statement), params)
        finally:
            await engine.dispose()

    asyncio.run(run())


# ------------------------------------------------------------------------------------------
# The fuzzer
# ------------------------------------------------------------------------------------------


@dataclass
class Findings:
    failures: dict[tuple[str, str], str] = field(default_factory=dict)  # (operation, kind) -> reproduction
    statuses: dict[str, set[int]] = field(default_factory=dict)

    def report(self) -> str:
        return "\n\n".join(f"{op}: {kind}\n{repro}" for (op, kind), repro in sorted(self.failures.items()))


def fuzz_operation(operation: Any, base_url: str, credential: str, findings: Findings,
                   known: dict[str, str]) -> None:
    """Valid and invalid requests (schemathesis' positive and negative modes); then, where
    every path parameter names something that exists, valid requests about it."""
    label = operation.label
    headers = {"Authorization": f"Bearer {credential}"}
    session = requests.Session()
    accepted: list[Any] = []  # the first request answered 2xx, for the NUL sweep

    def exercise(case: Any) -> None:
        curl = case.as_curl_command(headers=headers, base_url=base_url)
        try:
            response = case.call(base_url=base_url, headers=headers, session=session, timeout=30)
        except requests.RequestException as e:
            findings.failures.setdefault((label, f"no response: {type(e).__name__}"), curl)
            return
        findings.statuses.setdefault(label, set()).add(response.status_code)
        if response.status_code < 300 and not accepted and (isinstance(case.body, dict | list) or case.query):
            accepted.append(case)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, BaseExceptionGroup) as e:
            failures = e.exceptions if isinstance(e, BaseExceptionGroup) else (e,)
            for failure in failures:
                kind = getattr(failure, "title", "") or type(failure).__name__
                detail = str(getattr(failure, "message", failure))[:1500]
                findings.failures.setdefault((label, kind), f"{detail}\nHTTP {response.status_code}: "
                                                            f"{response.text[:300]}\n{curl}")

    path_names = [p.name for p in operation.path_parameters]
    passes = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
    if path_names and all(n in known for n in path_names):
        passes.append((GenerationMode.POSITIVE, {n: known[n] for n in path_names}))
    for mode, path_parameters in passes:
        run: Callable[[], None] = settings(
            max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
        )(given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))(exercise))
        with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (an operation without parameters or body)
            run()
    # A NUL in each string of an accepted request, one at a time: random strings seldom hold
    # one, and PostgreSQL cannot store it (each must be refused, never answered 500).
    for mutated in nul_sweep(operation, accepted[0]) if accepted else []:
        exercise(mutated)
    session.close()


def nul_sweep(operation: Any, case: Any, limit: int = 60) -> Iterator[Any]:
    def strings(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        if isinstance(value, str):
            yield path
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from strings(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                yield from strings(v, (*path, i))

    def with_nul(value: Any, path: tuple[Any, ...]) -> Any:
        if not path:
            return f"{value[:1]}\x00{value[1:]}"
        copy = dict(value) if isinstance(value, dict) else list(value)
        copy[path[0]] = with_nul(value[path[0]], path[1:])
        return copy

    def make(**changed: Any) -> Any:
        fields = {"path_parameters": case.path_parameters, "query": case.query, "body": case.body,
                  "media_type": case.media_type, **changed}
        return operation.schema.make_case(operation=operation, **fields)

    body_paths = list(strings(case.body)) if isinstance(case.body, dict | list) else []
    query_names = [k for k, v in (case.query or {}).items() if isinstance(v, str)]
    for path in body_paths[:limit]:
        yield make(body=with_nul(case.body, path))
    for name in query_names:
        yield make(query={**case.query, name: with_nul(case.query[name], ())})


@pytest.mark.parametrize("name", ["intake", "matching", "notify"])
@pytest.mark.parametrize("database", ["sqlite", "postgres"], indirect=True)
def test_every_operation_answers_no_server_error_and_as_documented(
    request: pytest.FixtureRequest, database: Callable[[str], str], name: str
) -> None:
    service: Service = request.getfixturevalue(name)
    schema = schemathesis.openapi.from_url(f"{service.served.url}/openapi.json")
    findings = Findings()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, f"{name}: no operation in its OpenAPI"
    for operation in operations:
        fuzz_operation(operation, service.served.url, service.credential_for(operation.path), findings,
                       service.known_for(operation.path))
    print(f"\n{name}: " + "; ".join(f"{op} {sorted(codes)}" for op, codes in sorted(findings.statuses.items())))
    # Each operation's credential was the right one: some request got past authentication.
    refused_only = [op for op, codes in findings.statuses.items() if codes <= {401, 403, 429}]
    assert not refused_only, f"{name}: every request refused for {refused_only} (see the fixture's credentials)"
    assert not findings.failures, f"{name}: {len(findings.failures)} finding(s)\n\n{findings.report()}"
