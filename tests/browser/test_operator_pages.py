"""Operators' pages in a real Chromium through the one address (the proxy in front of the
three services): sign in with an operator key (a wrong one first), search the directory,
open a service, import a CSV and read the report, sign out; an operations operator replays
a dead letter from the page on each service; a role's pages are closed to another role.
axe-core and a screenshot on every page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import redis

from matching.entrypoints.http import CSV_EXAMPLE
from shared.streams.dead_letters import dead_letter_call
from shared.streams.topology import SUBMITTED, dead_letter_stream, replay_stream
from tests.apps import DIRECTORY_KEY, OPERATIONS_KEY
from tests.browser.conftest import seen
from tests.e2e.conftest import StackFactory
from tests.integration.test_streams import submitted


def sign_in(page: Any, key: str) -> None:
    page.get_by_label("Kunci operator").fill(key)
    page.get_by_role("button", name="Masuk").click()


def test_operators_keep_the_directory_and_replay_dead_letters(stack_factory: StackFactory, phone: Any,
                                                                tmp_path: Path) -> None:
    stack = stack_factory()
    page = phone

    # A page behind the directory role sends to sign-in, and back after.
    page.goto(stack.url("/operator/directory"))
    assert "/operator/signin" in page.url
    seen(page, "operator-signin")
    sign_in(page, "rjo_not-the-key")
    assert page.get_by_role("alert").is_visible()
    assert "tidak dikenal" in page.content()
    seen(page, "operator-signin-wrong-key")
    sign_in(page, DIRECTORY_KEY)
    page.wait_for_url(re.compile(r"/operator/directory$"))
    assert page.get_by_role("heading", level=1).inner_text() == "Direktori"
    page.get_by_label("Nama").fill("Medan")
    page.get_by_role("button", name="Cari").click()
    page.wait_for_url(re.compile(r"q=Medan"))
    assert "Layanan ditemukan" in page.content()
    seen(page, "operator-directory-search")
    page.get_by_role("link", name=re.compile("Medan")).first.click()
    page.wait_for_url(re.compile(r"/operator/directory/services/"))
    assert "Kapasitas" in page.content()
    assert "Kontak penerima" in page.content()
    seen(page, "operator-directory-service")

    page.goto(stack.url("/operator/directory/import"))
    seen(page, "operator-directory-import")
    csv = tmp_path / "layanan.csv"
    csv.write_text(CSV_EXAMPLE, encoding="utf-8")
    page.get_by_label("Berkas (.json atau .csv)").set_input_files(str(csv))
    page.get_by_role("button", name="Impor").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "Laporan impor"
    assert "dibuat 1" in page.content()
    seen(page, "operator-directory-import-report")
    page.get_by_role("link", name="svc-kds-deli").click()
    assert "KDS Deli Serdang" in page.get_by_role("heading", level=1).inner_text()

    # The directory role does not open the dead letters.
    page.goto(stack.url("/operator/matching/dead-letters"))
    assert "Tidak diizinkan" in page.content()
    seen(page, "operator-forbidden")
    page.goto(stack.url("/operator/"))
    page.get_by_role("button", name="Keluar").click()
    page.wait_for_url(re.compile(r"/operator/signin"))
    assert "Anda sudah keluar" in page.content()
    page.goto(stack.url("/operator/directory"))
    assert "/operator/signin" in page.url  # signed out for good

    # Operations: a dead letter on matching, seen and replayed from the page.
    r = redis.Redis.from_url(stack.redis_url)
    event = submitted()
    _keys, args = dead_letter_call(group="matching", consumer="c1", stream=SUBMITTED, entry_id="1-0",
                                   fields={"type": event.type, "event": event.model_dump_json()},
                                   reason="ValueError: boom", deliveries=5)
    dead_id = r.xadd(dead_letter_stream("matching"), dict(zip(args[2::2], args[3::2], strict=True))).decode()
    page.goto(stack.url("/operator/signin"))
    sign_in(page, OPERATIONS_KEY)
    page.wait_for_url(re.compile(r"/operator/$"))
    seen(page, "operator-home")
    for service in ("intake", "notify", "matching"):
        page.get_by_role("link", name=f"Surat mati dari {service}").click()
        page.wait_for_url(re.compile(rf"/operator/{service}/dead-letters$"))
        assert page.get_by_role("heading", level=1).inner_text() == f"Surat mati: {service}"
        if service != "matching":
            assert "Tidak ada surat mati" in page.content()
            page.goto(stack.url("/operator/"))
    seen(page, "operator-dead-letters")
    page.locator(f'a[href="/operator/matching/dead-letters/{dead_id}"]').click()
    page.wait_for_url(re.compile(rf"/dead-letters/{dead_id}$"))
    assert event.id in page.content()
    assert json.dumps(event.data["age_band"]) not in page.content()  # the event's data is not shown
    seen(page, "operator-dead-letter")
    page.get_by_role("button", name="Putar ulang").click()
    page.wait_for_url(re.compile(r"done=replayed"))
    assert "Diputar ulang" in page.content()
    assert "Tidak ada surat mati" in page.content()
    seen(page, "operator-dead-letter-replayed")
    assert [f[b"replay_of"].decode() for _i, f in r.xrange(replay_stream("matching"))] == [dead_id]
    r.close()
