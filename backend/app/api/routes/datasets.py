"""Routes: the dataset registry — upload, list, inspect, preview, rename, delete.

Datasets are ``.jsonl`` / ``.csv`` / ``.tsv`` files; an upload is parsed whole and
refused (422, naming the columns found) unless its columns serve a task:
classification needs ``text`` + ``label``, causal_lm ``text``, seq2seq ``source`` +
``target``. Every ``{ref}`` accepts an id, a unique id prefix (≥8) or a name.
``GET /datasets/{ref}/file`` downloads the file (for workers without the store volume).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from backend.app.api.deps import SettingsDep, StoreDep, WriteAuth
from backend.app.uploads import (
    RAW_BODY,
    UploadCap,
    clean_filename,
    created_or_existing,
    form_body,
    ingest_dataset,
    receive_form,
    receive_to_file,
)
from basin.errors import CheckpointError, DatasetError
from service.errors import FilesUnavailable, InvalidUpload
from service.store import open_regular

logger = logging.getLogger(__name__)

FORM_BODY = form_body("name", "task")
#: Header carrying the dataset's store id (sha256 of the file) on ``/file`` downloads.
ID_HEADER = "X-Basin-Dataset-Id"
_MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv", "tsv": "text/tab-separated-values"}

router = APIRouter(tags=["datasets"])


class DatasetPublic(BaseModel):
    """A dataset's manifest as the API shows it."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    kind: str = "dataset"
    format: str
    columns: list[str]
    rows: int
    tasks: list[str]
    task: str | None = None
    path: str
    size_bytes: int
    created: str


class DatasetPreview(BaseModel):
    """The first rows of a dataset."""

    id: str
    name: str
    columns: list[str]
    rows: list[dict[str, Any]]
    total: int


class DatasetUpdate(BaseModel):
    """Rename a dataset and/or set its default task."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    task: str | None = None


@router.get("/datasets", response_model=list[DatasetPublic])
def list_datasets(store: StoreDep) -> list[dict[str, Any]]:
    """List datasets, newest first."""
    return store.list_datasets()


@router.put(
    "/datasets",
    openapi_extra=RAW_BODY,
    response_model=DatasetPublic,
    status_code=201,
    dependencies=[WriteAuth],
    responses={200: {"description": "already stored (same bytes): the existing manifest"}},
)
async def upload_dataset(
    request: Request,
    response: Response,
    store: StoreDep,
    settings: SettingsDep,
    name: str = Query(..., description="name ending in .jsonl, .csv or .tsv (tells the format)"),
    task: str | None = Query(None, description="default task; must be one the columns allow"),
) -> dict[str, Any]:
    """Upload a dataset as the raw body (.jsonl, .csv or .tsv, told by the name)."""
    with store.workspace() as ws:
        upload = ws / "upload"
        cap = await run_in_threadpool(UploadCap.of, store, settings)
        await receive_to_file(request, upload, cap)
        added = await run_in_threadpool(ingest_dataset, store, upload, name=name, task=task)
    return created_or_existing(response, added)


@router.post(
    "/datasets",
    openapi_extra=FORM_BODY,
    response_model=DatasetPublic,
    status_code=201,
    dependencies=[WriteAuth],
    responses={200: {"description": "already stored (same bytes): the existing manifest"}},
)
async def upload_dataset_form(
    request: Request, response: Response, store: StoreDep, settings: SettingsDep
) -> dict[str, Any]:
    """Upload a dataset as multipart form: field file, optional name (default: file name) and task."""
    with store.workspace() as ws:
        cap = await run_in_threadpool(UploadCap.of, store, settings)
        form = await receive_form(request, ws, cap)
        if "file" not in form.files:
            raise InvalidUpload("the form needs a 'file' field with the dataset")
        filename, upload = form.files["file"]
        name = form.fields.get("name") or clean_filename(filename, "")
        task = form.fields.get("task") or None
        added = await run_in_threadpool(ingest_dataset, store, upload, name=name, task=task)
    return created_or_existing(response, added)


@router.get("/datasets/{ref}", response_model=DatasetPublic)
def get_dataset(ref: str, store: StoreDep) -> dict[str, Any]:
    """Show a dataset's manifest: format, columns, row count, tasks it allows."""
    return store.get_dataset(ref)


@router.get("/datasets/{ref}/preview", response_model=DatasetPreview)
def preview_dataset(
    ref: str, store: StoreDep, n: int = Query(10, ge=1, le=1000, description="rows to show")
) -> dict[str, Any]:
    """Show the first n rows of a dataset."""
    return store.preview_dataset(ref, n=n)


@router.get(
    "/datasets/{ref}/file",
    response_class=StreamingResponse,
    responses={
        200: {"description": f"the dataset file; its sha256 (the id) is in {ID_HEADER}"},
        404: {"description": "no such dataset"},
    },
)
def download_dataset(ref: str, store: StoreDep) -> StreamingResponse:
    """Download a dataset's file as stored (.jsonl / .csv / .tsv); the id is in X-Basin-Dataset-Id.

    The file is opened without following links (a regular file or nothing)."""
    m = store.get_dataset(ref)
    path = Path(m["path"])
    try:
        fh = os.fdopen(open_regular(path.parent, path.name), "rb")
    except (OSError, DatasetError, CheckpointError) as e:
        raise FilesUnavailable(f"dataset file unreadable on the server: {path.name}: {e}") from None
    size = os.fstat(fh.fileno()).st_size
    fmt = m["format"]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", m["name"])[:100]
    if not name.lower().endswith("." + fmt):
        name = f"{name}.{fmt}"

    def chunks() -> Iterator[bytes]:
        with fh:
            while data := fh.read(1 << 20):
                yield data

    headers = {
        ID_HEADER: m["id"],
        "ETag": f'"{m["id"]}"',
        "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{name}"',
    }
    return StreamingResponse(
        chunks(), media_type=_MEDIA.get(fmt, "application/octet-stream"), headers=headers
    )


@router.patch("/datasets/{ref}", response_model=DatasetPublic, dependencies=[WriteAuth])
def update_dataset(ref: str, body: DatasetUpdate, store: StoreDep) -> dict[str, Any]:
    """Rename a dataset and/or set its default task."""
    return store.update_dataset(ref, name=body.name, task=body.task)


@router.delete("/datasets/{ref}", status_code=204, dependencies=[WriteAuth])
def delete_dataset(ref: str, store: StoreDep) -> Response:
    """Delete a dataset and its file."""
    store.delete_dataset(ref)
    return Response(status_code=204)
