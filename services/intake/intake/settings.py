from __future__ import annotations

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "intake"
    port: int = 8001
    database_url: str = "sqlite+aiosqlite:///./var/intake.db"
    # "kid:base64-32-byte-key,kid2:..." — the first key encrypts, every key listed decrypts,
    # so keys rotate by putting a new one first and keeping the old ones until re-encrypted.
    encryption_keys: str = ""
    # The demo agency's API key; when set, the agency "demo" is created or updated at start.
    demo_api_key: str | None = None
    # Shared with notify: verifies the grants with which a receiver reads the personal data
    # of a referral it accepted (shared/grants.py). Unset: receivers cannot read it here.
    receiver_grant_secret: str = ""
