"""Checkpoints by Hugging Face Hub id: ``org/name@revision`` fetched once with ``huggingface_hub``.

A reference is ``org/name`` or ``org/name@revision`` (a branch, a tag or a commit sha; no
revision = ``main``), optionally written ``hf:org/name@revision`` (the form a run spec uses).
:func:`fetch` downloads one model repository into a folder:

1. the repository's info at that revision (``GET {endpoint}/api/models/{repo}/revision/{rev}``
   with its files' metadata) gives the **commit sha** the revision points at; every file is
   then downloaded *at that commit* (``hf_hub_download(revision=sha)``), so a branch that
   moves during the download cannot mix two commits;
2. the files taken: ``config.json``, the tokenizer and generation config files, and the
   weights — **safetensors only** (``model.safetensors``, or a sharded
   ``model.safetensors.index.json`` with its shards; a PEFT adapter's
   ``adapter_config.json`` + ``adapter_model.safetensors``). Nothing else (no ``.bin``, no
   code, no other folders) is downloaded;
3. every file is checked against the Hub's own hash before it is kept: an LFS file's
   ``sha256`` (the ``lfs.sha256`` of the info, which is also its ``X-Linked-Etag``), a small
   file's git blob id (``sha1("blob <size>\\0" + bytes)``), and its size; where the info
   has no hashes (a mirror without ``blobs``), the file's ``ETag`` at the commit gives them.
   A mismatch, or a file with no hash at all, refuses the whole download
   (:class:`HubHashMismatch`);
4. a repository with no safetensors weights but a ``pytorch_model.bin`` (a pickle) is
   refused (:class:`HubNoSafetensors`) unless ``allow_bin``: then the ``.bin`` is downloaded,
   hash-checked, read with torch's weights-only loader (:func:`basin.formats.load_bin`: the
   restricted unpickler that never runs code; a pickle with code is refused) and written as
   ``model.safetensors``; the folder holds no pickle.

The endpoint is ``HF_ENDPOINT`` (default ``https://huggingface.co``) and the token ``HF_TOKEN``
(else the one ``huggingface_hub`` has saved), read when :func:`fetch` is called. Basin's
processes run with ``HF_HUB_OFFLINE=1`` (transformers must never reach the network while
loading a model); a fetch is the one deliberate download, so it lifts that switch for its own
requests only (:func:`_online`).

The core of the store's Hub imports (:mod:`service.hub`) and of the CLI's ``hf:`` references
(:func:`snapshot`, in :class:`basin.resolve.FileResolver`). No web or queue code here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basin.errors import CheckpointError

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
#: The prefix of a Hub reference in a run spec.
HF_PREFIX = "hf:"
_REPO_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REV_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
#: Besides the weights, the files of a model repository a fetch takes (top level only).
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "adapter_config.json",
)
_SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
_PICKLE = ("pytorch_model.bin", "adapter_model.bin")


class HubError(CheckpointError):
    """A Hub fetch failed: unknown repository or revision, no access, network, bad files."""


class HubNotFound(HubError):
    """No such repository or revision (or a private one without a token that may read it)."""


class HubUnreachable(HubError):
    """The endpoint cannot be reached (network down, wrong ``HF_ENDPOINT``)."""


class HubHashMismatch(HubError):
    """A downloaded file does not match the hash the Hub gives for it."""


class HubNoSafetensors(HubError):
    """The repository has no safetensors weights (only a pickle, or no weights at all)."""


class HubTooLarge(HubError):
    """The files to download exceed the byte cap given."""


@dataclass(frozen=True)
class HubRef:
    """``repo`` (``org/name``) and ``revision`` (what was asked: a branch, tag or sha)."""

    repo: str
    revision: str = "main"

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision}"


def is_hub_ref(ref: str) -> bool:
    """Whether a spec reference names a Hub checkpoint (``hf:org/name[@rev]``)."""
    return isinstance(ref, str) and ref.startswith(HF_PREFIX)


def parse_hub_ref(ref: str) -> HubRef:
    """``org/name``, ``org/name@rev`` or ``hf:org/name@rev`` → :class:`HubRef`; a malformed one
    is a :class:`HubError` naming the form expected."""
    text = (ref or "").strip()
    text = text.removeprefix(HF_PREFIX)
    repo, _, rev = text.partition("@")
    rev = rev or "main"
    if not _REPO_RE.match(repo) or ".." in repo or repo.endswith((".git", ".")):
        raise HubError(
            f"{ref!r} is not a Hub model id: write org/name or org/name@revision "
            "(e.g. prajjwal1/bert-tiny@main, or a commit sha after the @)"
        )
    if not _REV_RE.match(rev) or ".." in rev or "//" in rev:
        raise HubError(
            f"{rev!r} is not a valid revision of {repo}: a branch, a tag or a commit sha"
        )
    return HubRef(repo, rev)


def hub_settings(endpoint: str | None = None, token: str | None = None) -> tuple[str, str | None]:
    """``(endpoint, token)``: the arguments, else ``HF_ENDPOINT`` / ``HF_TOKEN`` now."""
    ep = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    tok = token if token is not None else (os.environ.get("HF_TOKEN") or None)
    return ep, tok


_OFFLINE_GUARD = threading.RLock()


@contextlib.contextmanager
def _online() -> Iterator[None]:
    """Lift ``huggingface_hub``'s offline switch (``HF_HUB_OFFLINE``, read at its import) for
    this fetch's requests; restored after (one fetch at a time per process)."""
    from huggingface_hub import constants

    with _OFFLINE_GUARD:
        old = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = False
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = old


