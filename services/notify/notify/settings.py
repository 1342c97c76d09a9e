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

    # A routine proposal's one reminder, this long before its hold runs out (0: none).
    reminder_before_hours: float = Field(default=12.0, ge=0)
    # Operators on duty, told when a crisis proposal escalates: mail (comma-separated
    # addresses) and a webhook signed per Standard Webhooks 1.0 with its secret (whsec_...).
    operator_alert_emails: str = ""
    operator_alert_webhook_url: str = ""
    operator_alert_webhook_secret: str = ""
    # Receivers' webhooks (the directory's contact webhook): each receiver's signing secret
    # is derived from this key and mailed to the receiver once (empty: derived from
    # RECEIVER_GRANT_SECRET, under a label of its own).
    receiver_webhook_key: str = ""
    # SMS and WhatsApp gateways (a provider's HTTP API; devtools/fake_gateway.py in development).
    sms_gateway_url: str = ""
    sms_gateway_key: str = ""
    whatsapp_gateway_url: str = ""
    whatsapp_gateway_key: str = ""

    @property
    def operator_emails(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.operator_alert_emails.split(",") if a.strip())

    @property
    def webhook_key(self) -> str:
        return self.receiver_webhook_key or "receiver-webhooks:" + self.receiver_grant_secret

    def development_values(self) -> list[str]:
        problems = super().development_values()
        if problem := secret_problem("RECEIVER_GRANT_SECRET", self.receiver_grant_secret):
            problems.append(problem)
        if self.receiver_webhook_key and (
                problem := secret_problem("RECEIVER_WEBHOOK_KEY", self.receiver_webhook_key)):
            problems.append(problem)
        if self.operator_alert_webhook_url and not self.operator_alert_webhook_secret.startswith("whsec_"):
            problems.append("OPERATOR_ALERT_WEBHOOK_SECRET must be a whsec_ secret when "
                            "OPERATOR_ALERT_WEBHOOK_URL is set")
        return problems
