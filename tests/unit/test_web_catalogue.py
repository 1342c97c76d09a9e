"""Every string a page shows comes from the one catalogue, in Bahasa Indonesia first: a
message used in a template or a page module without its Indonesian text fails here."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir

from shared.web.i18n import catalogue, gettext_for

ROOT = Path(__file__).resolve().parents[2]
# Where pages live: the shared layout, each service's templates and page modules.
PAGE_SOURCES = [ROOT / "shared" / "web", *(ROOT / "services").glob("*/*/templates"),
                *(ROOT / "services").glob("*/*/entrypoints")]
METHODS = [("**.html", "jinja2.ext:babel_extract"), ("**.py", "python")]


def used_messages() -> dict[str, str]:
    found: dict[str, str] = {}
    for folder in PAGE_SOURCES:
        if not folder.is_dir():
            continue
        for filename, _lineno, message, _comments, _context in extract_from_dir(
                str(folder), METHODS, keywords={"_": None, "gettext": None}):
            if isinstance(message, str) and message:
                found.setdefault(message, str(folder / filename))
    return found


def test_the_pages_use_the_catalogue() -> None:
    messages = used_messages()
    assert "Skip to content" in messages  # the layout itself is found: extraction works


def test_every_message_a_page_shows_has_its_bahasa_indonesia_text() -> None:
    missing = {m: where for m, where in used_messages().items() if m not in catalogue("id")}
    assert not missing, "add these to shared/web/locale/id/LC_MESSAGES/*.po:\n" + "\n".join(
        f"{where}: {m!r}" for m, where in sorted(missing.items()))


def test_english_is_the_message_ids_and_an_unknown_language_falls_back_to_indonesian() -> None:
    assert gettext_for("en")("Skip to content") == "Skip to content"
    assert gettext_for("id")("Skip to content") == "Langsung ke isi"
    assert gettext_for("fr")("Skip to content") == "Langsung ke isi"
