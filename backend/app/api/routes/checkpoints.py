"""Routes: the checkpoint registry — upload, register, list, inspect, rename/tag, delete,
download (``GET /checkpoints/{ref}/archive``: a ``.tar`` for workers without the store volume).

Every ``{ref}`` accepts an id, a unique id prefix (≥8 hex characters) or a name.
Writes need the API token when ``BASIN_API_TOKEN`` is set; reads do not.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from backend.app.api.deps import SettingsDep, StoreDep, WriteAuth
from backend.app.api.errors import carried_references
from backend.app.uploads import (
    RAW_BODY,
    UploadCap,
    archive_limits,
    clean_filename,
    created_or_existing,
    form_body,
    ingest_checkpoint,
    parse_tags,
    receive_form,
    receive_to_file,
    strip_suffixes,
)
from basin.adapters import adapter_weight_file
from basin.checkpoints import weight_files
from basin.errors import CheckpointError
from basin.resolve import CheckpointSource
from service.errors import FilesUnavailable, InvalidUpload, PayloadTooLarge, QuotaExceeded
from service.store import open_regular

logger = logging.getLogger(__name__)

FORM_BODY = form_body("name", "config", "tags", "base")
#: Header carrying the checkpoint's store id (sha256) on ``/archive`` downloads.
ID_HEADER = "X-Basin-Checkpoint-Id"
#: Besides the weights, the files of a model directory an archive carries (config, tokenizer).
_SIDE_SUFFIXES = (".json", ".txt", ".model")
_BLOCK = tarfile.BLOCKSIZE

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
    base: str | None = Field(
        None, description="base checkpoint of a PEFT adapter folder (default: the one its "
        "base_model_name_or_path names)"
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
    base: str | None = Query(
        None, description="base checkpoint of a PEFT adapter archive (default: the one its "
        "base_model_name_or_path names)"
    ),
) -> dict[str, Any]:
    """Upload a checkpoint as the raw body: a .zip / .tar.gz model directory or PEFT adapter
    folder, or a .safetensors."""
    tag_dict = parse_tags(tags)
    with store.workspace() as ws:
        upload = ws / "upload"
        cap = await run_in_threadpool(UploadCap.of, store, settings)
        await receive_to_file(request, upload, cap)
        limits = await run_in_threadpool(archive_limits, store, settings)
        with carried_references():  # config= names a checkpoint
            added = await run_in_threadpool(
                ingest_checkpoint,
                store,
                upload,
                ws,
                name=name,
                config=config,
                tags=tag_dict,
                limits=limits,
                base=base,
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
    """Upload a checkpoint as multipart form: field file, plus name, optional config, tags (JSON)
    and base (the base checkpoint of a PEFT adapter archive)."""
    with store.workspace() as ws:
        cap = await run_in_threadpool(UploadCap.of, store, settings)
        form = await receive_form(request, ws, cap)
        if "file" not in form.files:
            raise InvalidUpload("the form needs a 'file' field with the checkpoint")
        limits = await run_in_threadpool(archive_limits, store, settings)
        filename, upload = form.files["file"]
        name = form.fields.get("name") or strip_suffixes(clean_filename(filename, "checkpoint"))
        tag_dict = parse_tags(form.fields.get("tags"))
        with carried_references():  # config= names a checkpoint
            added = await run_in_threadpool(
                ingest_checkpoint,
                store,
                upload,
                ws,
                name=name,
                config=form.fields.get("config") or None,
                tags=tag_dict,
                limits=limits,
                base=form.fields.get("base") or None,
            )
    return created_or_existing(response, added)


@router.post(
    "/checkpoints/register",
    response_model=CheckpointPublic,
    status_code=201,
    dependencies=[WriteAuth],
    responses={
        200: {"description": "already stored (same weights): the existing manifest"},
        403: {"description": "registration is off: no BASIN_REGISTER_ROOTS configured"},
    },
)
def register_checkpoint(
    body: CheckpointRegister, response: Response, store: StoreDep, settings: SettingsDep
) -> dict[str, Any]:
    """Register a model directory on the server's disk (in place by default; copy=true copies).

    Off unless the server lists the folders it may read (``BASIN_REGISTER_ROOTS``): 403.
    The path is resolved and must lie inside one of them; a folder holding a link, a
    device, a FIFO or a socket anywhere is refused before anything is read or copied.
    """
    if not settings.register_roots:
        raise HTTPException(
            status_code=403,
            detail="registering folders on the server is off: its administrator can allow "
            "folders with BASIN_REGISTER_ROOTS; upload the checkpoint instead",
        )
    path = Path(body.path).expanduser()
    if not path.is_absolute():
        raise InvalidUpload(f"path must be absolute, got {body.path!r}")
    mode = "copy" if body.copy_files else "register"
    if body.base and not (path / "adapter_config.json").is_file():
        raise InvalidUpload("base applies only to a PEFT adapter folder (adapter_config.json)")
    try:
        with carried_references():  # base names a checkpoint
            added = store.import_checkpoint(
                path,
                name=body.name,
                tags=body.tags,
                mode=mode,
                base=body.base,
                roots=settings.register_roots,
                quota=settings.max_store_bytes,
            )
    except QuotaExceeded as e:
        raise PayloadTooLarge(str(e)) from None
    return created_or_existing(response, added)


@router.get("/checkpoints/{ref}", response_model=CheckpointDetail)
def get_checkpoint(ref: str, store: StoreDep) -> dict[str, Any]:
    """Show a checkpoint's manifest and parameter summary (tensors, parameters per module)."""
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
    return store.update_checkpoint(ref, name=body.name, tags=body.tags)


