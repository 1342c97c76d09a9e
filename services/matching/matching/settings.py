from __future__ import annotations

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "matching"
    port: int = 8002
    database_url: str = "sqlite+aiosqlite:///./var/matching.db"
    # The one address people open (the proxy's): an https address marks operators' page
    # session cookies Secure.
    public_url: str = "http://127.0.0.1:8002"
    # How long a proposal holds a seat before it is released to the next candidate.
    hold_hours_routine: float = 72.0
    hold_hours_urgent: float = 4.0
    # A hold is released this long after its deadline, so that an answer given in time
    # at the inbox still arrives first.
    hold_grace_s: float = 120.0
    # How often each replica looks for expired holds, and retries the waitlist even when
    # no capacity was freed in this process (freed by another replica, or lost in a crash).
    hold_expiry_interval_s: float = 30.0
    waitlist_interval_s: float = 60.0
    # A crisis (or risk-flagged) proposal not accepted within this many minutes escalates to
    # the next crisis-capable professional; how often each replica looks for one.
    crisis_ack_minutes: float = 15.0
    escalation_interval_s: float = 15.0
    # How often each replica looks for a directory change whose rematch pass is not done
    # (the process that changed the directory runs it at once).
    rematch_interval_s: float = 5.0
    # The largest directory import (HSDS JSON or CSV) accepted, in bytes (413 above it).
    directory_import_max_bytes: int = 20 * 1024 * 1024