@dataclass
class HubFile:
    """One file to download: its name, size, and the Hub's hash of it."""

    name: str
    size: int
    sha256: str | None = None  # LFS files
    blob_id: str | None = None  # git blob sha1 (small files)


@dataclass
class Fetched:
    """What :func:`fetch` downloaded: the commit it pinned and the files (name → sha256)."""

    ref: HubRef
    commit: str
    folder: Path
    files: dict[str, str] = field(default_factory=dict)
    converted_bin: bool = False

    def tags(self) -> dict[str, Any]:
        """The tags a stored checkpoint records its origin in."""
        return {
            "hub_repo": self.ref.repo,
            "hub_revision": self.commit,
            "hub_ref": self.ref.revision,
        }


#: ``on_progress(files_done, files_total, bytes_done, bytes_total)``.
Progress = Callable[[int, int, int, int], None]


def _hub_error(e: BaseException, ref: HubRef, endpoint: str, token: str | None) -> HubError:
    """The clear error for a ``huggingface_hub`` / network exception."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(e, GatedRepoError):
        return HubNotFound(
            f"{ref.repo} on {endpoint} is gated: accept its terms on the Hub with your account and set "
            "HF_TOKEN to a token of that account"
        )
    if isinstance(e, RevisionNotFoundError):
        return HubNotFound(f"{ref.repo} on {endpoint} has no revision {ref.revision!r}")
    if isinstance(e, RepositoryNotFoundError):
        why = (
            "or it is private and the token in HF_TOKEN may not read it"
            if token
            else "or it is private or gated and no token was given: set HF_TOKEN (on the server: in the "
            "workers' environment)"
        )
        return HubNotFound(f"no model repository {ref.repo!r} on {endpoint} — check the id, {why}")
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", "?")
        return HubError(
            f"the Hub at {endpoint} answered HTTP {status} for {ref}: {str(e).splitlines()[0]}"
        )
    if isinstance(e, OfflineModeIsEnabled):
        return HubUnreachable(f"cannot fetch {ref}: huggingface_hub is in offline mode")
    return HubUnreachable(
        f"cannot reach the Hub at {endpoint} for {ref}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        " — is the network up? (HF_ENDPOINT names the endpoint, e.g. a mirror)"
    )


def _plan(siblings: list[Any], ref: HubRef, allow_bin: bool) -> tuple[list[HubFile], bool]:
    """The files to download and whether the weights are a ``.bin`` to convert."""
    by_name: dict[str, HubFile] = {}
    for s in siblings:
        name = getattr(s, "rfilename", None)
        if not isinstance(name, str) or "/" in name:
            continue  # top level only: no onnx/, no subfolder checkpoints
        lfs = getattr(s, "lfs", None)
        by_name[name] = HubFile(
            name=name,
            size=int((lfs.size if lfs else None) or getattr(s, "size", None) or 0),
            sha256=(lfs.sha256 if lfs else None),
            blob_id=getattr(s, "blob_id", None),
        )
    names = set(by_name)
    adapter = "adapter_config.json" in names and "config.json" not in names
    if not adapter and "config.json" not in names:
        raise HubNoSafetensors(
            f"{ref} has no config.json: not a transformers model repository Basin can load"
        )
    weights: list[str]
    if adapter:
        weights = [n for n in ("adapter_model.safetensors",) if n in names]
    elif "model.safetensors" in names:
        weights = ["model.safetensors"]
    elif "model.safetensors.index.json" in names:
        weights = ["model.safetensors.index.json", *sorted(n for n in names if _SHARD_RE.match(n))]
    else:
        weights = []
    converted = False
    if not weights:
        pickles = [n for n in _PICKLE if n in names]
        if not pickles:
            raise HubNoSafetensors(
                f"{ref} has no model weights Basin can read (no model.safetensors)"
            )
        if not allow_bin:
            raise HubNoSafetensors(
                f"{ref} has no safetensors weights, only {pickles[0]} (a pickle). Basin does not unpickle "
                "downloads unless asked: fetch it with allow_bin (on the Checkpoints page, the pytorch_model.bin "
                "box): the file is then read with torch's weights-only loader, which never runs code, and "
                "stored as model.safetensors; or pick a revision with safetensors"
            )
        weights, converted = [pickles[0]], True
    side = [n for n in SIDE_FILES if n in names and n not in weights]
    return [by_name[n] for n in side + weights], converted


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _check(path: Path, f: HubFile, ref: HubRef, commit: str) -> str:
    """Check a downloaded file against the Hub's hash; returns its sha256."""
    got = _sha256(path)
    size = path.stat().st_size
    where = f"{f.name} of {ref.repo}@{commit[:12]}"
    if f.size and size != f.size:
        raise HubHashMismatch(
            f"{where} is {size:,} bytes, the Hub says {f.size:,}: the download is corrupt or was altered; "
            "refused, nothing stored"
        )
    if f.sha256:
        if got != f.sha256.lower():
            raise HubHashMismatch(
                f"{where} does not match the Hub's sha256 (expected {f.sha256[:16]}…, got {got[:16]}…): "
                "the download is corrupt or was altered; refused, nothing stored"
            )
    elif f.blob_id:
        blob = _git_blob_sha1(path)
        if blob != f.blob_id.lower():
            raise HubHashMismatch(
                f"{where} does not match the Hub's git blob id (expected {f.blob_id[:16]}…, got {blob[:16]}…): "
                "the download is corrupt or was altered; refused, nothing stored"
            )
    else:
        raise HubHashMismatch(
            f"the Hub gave no hash for {where}: it cannot be checked, so it is refused"
        )
    return got


