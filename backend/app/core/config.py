"""Service settings: one pydantic-settings class, ``BASIN_`` prefix, injected via ``get_settings``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the API and the workers read from the environment.

    Tests build their own ``Settings(...)`` and override ``get_settings`` instead of patching.
    """

    model_config = SettingsConfigDict(env_prefix="BASIN_", env_file=".env", extra="ignore")

    store: Path = Path("models_store")
    redis_url: str = "redis://127.0.0.1:6379/0"
    api_token: str | None = None
    public_url: str = ""  # prefix for share links; "" = same origin as the request
    max_upload_bytes: int = 4 * 1024**3
    max_points: int = 10_000
    lease_seconds: int = 300
    worker_device: str = "auto"
    worker_concurrency: int = 1
    task_queue: str = "basin"
    #: Workers without the shared store volume: fetch missing checkpoints/datasets from this
    #: API (``http://host:8000``) by id and check their sha256. "" = the store has everything.
    api_url: str = ""


@lru_cache
def get_settings() -> Settings:
    return Settings()
