from __future__ import annotations

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "matching"
    port: int = 8002
    database_url: str = "sqlite+aiosqlite:///./var/matching.db"
    # How long a proposal holds a seat before it is released to the next candidate.
    hold_hours_routine: float = 72.0
    hold_hours_urgent: float = 4.0