def _hash_from_etag(f: HubFile, ref: HubRef, commit: str, endpoint: str, token: str | None) -> None:
    """A file the model info gave no hash for (a mirror without ``blobs``): its ``ETag`` /
    ``X-Linked-Etag`` at the commit — an LFS file's sha256 (64 hex) or a git blob id (40 hex)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        meta = get_hf_file_metadata(
            hf_hub_url(ref.repo, f.name, revision=commit, endpoint=endpoint),
            token=token,
            endpoint=endpoint,
        )
    except Exception as e:
        raise _hub_error(e, ref, endpoint, token) from None
    etag = (meta.etag or "").strip('"').lower()
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        f.sha256 = etag
    elif re.fullmatch(r"[0-9a-f]{40}", etag):
        f.blob_id = etag
    if not f.size and meta.size:
        f.size = int(meta.size)


def _convert_bin(folder: Path, name: str) -> None:
    """Read a ``.bin`` with torch's weights-only loader and write it as safetensors."""
    from safetensors.torch import save_file

    from basin.formats import load_bin

    src = folder / name
    try:
        tensors = load_bin(src)  # refuses a pickle carrying code; never executes it
    except CheckpointError as e:
        raise HubError(f"{name} from the Hub was refused: {e}") from None
    # safetensors refuses tensors sharing memory (tied weights): store each as its own copy
    save_file(
        {k: v.detach().contiguous().clone() for k, v in tensors.items()},
        str(
            folder
            / name.replace("pytorch_model.bin", "model.safetensors").replace(
                "adapter_model.bin", "adapter_model.safetensors"
            )
        ),
        metadata={"format": "pt"},
    )
    src.unlink()


