from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings, secret_problem


class Settings(ServiceSettings):
    service_name: str = "notify"
    port: int = 8003
    database_url: str = "sqlite+aiosqlite:///./var/notify.db"
    smtp_url: str = "smtp://127.0.0.1:1025"
    mail_from: str = "Rujukan <noreply@rujukan.example>"
    # A delivery that keeps failing is given up (and reported) after this many attempts.
    mail_max_attempts: int = 8
    mail_poll_interval_s: float = 2.0
    # Sends recorded per transaction (CPU per mail: about 3 ms at 10, 6 ms at 1 in
    # bench/notify_rounds.py); also the most mails a crash between send and record mails twice.
    # 1 by default: a receiver should get one mail per proposal, even across a crash.
    mail_record_every: int = Field(default=1, ge=1)
    # Where receivers sign in (the proposal mail's link), how long that single-use link
    # works (long enough for a seat's hold), and how long the session it starts lasts.
    public_url: str = "http://127.0.0.1:8003"
    signin_code_hours: float = Field(default=24.0, gt=0)
    session_hours: float = Field(default=12.0, gt=0)
    # Shared with intake: signs the grants with which a receiver reads, at intake, the
    # personal data of a referral it accepted; and where intake answers.
    receiver_grant_secret: str = ""
    intake_public_url: str = "http://127.0.0.1:8001"
    receiver_grant_minutes: float = Field(default=10.0, gt=0)

    def development_values(self) -> list[str]:
        problems = super().development_values()
        if problem := secret_problem("RECEIVER_GRANT_SECRET", self.receiver_grant_secret):
            problems.append(problem)
        return problems
