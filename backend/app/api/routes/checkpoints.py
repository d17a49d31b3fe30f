"""Routes: the checkpoint registry — upload, register, list, inspect, rename/tag, delete.

Every ``{ref}`` accepts an id, a unique id prefix (≥8 hex characters) or a name.
Writes need the API token when ``BASIN_API_TOKEN`` is set; reads do not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from backend.app.api.deps import SettingsDep, StoreDep, WriteAuth
from backend.app.uploads import (
    RAW_BODY,
    clean_filename,
    created_or_existing,
    form_body,
    ingest_checkpoint,
    parse_tags,
    receive_form,
    receive_to_file,
    store_errors,
    strip_suffixes,
)
from basin.errors import CheckpointError

logger = logging.getLogger(__name__)

FORM_BODY = form_body("name", "config", "tags")

router = APIRouter(tags=["checkpoints"])


class CheckpointPublic(BaseModel):
    """A checkpoint's manifest as the API shows it."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    kind: str = "checkpoint"
    architecture: str | None = None
    model_type: str | None = None
    num_parameters: int
    num_tensors: int | None = None
    dtype: str
    format: str | None = None
    has_tokenizer: bool
    num_labels: int | None = None
    tags: dict[str, Any] = Field(default_factory=dict)
    created: str
    path: str
    weights: str
    config_dir: str
    size_bytes: int
    source: str
    base: str | None = None


class ParameterGroup(BaseModel):
    """Tensors and parameters under one module prefix."""

    name: str
    tensors: int
    parameters: int


class ParameterSummary(BaseModel):
    """Tensor count and parameter counts by top-level group (``bert``) and module (``bert.encoder``)."""

    tensors: int
    parameters: int
    groups: list[ParameterGroup]
    modules: list[ParameterGroup]


class CheckpointDetail(CheckpointPublic):
    """A manifest plus its parameter summary (``None`` with ``problem`` if the files are unreadable)."""

    parameters: ParameterSummary | None
    problem: str | None = None


class CheckpointRegister(BaseModel):
    """A model directory already on the server's disk."""

    path: str = Field(description="absolute path of a Hugging Face model directory on the server")
    name: str
    tags: dict[str, Any] | None = None
    copy_files: bool = Field(
        False, alias="copy", description="copy into the store instead of registering in place"
    )


class CheckpointUpdate(BaseModel):
    """Rename and/or merge tags (a ``null`` tag value removes the tag)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    tags: dict[str, Any] | None = None


@router.get("/checkpoints", response_model=list[CheckpointPublic])
def list_checkpoints(store: StoreDep) -> list[dict[str, Any]]:
    """List registered checkpoints, newest first."""
    return store.list_checkpoints()


@router.put(
    "/checkpoints",
    openapi_extra=RAW_BODY,
    response_model=CheckpointPublic,
    status_code=201,
    dependencies=[WriteAuth],
    responses={200: {"description": "already stored (same weights): the existing manifest"}},
)
async def upload_checkpoint(
    request: Request,
    response: Response,
    store: StoreDep,
    settings: SettingsDep,
    name: str = Query(..., description="name for the checkpoint"),
    config: str | None = Query(
        None, description="checkpoint whose config a bare .safetensors uses"
    ),
    tags: str | None = Query(None, description='JSON object, e.g. {"seed": 1, "step": 100}'),
) -> dict[str, Any]:
    """Upload a checkpoint as the raw body: a .zip / .tar.gz model directory or a .safetensors."""
    tag_dict = parse_tags(tags)
    with store.workspace() as ws:
        upload = ws / "upload"
        await receive_to_file(request, upload, settings.max_upload_bytes)
        with store_errors(not_found=False):
            added = await run_in_threadpool(
                ingest_checkpoint,
                store,
                upload,
                ws,
                name=name,
                config=config,
                tags=tag_dict,
                max_bytes=settings.max_upload_bytes,
            )
    return created_or_existing(response, added)


@router.post(
    "/checkpoints",
    openapi_extra=FORM_BODY,
    response_model=CheckpointPublic,
    status_code=201,
    dependencies=[WriteAuth],
    responses={200: {"description": "already stored (same weights): the existing manifest"}},
)
async def upload_checkpoint_form(
    request: Request, response: Response, store: StoreDep, settings: SettingsDep
) -> dict[str, Any]:
    """Upload a checkpoint as multipart form: field file, plus name, optional config and tags (JSON)."""
    with store.workspace() as ws:
        form = await receive_form(request, ws, settings.max_upload_bytes)
        if "file" not in form.files:
            raise HTTPException(
                status_code=422, detail="the form needs a 'file' field with the checkpoint"
            )
        filename, upload = form.files["file"]
        name = form.fields.get("name") or strip_suffixes(clean_filename(filename, "checkpoint"))
        tag_dict = parse_tags(form.fields.get("tags"))
        with store_errors(not_found=False):
            added = await run_in_threadpool(
                ingest_checkpoint,
                store,
                upload,
                ws,
                name=name,
                config=form.fields.get("config") or None,
                tags=tag_dict,
                max_bytes=settings.max_upload_bytes,
            )
    return created_or_existing(response, added)


@router.post(
    "/checkpoints/register",
    response_model=CheckpointPublic,
    status_code=201,
    dependencies=[WriteAuth],
    responses={200: {"description": "already stored (same weights): the existing manifest"}},
)
def register_checkpoint(
    body: CheckpointRegister, response: Response, store: StoreDep
) -> dict[str, Any]:
    """Register a model directory on the server's disk (in place by default; copy=true copies)."""
    path = Path(body.path).expanduser()
    if not path.is_absolute():
        raise HTTPException(status_code=422, detail=f"path must be absolute, got {body.path!r}")
    if not path.is_dir():
        raise HTTPException(status_code=422, detail=f"no directory at {body.path!r} on the server")
    mode = "copy" if body.copy_files else "register"
    with store_errors(not_found=False):
        added = store.import_checkpoint(path, name=body.name, tags=body.tags, mode=mode)
    return created_or_existing(response, added)


@router.get("/checkpoints/{ref}", response_model=CheckpointDetail)
def get_checkpoint(ref: str, store: StoreDep) -> dict[str, Any]:
    """Show a checkpoint's manifest and parameter summary (tensors, parameters per module)."""
    with store_errors():
        manifest = store.get_checkpoint(ref)
    try:
        manifest["parameters"] = store.checkpoint_summary(manifest["id"])
    except CheckpointError as e:  # e.g. a registered directory that was removed from disk
        logger.warning("checkpoint %s: %s", manifest["id"][:12], e)
        manifest["parameters"], manifest["problem"] = None, str(e)
    return manifest


@router.patch("/checkpoints/{ref}", response_model=CheckpointPublic, dependencies=[WriteAuth])
def update_checkpoint(ref: str, body: CheckpointUpdate, store: StoreDep) -> dict[str, Any]:
    """Rename a checkpoint and/or merge its tags (null removes a tag)."""
    with store_errors():
        return store.update_checkpoint(ref, name=body.name, tags=body.tags)


@router.delete("/checkpoints/{ref}", status_code=204, dependencies=[WriteAuth])
def delete_checkpoint(ref: str, store: StoreDep) -> Response:
    """Delete a checkpoint (a registered directory's own files are left untouched)."""
    with store_errors():
        store.delete_checkpoint(ref)
    return Response(status_code=204)