def fetch(
    ref: HubRef | str,
    dest: Path,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    allow_bin: bool = False,
    max_bytes: int | None = None,
    on_progress: Progress | None = None,
    on_commit: Callable[[str], bool] | None = None,
) -> Fetched | None:
    """Download ``ref`` into the new folder ``dest`` (see the module doc); returns
    :class:`Fetched`. ``max_bytes``: refuse (:class:`HubTooLarge`) before downloading when the
    files together are larger. ``on_commit(sha)``: called once the commit is known, before any
    download; returning ``True`` stops there (the caller already has it) and :func:`fetch`
    returns ``None``. Raises :class:`HubError` subclasses with a clear message; ``dest`` is left
    for the caller to remove on failure."""
    from huggingface_hub import HfApi, hf_hub_download

    ref = parse_hub_ref(ref) if isinstance(ref, str) else ref
    ep, tok = hub_settings(endpoint, token)
    dest = Path(dest)
    with _online():
        try:
            info = HfApi(endpoint=ep, token=tok).model_info(
                ref.repo, revision=ref.revision, files_metadata=True, token=tok, timeout=60
            )
        except Exception as e:
            raise _hub_error(e, ref, ep, tok) from None
        commit = str(getattr(info, "sha", "") or "")
        if not _SHA_RE.match(commit):
            raise HubError(
                f"the Hub at {ep} gave no commit sha for {ref}: is HF_ENDPOINT a Hugging Face Hub endpoint?"
            )
        if on_commit is not None and on_commit(commit):
            return None
        files, converted = _plan(list(info.siblings or []), ref, allow_bin)
        total = sum(f.size for f in files)
        if max_bytes is not None and total > max_bytes:
            raise HubTooLarge(
                f"{ref} holds {total:,} bytes of files to download, over the {max_bytes:,} allowed here "
                "(BASIN_MAX_UPLOAD_BYTES, or what the store's quota BASIN_MAX_STORE_BYTES has left)"
            )
        dest.mkdir(parents=True)
        staging = dest / ".download"
        out = Fetched(ref=ref, commit=commit, folder=dest, converted_bin=converted)
        done_bytes = 0
        if on_progress is not None:
            on_progress(0, len(files), 0, total)
        for i, f in enumerate(files):
            if not (f.sha256 or f.blob_id):
                _hash_from_etag(f, ref, commit, ep, tok)
            try:
                got = hf_hub_download(
                    ref.repo,
                    f.name,
                    revision=commit,
                    local_dir=staging,
                    endpoint=ep,
                    token=tok,
                    force_download=True,
                )
            except Exception as e:
                raise _hub_error(e, ref, ep, tok) from None
            path = Path(got)
            out.files[f.name] = _check(path, f, ref, commit)
            os.replace(path, dest / f.name)
            done_bytes += f.size
            if on_progress is not None:
                on_progress(i + 1, len(files), done_bytes, total)
        shutil.rmtree(staging, ignore_errors=True)
    if converted:
        _convert_bin(dest, next(n for n in out.files if n.endswith(".bin")))
    logger.info("fetched %s at %s: %d files, %d bytes", ref, commit[:12], len(files), total)
    return out


# ----------------------------------------------------------------------------- the CLI's cache


def cache_root() -> Path:
    """Where the CLI keeps Hub snapshots: ``BASIN_HUB_CACHE``, else ``~/.cache/basin/hub``."""
    return Path(
        os.environ.get("BASIN_HUB_CACHE") or Path.home() / ".cache" / "basin" / "hub"
    ).expanduser()


_DONE = ".basin-hub.json"


def snapshot(ref: str, *, allow_bin: bool = False) -> Path:
    """A verified local folder of Hub checkpoint ``ref`` for the CLI (``hf:org/name@rev`` in a
    spec): ``<cache>/<org>--<name>/<commit>/``. A revision that is a full commit sha already
    in the cache is used without asking the Hub; otherwise the Hub says which commit the
    revision is at, and that commit is downloaded (checked) unless cached."""
    import tempfile

    hub = parse_hub_ref(ref)
    base = cache_root() / hub.repo.replace("/", "--")
    if _SHA_RE.match(hub.revision) and (base / hub.revision / _DONE).is_file():
        return base / hub.revision
    base.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}

    def cached(commit: str) -> bool:
        if (base / commit / _DONE).is_file():
            found["dir"] = base / commit
            return True
        return False

    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=base))
    try:
        got = fetch(hub, tmp / "ckpt", allow_bin=allow_bin, on_commit=cached)
        if got is None:
            return found["dir"]
        (tmp / "ckpt" / _DONE).write_text(
            json.dumps(
                {"repo": hub.repo, "ref": hub.revision, "commit": got.commit, "files": got.files}
            )
        )
        final = base / got.commit
        try:
            os.rename(tmp / "ckpt", final)
        except OSError:  # another process cached the same commit meanwhile
            if not (final / _DONE).is_file():
                raise
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = [
    "DEFAULT_ENDPOINT",
    "HF_PREFIX",
    "Fetched",
    "HubError",
    "HubHashMismatch",
    "HubNoSafetensors",
    "HubNotFound",
    "HubRef",
    "HubTooLarge",
    "HubUnreachable",
    "cache_root",
    "fetch",
    "hub_settings",
    "is_hub_ref",
    "parse_hub_ref",
    "snapshot",
]
