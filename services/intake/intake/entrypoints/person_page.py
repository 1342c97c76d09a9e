"""Pages (server-rendered HTML): only translate between forms and the service layer."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
