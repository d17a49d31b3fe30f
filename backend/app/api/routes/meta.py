"""Route: what this server can run — path types, tasks and metrics, scope presets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from basin.meta import meta

router = APIRouter(tags=["meta"])


@router.get("/meta")
def get_meta() -> dict[str, Any]:
    """Path types (JSON schema, form slots, help, defaults), tasks and their metrics, scope presets."""
    return meta()
