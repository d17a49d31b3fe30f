"""Storing a Hub checkpoint: :func:`basin.hub.fetch` into a store workspace, then the store's
own import (validation, content id, dedup), tagged with where it came from.

A checkpoint fetched from the Hub is stored like an upload (``source: "hub"`` in its
manifest) with tags ``hub_repo`` (``org/name``), ``hub_revision`` (the commit sha the Hub
answered for the revision asked: the pin) and ``hub_ref`` (the revision as asked: ``main``, a
tag, a sha). It is fetched once: before any file is downloaded, a stored checkpoint with the
same repository and commit is found and returned (:func:`find_hub_checkpoint`). Bytes are
counted against ``BASIN_MAX_UPLOAD_BYTES`` and what the store's quota has left before the
download starts. Any failure (the Hub's errors, a hash mismatch, the store's validation)
removes the workspace: nothing is stored.
"""

from __future__ import annotations

import logging
from typing import Any

from basin.hub import Fetched, HubRef, Progress, fetch, parse_hub_ref
from service.errors import CheckpointNotFound
from service.store import Added, Store

logger = logging.getLogger(__name__)


def find_hub_checkpoint(store: Store, repo: str, revision: str) -> dict[str, Any] | None:
    """The newest stored checkpoint fetched from ``repo`` at ``revision``
    (:meth:`service.store.Store.find_hub_checkpoint`); ``None`` when there is none."""
    return store.find_hub_checkpoint(repo, revision)


def resolve_hub_ref(store: Store, ref: str) -> dict[str, Any]:
    """The manifest of the stored checkpoint a spec's ``hf:org/name@rev`` names;
    :class:`CheckpointNotFound` saying how to fetch it if none (the store's own lookup)."""
    return store.get_checkpoint(ref if ref.startswith("hf:") else f"hf:{ref}")


def default_name(hub: HubRef, commit: str) -> str:
    """``<name>@<commit[:8]>``: the repository's name and the pinned commit."""
    return f"{hub.repo.split('/')[-1]}@{commit[:8]}"


def import_from_hub(
    store: Store,
    ref: str,
    *,
    name: str | None = None,
    tags: dict[str, Any] | None = None,
    allow_bin: bool = False,
    max_bytes: int | None = None,
    quota: int | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    on_progress: Progress | None = None,
) -> tuple[Added, str]:
    """Fetch Hub checkpoint ``ref`` into ``store`` once; returns ``(Added, commit sha)``
    (``created=False`` when it was stored already: by this repo and commit, or the same
    content by another way, whose tags then gain the Hub's)."""
    hub = parse_hub_ref(ref)
    existing: dict[str, Any] = {}

    def known(commit: str) -> bool:
        m = find_hub_checkpoint(store, hub.repo, commit)
        if m is not None and (m.get("tags") or {}).get("hub_revision") == commit:
            existing["m"], existing["commit"] = m, commit
            return True
        return False

    if len(hub.revision) == 40:  # a pinned commit already stored: no network at all
        m = find_hub_checkpoint(store, hub.repo, hub.revision)
        if m is not None and (m.get("tags") or {}).get("hub_revision") == hub.revision.lower():
            return Added(m, created=False), hub.revision.lower()
    cap = max_bytes
    free = store.free_bytes(quota)
    if free is not None:
        cap = free if cap is None else min(cap, free)
    with store.workspace() as ws:
        got: Fetched | None = fetch(
            hub,
            ws / "ckpt",
            endpoint=endpoint,
            token=token,
            allow_bin=allow_bin,
            max_bytes=cap,
            on_progress=on_progress,
            on_commit=known,
        )
        if got is None:
            logger.info(
                "%s at %s is already stored as %s",
                hub,
                existing["commit"][:12],
                existing["m"]["id"][:12],
            )
            return Added(existing["m"], created=False), existing["commit"]
        all_tags = {**(tags or {}), **got.tags()}
        added = store.import_checkpoint(
            got.folder,
            name=name or default_name(hub, got.commit),
            tags=all_tags,
            mode="move",
            source="hub",
        )
    # the same content came another way first (an upload): note the Hub's origin on it
    if not added.created and (added.manifest.get("tags") or {}).get("hub_repo") is None:
        try:
            m = store.update_checkpoint(added.manifest["id"], tags=got.tags())
            added = Added(m, created=False)
        except CheckpointNotFound:  # deleted meanwhile
            pass
    return added, got.commit


__all__ = ["default_name", "find_hub_checkpoint", "import_from_hub", "resolve_hub_ref"]
