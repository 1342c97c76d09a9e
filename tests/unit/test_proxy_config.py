"""One address, one routing table: compose's Caddyfile names exactly devtools.proxy's prefixes
(each with what is under it) for the same service, compose wires the proxy in front of
the services, and the links in mails follow one variable. (Real Caddy runs the file in
tests/integration/test_dev_proxy_caddy.py; this holds even where caddy is not installed.)"""

from __future__ import annotations

import re

import pytest
import yaml

from devtools.devstack import ROOT, load_compose
from devtools.proxy import ROUTES, Proxy, route

CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"


def caddy_matchers(text: str) -> dict[str, tuple[set[str], set[str]]]:
    """{service: (paths, paths excluded)} from the Caddyfile's named matchers."""
    out: dict[str, tuple[set[str], set[str]]] = {}
    for name, body in re.findall(r"^\t@(\w+) \{(.*?)\n\t\}", text, flags=re.S | re.M):
        paths: set[str] = set()
        excluded: set[str] = set()
        for line in body.splitlines():
            words = line.split()
            if words[:1] == ["path"]:
                paths.update(words[1:])
            elif words[:2] == ["not", "path"]:
                excluded.update(words[2:])
        out[name] = (paths, excluded)
    return out


def test_the_caddyfile_routes_exactly_the_dev_proxys_prefixes_to_the_same_services() -> None:
    matchers = caddy_matchers(CADDYFILE.read_text())
    assert set(matchers) == {"intake", "matching", "notify"}
    expected: dict[str, set[str]] = {name: set() for name in matchers}
    for prefix, service in ROUTES.items():
        expected[service] |= {"/"} if prefix == "=/" else {prefix, prefix + "/*"}
    assert {name: paths for name, (paths, _) in matchers.items()} == expected
    # Where a prefix lies inside another's that goes elsewhere, the outer matcher leaves it out
    # (the dev proxy's longest prefix wins), and leaves out nothing else.
    nested: dict[str, set[str]] = {name: set() for name in matchers}
    for inner, inner_service in ROUTES.items():
        for outer, outer_service in ROUTES.items():
            if inner.startswith(outer + "/") and inner_service != outer_service:
                nested[outer_service] |= {inner, inner + "/*"}
    assert {name: excluded for name, (_, excluded) in matchers.items()} == nested
    assert nested["matching"] == {"/operator/intake", "/operator/intake/*", "/operator/notify", "/operator/notify/*"}


@pytest.mark.parametrize(("path", "service"), [
    ("/", "intake"), ("/agency", "intake"), ("/agency/referrals/01J", "intake"), ("/person/x", "intake"),
    ("/v1/referrals/01J/cancel", "intake"), ("/v1/receivers/referrals/01J", "intake"),
    ("/operator/intake/dead-letters", "intake"), ("/assets/site.css", "intake"), ("/lang/en", "intake"),
    ("/receiver", "notify"), ("/signin/abc", "notify"), ("/v1/signin/abc/renew", "notify"),
    ("/v1/signout", "notify"), ("/v1/inbox/p1/responses", "notify"), ("/v1/receivers/r1/tokens", "notify"),
    ("/operator/notify/dead-letters", "notify"), ("/operator", "matching"), ("/operator/services/s1", "matching"),
    ("/operator/matching/dead-letters", "matching"), ("/v1/directory/import", "matching"),
    ("/v1/decisions", "matching"), ("/V1/Services", "matching"), ("//agency", "intake"),
    # Not routed: each service's own routes, look-alikes, and climbing out of a prefix.
    ("/health", None), ("/docs", None), ("/metrics", None), ("/openapi.json", None), ("/v1/ops/dead-letters", None),
    ("/v1/deliveries", None), ("/agencyx", None), ("/operatorx/intake", None), ("/v1", None),
    ("/agency/../docs", None), ("/v1/referrals/../ops/audit", None), ("/receiver/../../metrics", None),
])
def test_route(path: str, service: str | None) -> None:
    assert route(path) == service


def test_a_proxy_needs_every_service() -> None:
    with pytest.raises(ValueError, match="no upstream for notify"):
        Proxy({"intake": "http://127.0.0.1:1", "matching": "http://127.0.0.1:2"})


def test_compose_puts_the_proxy_in_front_and_mails_follow_one_variable() -> None:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    proxy = doc["services"]["proxy"]
    assert proxy["image"].startswith("caddy:")
    assert "./deploy/caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    assert proxy["ports"][0] == "${RUJUKAN_HTTP_PORT:-8080}:80"
    assert {n: c["condition"] for n, c in proxy["depends_on"].items()} == \
        dict.fromkeys(("intake", "matching", "notify"), "service_healthy")
    for name in ("intake", "matching", "notify"):
        # No service's own port on the host: reached through the proxy, it scales.
        assert "ports" not in doc["services"][name], name
    # The links in mails: one variable, the proxy's address unless set.
    specs = load_compose(env={"REDIS_PASSWORD": "x", "POSTGRES_PASSWORD": "x", "SMTP_URL": "smtp://x",
                              "OPERATOR_KEYS": "x", "ENCRYPTION_KEYS": "x", "AGENCY_KEY_PEPPER": "x",
                              "RECEIVER_GRANT_SECRET": "x"})
    public = {(n, k): v for n, s in specs.items() for k, v in s.environment.items() if k.endswith("PUBLIC_URL")}
    assert public == {("intake", "PUBLIC_URL"): "http://localhost:8080", ("notify", "PUBLIC_URL"): "http://localhost:8080",
                      ("notify", "INTAKE_PUBLIC_URL"): "http://localhost:8080",
                      ("matching", "PUBLIC_URL"): "http://localhost:8080"}
    specs = load_compose(env={"REDIS_PASSWORD": "x", "POSTGRES_PASSWORD": "x", "SMTP_URL": "smtp://x",
                              "OPERATOR_KEYS": "x", "ENCRYPTION_KEYS": "x", "AGENCY_KEY_PEPPER": "x",
                              "RECEIVER_GRANT_SECRET": "x", "PUBLIC_URL": "https://rujukan.example.org"})
    assert {v for n, s in specs.items() for k, v in s.environment.items() if k.endswith("PUBLIC_URL")} == \
        {"https://rujukan.example.org"}
    # Behind the proxy the services take the client's address from X-Forwarded-For.
    assert all(s.environment["FORWARDED_ALLOW_IPS"] == "*" for s in specs.values())


def test_the_caddyfile_logs_no_request() -> None:
    # A mailed sign-in link carries its code in the path: no access log may keep it.
    assert not re.search(r"^\s*log\b", CADDYFILE.read_text(), flags=re.M)
