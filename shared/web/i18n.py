"""One catalogue for every page: the message ids are English, the Bahasa Indonesia
translations live in `locale/id/LC_MESSAGES/*.po` (one file per area, merged at load:
common, receiver, agency, operator). Bahasa Indonesia is the default; the `rujukan_lang`
cookie holds a person's switch to English."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import resources

from babel.messages.pofile import read_po
from starlette.requests import Request

LANGUAGES = ("id", "en")
DEFAULT_LANGUAGE = "id"
LANG_COOKIE = "rujukan_lang"

Gettext = Callable[[str], str]


@cache
def catalogue(lang: str) -> dict[str, str]:
    """Message id -> text in `lang`; English is the message ids themselves."""
    if lang == "en":
        return {}
    found: dict[str, str] = {}
    folder = resources.files("shared.web").joinpath("locale", lang, "LC_MESSAGES")
    for po in sorted(folder.iterdir(), key=lambda p: p.name):
        if not po.name.endswith(".po"):
            continue
        with po.open("rb") as f:
            for message in read_po(f, locale=lang):
                if message.id and message.string and not message.fuzzy and isinstance(message.id, str):
                    found[message.id] = str(message.string)
    return found


def gettext_for(lang: str) -> Gettext:
    table = catalogue(lang if lang in LANGUAGES else DEFAULT_LANGUAGE)

    def gettext(message: str) -> str:
        return table.get(message, message)

    return gettext


def language_of(request: Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, DEFAULT_LANGUAGE)
    return lang if lang in LANGUAGES else DEFAULT_LANGUAGE
