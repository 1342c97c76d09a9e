"""Compose's Prometheus configuration and alert rules, checked by Prometheus's own tool
(Debian's `prometheus` package has promtool; `.ci/run` installs it): the configuration and
the rules it loads are valid, and the rules' unit tests (deploy/prometheus/alerts_test.yml)
pass — each alert fires on what it is for and stays quiet otherwise. That the metrics the
rules name are exported is tests/integration/test_metrics.py's part."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus; "
                                                         ".ci/run does)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


def test_the_configuration_and_the_rules_it_loads_are_valid(tmp_path: Path) -> None:
    # As compose mounts it, but with the rules file where it is in the repository.
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    r = promtool("check", "config", str(checked))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr
    r = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_each_alert_fires_on_what_it_is_for_and_only_then() -> None:
    r = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    # Every alert has a unit test.
    alerts = {rule["alert"] for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    tested = {check["alertname"] for case in yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
              for check in case["alert_rule_test"]}
    assert alerts <= tested, f"alerts without a unit test: {sorted(alerts - tested)}"


def test_promtool_finds_a_broken_rule_and_a_wrong_expectation(tmp_path: Path) -> None:
    # The checks above can fail: an expression that does not parse, an alert that does not fire.
    broken = tmp_path / "alerts.yml"
    broken.write_text((PROMETHEUS / "alerts.yml").read_text().replace(
        "max by (group) (rujukan_dead_letters) > 0", "max by (group) (rujukan_dead_letters > 0"))
    assert promtool("check", "rules", str(broken)).returncode != 0
    (tmp_path / "alerts.yml").write_text((PROMETHEUS / "alerts.yml").read_text())
    wrong = tmp_path / "alerts_test.yml"
    wrong.write_text((PROMETHEUS / "alerts_test.yml").read_text().replace("values: '0 0 1 1'", "values: '0 0 0 0'"))
    r = promtool("test", "rules", str(wrong))
    assert r.returncode != 0
    assert "DeadLetter" in r.stdout + r.stderr
