"""Settings of the API and the workers: one pydantic-settings class, ``BASIN_`` prefix.

Returned by the cached :func:`get_settings`; the API injects it (tests override the
dependency instead of patching), the workers read it at start.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import ByteSize, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the API and the workers read from the environment.

    Tests build their own ``Settings(...)`` and override ``get_settings`` instead of patching.
    """

    model_config = SettingsConfigDict(env_prefix="BASIN_", env_file=".env", extra="ignore")

    store: Path = Path("models_store")
    redis_url: str = "redis://127.0.0.1:6379/0"
    api_token: str | None = None
    public_url: str = ""  # prefix for share links; "" = same origin as the request
    #: Host names the app answers (comma-separated; ``*`` = any), besides 127.0.0.1,
    #: localhost, [::1] and the host of ``public_url``: other Host headers get 400
    #: (defeats DNS rebinding).
    allowed_hosts: str = ""
    max_upload_bytes: int = 4 * 1024**3
    #: Largest JSON body (or any body of a non-upload API write), in bytes.
    max_json_bytes: int = 1024**2
    #: Largest body of a dashboard callback (``/_dash-update-component``: a run page sends
    #: its points and figures back as state), in bytes; every other route has one of the two
    #: caps above (the request guard, ``backend/app/security.py``).
    max_dashboard_body_bytes: int = 16 * 1024**2
    #: Most event streams (``GET /api/runs/{id}/events``) open at once; each holds one Redis
    #: connection of a shared pool while it waits. Beyond it: 503 with ``Retry-After``.
    max_streams: int = 64
    #: Longest run ``name`` in a spec, in characters (422 beyond it).
    max_name_length: int = 200
    # Caps on one run's spec, checked by the API before anything is queued:
    max_points: int = 10_000  # grid points of one run
    max_resolution: int = 201  # grid points along each axis of a plane
    max_examples: int = 10_000  # dataset rows evaluated per point
    max_length: int = 2048  # tokens per example
    max_batch_size: int = 512  # examples per forward pass
    max_checkpoints: int = 100  # checkpoints one path names (a trajectory's length)
    max_scope_length: int = 500  # characters of a scope regex
    max_generated_tokens: int = 200_000  # per point: samples per prompt × prompts × max new tokens
    # Caps on every kind of job (the job kernel, service.jobs.limits), besides the above:
    max_train_steps: int = 100_000  # training steps of one job that trains (a curve fit)
    max_tune_members: int = 64  # members of one tune family (the product of its axes)
    #: Wall-clock seconds one job held by a single worker (a curve fit) may run; past it the
    #: worker stops and the job ends failed (the reaper fails it if its worker is wedged).
    #: 0 = no limit. Runs are bounded per point instead (point_time_limit_s).
    job_time_limit_s: float = 6 * 3600.0
    lease_seconds: int = 300
    worker_device: str = "auto"
    worker_concurrency: int = 1
    #: Bytes of checkpoints a worker keeps resident between runs (LRU; ``BASIN_WORKER_CACHE_BYTES``,
    #: a number or a size such as ``8GiB``); a checkpoint that does not fit is read tensor by tensor.
    #: 0 = keep none. Default 4 GiB.
    worker_cache_bytes: ByteSize = ByteSize(4 * 2**30)
    task_queue: str = "basin"
    #: Seconds between the API's reaper passes (re-queue orphaned runs, store ended ones);
    #: 0 = no reaper in this process.
    reap_seconds: float = 1.0
    #: A queued run nobody drains while a worker is idle counts as lost after this long.
    lost_task_grace_seconds: float = 10.0
    #: Workers without the shared store volume: fetch missing checkpoints/datasets from this
    #: API (``http://host:8000``) by id and check their sha256. "" = the store has everything.
    api_url: str = ""
    #: Server folders that ``POST /api/checkpoints/register`` may read from, separated by
    #: ``os.pathsep`` (``:``) in the environment. Empty (the default) = registration off.
    register_roots: Annotated[list[Path], NoDecode] = []
    #: The store's total quota: stored checkpoints and datasets plus uploads in progress.
    max_store_bytes: int = 64 * 1024**3
    #: An uploaded archive may hold at most this many members (files and folders).
    max_archive_members: int = 10_000
    #: Largest tar long-name / long-link / pax header, and zip central directory per member.
    max_archive_header_bytes: int = 64 * 1024

    #: A point evaluated for longer than this fails its run ("point 12 exceeded the
    #: per-point time limit of 600 s"): checked by the worker between batches and by the
    #: reaper from the point's first lease (which holds even when the point's code holds
    #: the GIL and the worker cannot check). 0 = no limit.
    point_time_limit_s: float = 1800.0
    #: Celery's soft / hard time limits of one drain task (a task drains a whole run).
    #: Only pools with a parent process enforce them (prefork); Basin's workers use the solo
    #: pool, where the per-point limit above and ``basin up``'s supervisor do the job.
    task_soft_time_limit_s: float = 24 * 3600.0
    task_time_limit_s: float = 24 * 3600.0 + 300.0
    #: Once an ended run's document is in the store, its Redis keys (hash, stream, todo…)
    #: expire after this many seconds; reads then come from the document. 0 = never.
    finished_run_ttl_s: int = 24 * 3600
    #: Entries of the cross-run point cache expire after this many seconds. 0 = never.
    point_cache_ttl_s: int = 7 * 24 * 3600

    @field_validator("register_roots", mode="before")
    @classmethod
    def _split_roots(cls, v: object) -> object:
        if isinstance(v, str):
            return [p for p in v.split(os.pathsep) if p.strip()]
        return v

    def host_allow_list(self) -> list[str]:
        """Host names (lower case, no port) the app answers; ``["*"]`` when any is allowed."""
        from urllib.parse import urlsplit

        extra = [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]
        if "*" in extra:
            return ["*"]
        hosts = ["127.0.0.1", "localhost", "[::1]"]
        public = urlsplit(self.public_url.strip()).hostname if self.public_url.strip() else None
        if public:
            hosts.append(f"[{public}]" if ":" in public else public)
        return list(dict.fromkeys(hosts + extra))


@lru_cache
def get_settings() -> Settings:
    return Settings()
