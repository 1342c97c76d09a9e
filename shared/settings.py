"""Settings every service reads from the environment (one place, pydantic-settings).

The same variable names are used by `compose.yaml`, the embedded runner (`make run`) and
the tests: REDIS_URL, DATABASE_URL, SMTP_URL, PORT, ...
"""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What all three services share. Each service subclasses it with its own defaults."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    service_name: str = "rujukan"
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str = "redis://127.0.0.1:6380/0"
    database_url: str = "sqlite+aiosqlite:///./var/rujukan.db"
    log_level: str = "INFO"
    # HTTP worker processes of a service that supports them (intake): replicas on one port.
    web_concurrency: int = Field(default=1, ge=1, le=64)
    # A stream consumer's name must be unique per process so that replicas in one group
    # never take each other's pending entries; hostname + pid is unique on a host and in
    # a container.
    consumer_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Batch size of one XREADGROUP call, and how long it blocks waiting for entries.
    stream_batch: int = 100
    stream_block_ms: int = 1000
    # Entries pending longer than this on a consumer are taken over by another (XAUTOCLAIM).
    reclaim_idle_ms: int = 30_000
    # After this many deliveries an entry that still fails goes to the dead-letter stream.
    max_deliveries: int = 5
    # How often streams are trimmed below what every group acknowledged (one replica a
    # period), and after how long a consumer with nothing pending is forgotten.
    stream_trim_interval_s: float = 60.0
    consumer_forget_after_s: float = 3600.0
    # The outbox relay publishes right after each commit; this poll is only the safety net
    # for rows a crash left unsent.
    outbox_poll_interval_s: float = 1.0
    # Seed the demo directory / agency at start-up (the embedded default turns it on).
    seed_demo: bool = False
    # Credential of the operator endpoints (directory admin, deliveries, dead letters).
    admin_api_key: str | None = None
    # Operators, each with a role and a key of its own: "name:role:sha256-of-key,..."
    # (shared/operators.py; `rujukan operators key NAME ROLE` prints an entry).
    operator_keys: str = ""
    # Failed authentications (401, 403) a client address or a credential may have in a
    # minute before it is answered 429 (shared.boundary); counted in Redis. 0: no limit.
    auth_failures_per_minute: int = Field(default=20, ge=0)
