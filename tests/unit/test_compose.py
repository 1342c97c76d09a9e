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

from intake.settings import Settings as IntakeSettings
from matching.settings import Settings as MatchingSettings
from notify.settings import Settings as NotifySettings
from shared.devstack import APP_SERVICES, ROOT, interpolate, load_compose, local_environment

COMPOSE = ROOT / "compose.yaml"
SETTINGS = {"intake": IntakeSettings, "matching": MatchingSettings, "notify": NotifySettings}


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
    unknown = set(env) - fields
    assert not unknown, f"{name} is given variables it never reads: {unknown}"
    for required in ("REDIS_URL", "DATABASE_URL", "PORT", "HOST"):
        assert required in env
    if name == "notify":
        assert "SMTP_URL" in env


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_environment_builds_valid_settings(name: str) -> None:
    spec = load_compose(env={})[name]
    settings = SETTINGS[name].model_validate({k.lower(): v for k, v in spec.environment.items()})
    ports = compose()["services"][name]["ports"]
    assert ports == [f"{settings.port}:{settings.port}"]
    health = " ".join(compose()["services"][name]["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.port}/health" in health
    assert settings.database_url.endswith(f"/{name}")  # one database per service


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
    specs = load_compose(env={"DEMO_API_KEY": "k-123"})
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
    assert interpolate("a${B}b", {}) == "ab"


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
