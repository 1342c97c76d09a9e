"""Issue 8, finding 3: a service refuses to start in production with a development value
(a secret published in this repository, an empty or too short one, the demo agency or
directory, Redis without a password, PostgreSQL with a published password), with one line
saying why; the same values start in development (RUJUKAN_ENV=development)."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devtools.devstack import ROOT
from intake.adapters.crypto import FieldCipher
from intake.bootstrap import create_app as intake_app
from intake.settings import Settings as IntakeSettings
from matching.bootstrap import create_app as matching_app
from matching.settings import Settings as MatchingSettings
from notify.bootstrap import create_app as notify_app
from notify.settings import Settings as NotifySettings
from shared.operators import Role, entry_for, new_key
from shared.settings import DevelopmentValue
from tests.apps import running

APPS: dict[str, Any] = {"intake": (IntakeSettings, intake_app), "matching": (MatchingSettings, matching_app),
                        "notify": (NotifySettings, notify_app)}
PUBLISHED_KEY = "dev1:ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE="  # compose's former default
STRONG_REDIS = f"redis://:{secrets.token_hex(24)}@redis.internal:6379/0"


def production_values(service: str, tmp_path: Path) -> dict[str, Any]:
    """What an operator sets: nothing published, nothing missing."""
    values: dict[str, Any] = {
        "rujukan_env": "production", "redis_url": STRONG_REDIS,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / f'{service}.db'}",
        "operator_keys": entry_for("ani", Role.directory, new_key()),
    }
    if service in ("intake", "notify"):
        values["receiver_grant_secret"] = secrets.token_urlsafe(32)
    if service == "intake":
        values.update(encryption_keys=FieldCipher.generate("k1"), agency_key_pepper=secrets.token_urlsafe(32))
    return values


# (service, setting, development value, what the refusal names)
DEVELOPMENT_VALUES = [
    *[(s, "redis_url", "redis://redis:6379/0", "REDIS_URL has no password") for s in APPS],
    *[(s, "redis_url", "redis://:rujukan@redis:6379/0", "REDIS_URL has a published password") for s in APPS],
    *[(s, "redis_url", "redis://:short@redis:6379/0", "REDIS_URL's password is shorter") for s in APPS],
    *[(s, "database_url", "postgresql+asyncpg://rujukan:rujukan@postgres:5432/x", "published PostgreSQL password")
      for s in APPS],
    *[(s, "operator_keys", "ops:operations:" + hashlib.sha256(b"rujukan-admin-key").hexdigest(),
       "OPERATOR_KEYS gives 'ops' a key published") for s in APPS],
    ("matching", "seed_demo", True, "SEED_DEMO"),
    ("intake", "demo_api_key", "rujukan-demo-key", "DEMO_API_KEY"),
    ("intake", "demo_api_key", secrets.token_urlsafe(32), "DEMO_API_KEY"),
    ("intake", "encryption_keys", PUBLISHED_KEY, "ENCRYPTION_KEYS holds a key published"),
    ("intake", "encryption_keys", "", "ENCRYPTION_KEYS is not set"),
    ("intake", "agency_key_pepper", "", "AGENCY_KEY_PEPPER is not set"),
    ("intake", "agency_key_pepper", "pepper", "AGENCY_KEY_PEPPER is shorter than 32"),
    *[(s, "receiver_grant_secret", "dev-only-receiver-grant-secret", "RECEIVER_GRANT_SECRET is a value published")
      for s in ("intake", "notify")],
    *[(s, "receiver_grant_secret", "", "RECEIVER_GRANT_SECRET is not set") for s in ("intake", "notify")],
    *[(s, "receiver_grant_secret", "too-short", "RECEIVER_GRANT_SECRET is shorter") for s in ("intake", "notify")],
]


@pytest.mark.parametrize("service", list(APPS))
def test_what_an_operator_sets_is_enough_for_production(service: str, tmp_path: Path) -> None:
    settings_cls, create_app = APPS[service]
    create_app(settings_cls(**production_values(service, tmp_path)))


@pytest.mark.parametrize(("service", "setting", "value", "reason"), DEVELOPMENT_VALUES,
                         ids=[f"{s}-{k}-{i}" for i, (s, k, _, _) in enumerate(DEVELOPMENT_VALUES)])
def test_each_development_value_is_refused_in_production(service: str, setting: str, value: Any, reason: str,
                                                         tmp_path: Path) -> None:
    settings_cls, create_app = APPS[service]
    settings = settings_cls(**{**production_values(service, tmp_path), setting: value})
    with pytest.raises(DevelopmentValue, match=reason):
        create_app(settings)
    # The same value is fine in development (checked as far as creating the app), but for
    # no encryption key at all, which nothing can run without.
    if (setting, value) != ("encryption_keys", ""):
        create_app(settings.model_copy(update={"rujukan_env": "development"}))


@pytest.mark.parametrize("service", list(APPS))
async def test_each_service_starts_in_development_with_development_values(
    service: str, tmp_path: Path, redis_url: str, redis: Any
) -> None:
    settings_cls, create_app = APPS[service]
    values: dict[str, Any] = {
        "rujukan_env": "development", "redis_url": redis_url,  # the tests' Redis has no password
        "database_url": f"sqlite+aiosqlite:///{tmp_path / f'{service}.db'}",
        "operator_keys": "ops:operations:" + hashlib.sha256(b"rujukan-admin-key").hexdigest(),
    }
    if service == "intake":
        values.update(encryption_keys=PUBLISHED_KEY, demo_api_key="rujukan-demo-key")
    if service == "matching":
        values["seed_demo"] = True
    async with running(create_app(settings_cls(**values))) as client:
        assert (await client.get("/health")).status_code == 200
        streams = await client.get("/v1/ops/streams", headers={"Authorization": "Bearer rujukan-admin-key"})
        assert streams.status_code == 200
        if service == "intake":
            r = await client.get("/v1/referrals", headers={"Authorization": "Bearer rujukan-demo-key"})
            assert r.status_code == 200


@pytest.mark.parametrize("service", list(APPS))
def test_a_refused_start_is_one_line_without_a_traceback(service: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RUJUKAN_ENV",)}
    env.update({k.upper(): str(v) for k, v in production_values(service, tmp_path).items()})
    env["REDIS_URL"] = "redis://127.0.0.1:6379/0"  # no password
    res = subprocess.run([sys.executable, "-m", service], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith(f"{service}: refusing to start in production")
    assert "REDIS_URL" in lines[0]
    assert "RUJUKAN_ENV=development" in lines[0]


def test_a_bad_setting_is_one_line_too(tmp_path: Path) -> None:
    env = {**os.environ, "PORT": "not-a-port"}
    res = subprocess.run([sys.executable, "-m", "matching"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "PORT" in res.stderr
