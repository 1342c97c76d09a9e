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
    # Agencies' webhooks (service_layer/webhooks.py): each step is sent with this timeout, a
    # few at once; a failed attempt is retried after WEBHOOK_BACKOFF_BASE_S doubling up to
    # WEBHOOK_BACKOFF_MAX_S (with jitter) until WEBHOOK_GIVE_UP_HOURS have passed, then the
    # endpoint is marked failing and its agency's staff and OPERATOR_ALERT_EMAILS are mailed.
    webhook_poll_interval_s: float = Field(default=1.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    webhook_concurrency: int = Field(default=4, ge=1, le=64)
    webhook_batch: int = Field(default=20, ge=1, le=500)
    webhook_backoff_base_s: float = Field(default=10.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)
    webhook_give_up_hours: float = Field(default=24.0, gt=0)
    # A claimed delivery is another replica's to take after this (longer than a call lasts).
    webhook_lease_s: float = Field(default=120.0, gt=0)
    # After a rotation the old secret signs too (a second signature) for this long.
    webhook_secret_overlap_hours: float = Field(default=24.0, ge=0)
    webhook_max_per_agency: int = Field(default=10, ge=1, le=100)
    # Operators told when an agency's webhook endpoint starts failing (comma-separated).
    operator_alert_emails: str = ""
    # Polling (GET /v1/referrals?updated_since=...) answers changes older than this only, so a
    # change whose transaction commits a moment after a later one is not skipped by a cursor.
    poll_settle_s: float = Field(default=2.0, ge=0, le=60)

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