@router.delete("/checkpoints/{ref}", status_code=204, dependencies=[WriteAuth])
def delete_checkpoint(ref: str, store: StoreDep) -> Response:
    """Delete a checkpoint (a registered directory's own files are left untouched)."""
    store.delete_checkpoint(ref)
    return Response(status_code=204)


def archive_members(manifest: dict[str, Any]) -> tuple[Path, list[str]]:
    """``(folder, names)``: the files a checkpoint's archive carries — its weight files (plus
    a shard index) and the top-level ``.json`` / ``.txt`` / ``.model`` files (config,
    generation config, tokenizer), never ``manifest.json`` nor anything else a registered
    directory may hold. Only names in the manifest's validated file list (when it has one)
    are served, and :func:`tar_stream` opens them without following links."""
    root = Path(manifest["config_dir"])
    if manifest.get("adapter"):  # a PEFT adapter: its config and weight file
        weights = [adapter_weight_file(root)]
    else:
        src = CheckpointSource(weights=Path(manifest["weights"]), config_dir=root, id=manifest["id"])
        _, weights = weight_files(src)
    listed = manifest.get("files")
    picked = {p.name for p in weights}
    if isinstance(listed, dict):  # the files validated when it was added
        if not picked <= set(listed):
            raise CheckpointError("its weight files changed since the checkpoint was added")
        candidates = [n for n in listed if "/" not in n]
    else:  # added before file lists were kept: what is there now, links left out
        candidates = [p.name for p in root.iterdir() if p.is_file() and not p.is_symlink()]
    for name in candidates:
        if name != "manifest.json" and Path(name).suffix in _SIDE_SUFFIXES:
            picked.add(name)
    return root, sorted(picked)


def _tar_header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, int(mtime), tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT)


def tar_stream(root: Path, names: list[str]) -> tuple[int, Iterator[bytes]]:
    """``(length, chunks)`` of an uncompressed POSIX tar of ``root``'s files ``names`` (flat
    names), streamed in 1 MiB reads: ``length = Σ(header + size rounded up to 512) + 1024``.

    Every file is opened up front with :func:`~service.store.open_regular` (no link
    followed, regular files only: :class:`~service.store.UnsafeSource` otherwise)."""
    entries = []
    try:
        for name in names:
            fh = os.fdopen(open_regular(root, name), "rb")
            entries.append(fh)
    except BaseException:
        for fh in entries:
            fh.close()
        raise
    parts = []
    for name, fh in zip(names, entries, strict=True):
        st = os.fstat(fh.fileno())
        parts.append((name, fh, _tar_header(name, st.st_size, st.st_mtime), st.st_size))
    length = sum(len(h) + -(-n // _BLOCK) * _BLOCK for _, _, h, n in parts) + 2 * _BLOCK

    def chunks() -> Iterator[bytes]:
        try:
            for name, fh, header, size in parts:
                yield header
                left = size
                while left > 0:
                    data = fh.read(min(left, 1 << 20))
                    if not data:  # the file shrank since the header was written: cut the stream
                        raise OSError(f"{name} changed while it was being sent")
                    left -= len(data)
                    yield data
                if size % _BLOCK:
                    yield b"\0" * (_BLOCK - size % _BLOCK)
            yield b"\0" * (2 * _BLOCK)
        finally:
            for _, fh, _, _ in parts:
                fh.close()

    return length, chunks()


@router.get(
    "/checkpoints/{ref}/archive",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-tar": {}},
            "description": f"a .tar of the model directory; the id is in {ID_HEADER}",
        },
        404: {"description": "no such checkpoint"},
    },
)
def download_checkpoint(ref: str, store: StoreDep) -> StreamingResponse:
    """Download a checkpoint as an uncompressed .tar (weights, config, tokenizer files).

    The store id (sha256 over the weights and config.json) is sent in ``X-Basin-Checkpoint-Id``
    so the receiver can check what it got. No token needed (a read).
    """
    manifest = store.get_checkpoint(ref)
    try:
        length, body = tar_stream(*archive_members(manifest))
    except (CheckpointError, OSError) as e:  # e.g. a registered directory removed from disk
        raise FilesUnavailable(f"checkpoint files unreadable: {e}") from e
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", manifest["name"])[:100] or manifest["id"][:12]
    headers = {
        ID_HEADER: manifest["id"],
        "ETag": f'"{manifest["id"]}"',
        "Content-Length": str(length),
        "Content-Disposition": f'attachment; filename="{safe}.tar"',
    }
    return StreamingResponse(body, media_type="application/x-tar", headers=headers)
