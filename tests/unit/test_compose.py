"""compose.yaml and the Dockerfile, checked as far as a machine without a Docker engine can:
the Compose specification's schema, and that each service's command and environment are
what the services actually accept (the embedded runner reads the same file)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devtools.devstack import APP_SERVICES, ROOT, MissingVariable, interpolate, load_compose, local_environment
from intake.settings import Settings as IntakeSettings
from matching.settings import Settings as MatchingSettings
from notify.settings import Settings as NotifySettings

COMPOSE = ROOT / "compose.yaml"
SETTINGS = {"intake": IntakeSettings, "matching": MatchingSettings, "notify": NotifySettings}
# What compose.yaml requires an operator to set, each with a value of the right shape.
SECRETS = ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "ENCRYPTION_KEYS", "AGENCY_KEY_PEPPER", "RECEIVER_GRANT_SECRET",
           "OPERATOR_KEYS")
REQUIRED = (*SECRETS, "SMTP_URL")


def operator_env() -> dict[str, str]:
    """Values an operator would set (made fresh: none published)."""
    import secrets

    from intake.adapters.crypto import FieldCipher
    from shared.operators import Role, entry_for, new_key

    return {
        "REDIS_PASSWORD": secrets.token_hex(24), "POSTGRES_PASSWORD": secrets.token_hex(24),
        "ENCRYPTION_KEYS": FieldCipher.generate("k1"), "AGENCY_KEY_PEPPER": secrets.token_urlsafe(32),
        "RECEIVER_GRANT_SECRET": secrets.token_urlsafe(32), "SMTP_URL": "smtp+starttls://relay:pw@mail.example:587",
        "OPERATOR_KEYS": entry_for("ani", Role.directory, new_key()),
    }


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    res = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_broken_compose_file_is_caught_by_the_same_check(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    doc = compose()
    doc["services"]["intake"]["depends_on"]["redis"]["condition"] = "service_ready"  # not a valid value
    bad.write_text(yaml.safe_dump(doc))
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    res = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_service_command_runs_a_module_that_exists(name: str) -> None:
    command = compose()["services"][name]["command"]
    assert command[:2] == ["python", "-m"]
    assert importlib.util.find_spec(f"{command[2]}.__main__") is not None


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_environment_variable_is_a_setting_the_service_reads(name: str) -> None:
    env = compose()["services"][name]["environment"]
    fields = {f.upper() for f in SETTINGS[name].model_fields}
    # OpenTelemetry's own variable, read by its SDK's exporter (shared/tracing.py turns it on).
    fields.add("OTEL_EXPORTER_OTLP_ENDPOINT")
    unknown = set(env) - fields
    assert not unknown, f"{name} is given variables it never reads: {unknown}"
    for required in ("REDIS_URL", "DATABASE_URL", "PORT", "HOST"):
        assert required in env
    if name == "notify":
        assert "SMTP_URL" in env


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_environment_builds_valid_settings(name: str) -> None:
    spec = load_compose(env=operator_env())[name]
    settings = SETTINGS[name].model_validate({k.lower(): v for k, v in spec.environment.items()})
    # What an operator sets is enough for production: compose needs no development value.
    assert settings.rujukan_env == "production"
    settings.refuse_development_values()
    assert "ports" not in compose()["services"][name]  # people come through the proxy: replicas scale
    health = " ".join(compose()["services"][name]["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.port}/health" in health
    assert settings.database_url.endswith(f"/{name}")  # one database per service


def test_only_the_front_door_publishes_ports_so_services_scale() -> None:
    """`docker compose up --scale matching=3` needs no fixed host port on a service: only the
    proxy publishes; a profile's extra (the dev mail catcher, monitoring) on 127.0.0.1 only."""
    services = compose()["services"]
    assert publishing(compose()) == {"proxy"}
    for name, s in services.items():
        if s.get("profiles"):
            assert all(str(p).startswith("127.0.0.1:") for p in s.get("ports", [])), name
    for name in APP_SERVICES:
        assert "ports" not in services[name]
        assert "container_name" not in services[name]  # a fixed name cannot scale either
        assert services[name]["healthcheck"]["test"]  # checked inside the container, on its own port
    assert services["proxy"]["ports"] == ["${RUJUKAN_HTTP_PORT:-8080}:80", "${RUJUKAN_HTTPS_PORT:-8443}:443"]


