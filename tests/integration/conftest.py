"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.matching_kit import World


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    """Matching's service layer on a fresh database of each kind (a test module may override it)."""
    w = await World(database_url).start()
    try:
        yield w
    finally:
        await w.close()
