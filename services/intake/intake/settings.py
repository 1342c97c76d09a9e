from __future__ import annotations

from pydantic import Field

from shared.settings import PUBLISHED_SECRETS, ServiceSettings, secret_problem


class Settings(ServiceSettings):
    service_name: str = "intake"
    port: int = 8001
    database_url: str = "sqlite+aiosqlite:///./var/intake.db"
    # "kid:base64-32-byte-key,kid2:..." — the first key encrypts, every key listed decrypts,
    # so keys rotate by putting a new one first and keeping the old ones until re-encrypted.
    encryption_keys: str = ""
    # The demo agency's API key (development only): the agency "demo" is created or updated
    # at start with it, and deactivated at start when it is unset.
    demo_api_key: str | None = None
    # Agencies' API keys are stored as HMAC-SHA256(pepper, key): a copy of the database
    # alone does not let anyone test guesses of a key.
    agency_key_pepper: str = ""
    # Shared with notify: verifies the grants with which a receiver reads the personal data
    # of a referral it accepted (shared/grants.py).
    receiver_grant_secret: str = ""
    # Agency staff sign in with a single-use link mailed to their registered address
    # (`{PUBLIC_URL}/agency/signin/{code}`), valid this long; the session it starts lasts
    # AGENCY_SESSION_HOURS. Mail goes out through the same relay as notify's.
    smtp_url: str = "smtp://127.0.0.1:1025"
    mail_from: str = "Rujukan <noreply@rujukan.example>"
    public_url: str = "http://127.0.0.1:8001"
    agency_signin_minutes: float = Field(default=30.0, gt=0)
    agency_session_hours: float = Field(default=12.0, gt=0)

    def development_values(self) -> list[str]:
        problems = super().development_values()
        if self.demo_api_key:
            problems.append("DEMO_API_KEY makes the demo agency")
        for item in self.encryption_keys.split(","):
            kid, _, key = item.strip().partition(":")
            if key.strip() in PUBLISHED_SECRETS:
                problems.append(f"ENCRYPTION_KEYS holds a key published in this repository ('{kid}')")
        if not self.encryption_keys.strip():
            problems.append("ENCRYPTION_KEYS is not set")
        for variable, value in (("RECEIVER_GRANT_SECRET", self.receiver_grant_secret),
                                ("AGENCY_KEY_PEPPER", self.agency_key_pepper)):
            if problem := secret_problem(variable, value):
                problems.append(problem)
        return problems