def test_a_service_publishing_a_port_again_is_caught() -> None:
    doc = compose()
    doc["services"]["matching"]["ports"] = ["127.0.0.1:8002:8002"]
    assert publishing(doc) == {"proxy", "matching"}


def publishing(doc: dict) -> set[str]:
    """Services outside any profile that publish a port on the host."""
    return {name for name, s in doc["services"].items() if s.get("ports") and not s.get("profiles")}


def test_every_service_database_is_created_by_the_postgres_init_script() -> None:
    init = (ROOT / "deploy/postgres/init.sql").read_text()
    for name in APP_SERVICES:
        assert f"CREATE DATABASE {name};" in init


def test_dependencies_wait_for_health() -> None:
    services = compose()["services"]
    for name in APP_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"


def test_embedded_runner_uses_compose_environment_with_local_addresses(tmp_path: Path) -> None:
    specs = load_compose(env={**operator_env(), "DEMO_API_KEY": "k-123"})
    env = local_environment(specs["intake"], tmp_path, "redis://127.0.0.1:7000/0", "smtp://127.0.0.1:2525", {})
    assert env["DEMO_API_KEY"] == "k-123"
    assert env["REDIS_URL"] == "redis://127.0.0.1:7000/0"
    assert env["DATABASE_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}"
    assert env["PORT"] == "8001"
    # a fresh local key, never compose's development key
    assert env["ENCRYPTION_KEYS"].startswith("local1:")
    assert env["ENCRYPTION_KEYS"] == local_environment(specs["intake"], tmp_path, "r", "s", {})["ENCRYPTION_KEYS"]


def test_interpolation_follows_compose_rules() -> None:
    assert interpolate("${A:-x}", {}) == "x"
    assert interpolate("${A:-x}", {"A": "y"}) == "y"
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("${A-x}", {"A": ""}) == ""
    assert interpolate("a${B}b", {}) == "ab"
    assert interpolate("${A:?set A}", {"A": "y"}) == "y"
    for env in ({}, {"A": ""}):
        with pytest.raises(MissingVariable, match="A: set A"):
            interpolate("${A:?set A}", env)


# ----------------------------------------------------------------------------- no known secret


def test_compose_gives_no_secret_a_default() -> None:
    """Every secret is required (${VAR:?...}): compose refuses to start without it, and
    none can fall back to a value anyone can read here."""
    text = COMPOSE.read_text()
    for name in REQUIRED:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, f"{name} is not used"
        assert all(u.startswith(":?") for u in uses), f"{name} has a default: {uses}"
    for published in ("rujukan-demo-key", "rujukan-admin-key", "dev-only", "ZGV2", "ADMIN_API_KEY"):
        assert published not in text
    # The demo agency and directory are off unless asked for (development only).
    assert "${DEMO_API_KEY:-}" in text
    assert "${SEED_DEMO:-false}" in text
    assert "${RUJUKAN_ENV:-production}" in text


@pytest.mark.parametrize("missing", REQUIRED)
def test_compose_does_not_start_without_a_secret(missing: str) -> None:
    env = {k: v for k, v in operator_env().items() if k != missing}
    with pytest.raises(MissingVariable, match=missing):
        load_compose(env=env)
    with pytest.raises(MissingVariable, match=missing):
        load_compose(env={**env, missing: ""})


def test_redis_needs_its_password_and_the_mail_catcher_is_development_only() -> None:
    services = compose()["services"]
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert services["redis"]["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    env = operator_env()
    for name in APP_SERVICES:
        url = load_compose(env=env)[name].environment["REDIS_URL"]
        assert url == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
    mailpit = services["mailpit"]
    assert mailpit["profiles"] == ["dev"]
    assert all(str(p).startswith("127.0.0.1:") for p in mailpit.get("ports", []))
    assert services["notify"]["depends_on"]["mailpit"]["required"] is False


def test_dockerfile_copies_what_exists_and_installs_from_the_lock() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "uv sync --frozen" in text
    for line in text.splitlines():
        m = re.match(r"COPY (?!--from)(.+) \S+$", line)
        if m:
            for src in m.group(1).split():
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    for name in APP_SERVICES:
        assert compose()["services"][name]["build"] == "."
