"""Every query of the Grafana dashboard is valid PromQL, checked by Prometheus's own parser
(promtool, as recording rules); that the metrics they name are exported is
tests/integration/test_metrics.py's part."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/rujukan.json"
PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus; .ci/run does)")
def test_every_panel_query_parses(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    panels = json.loads(DASHBOARD.read_text())["panels"]
    rules = [{"record": f"dashboard:panel{p['id']}:{t['refId'].lower()}", "expr": t["expr"]}
             for p in panels for t in p["targets"]]
    assert len({r["record"] for r in rules}) == len(rules)  # panel ids and refIds unique
    checked = tmp_path / "dashboard.yml"
    checked.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run([PROMTOOL, "check", "rules", str(checked)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(rules)} rules found" in r.stdout + r.stderr
