"""Operators' pages shared by the three services."""

from __future__ import annotations

from fastapi import APIRouter


def operator_pages(service: str) -> APIRouter:
    """The operator pages every service serves under /operator/{service}/."""
    return APIRouter(include_in_schema=False)
