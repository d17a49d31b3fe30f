"""The ``tune`` kind's executor: train one member of a family (:mod:`service.jobs.tune`).

Reached through the kernel's worker side (:func:`workers.jobs.run_job`, task
:data:`service.tasks.JOB_TASK` with ``["tune", "<id>.<i>"]``): heartbeat, start, errors.
It runs :func:`basin.tune.train_member` with

- ``should_stop``: the member's cancel flag, the family's, the member's time limit
  (``BASIN_JOB_TIME_LIMIT_S``) and whether this attempt still holds the member (the reaper
  re-queued it while this worker was cut off: it stops and stores nothing more);
- ``on_step``: each step's training loss goes to the member's loss log (the page draws it
  live), with the examples seen and an ETA; the test seam ``BASIN_WORKER_HOOK`` is called
  as ``hook("tune-step", "<id>.<i>", step, worker)`` first, so a test holds a worker at an
  exact step and kills it there;
- ``on_save``: each intermediate checkpoint is moved into the store at once, named
  ``<member> step <n> <id[:8]>`` and tagged ``family``, ``seed``, ``order``, ``split``,
  ``method``, ``lr``, ``step``, ``tune``, ``member`` (so paths, planes and studies can pick
  "same everything but X", and a trajectory path its steps by tag). A save a dead attempt
  already stored is found by its name and reused, so a re-queued member stores each
  checkpoint once.

When training ends the final checkpoint is stored (``<member> final <id[:8]>``, tags as
above plus the held-out metrics), with the member's dataset cartography as
``cartography.csv`` in its folder (:func:`basin.tune.cartography.write_map`; never pickle), and the member ends ``done`` —
only if this attempt still holds it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from basin.status import CANCELLED, DONE, FAILED
from service.jobs.kernel import time_limit_message
from service.jobs.tune import TUNE, MemberState, checkpoint_name

logger = logging.getLogger(__name__)

#: The file a member's final checkpoint folder holds its dataset cartography in.
CARTOGRAPHY_FILE = "cartography.csv"


class Superseded(Exception):
    """This attempt no longer holds its member (the reaper re-queued it)."""


def _tag_value(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)


class Registrar:
    """Moves a member's checkpoints into the store once each (by name), with its tags.

    θ0 (``step 0``, a seed's fresh classifier head, shared by the seed's members) is copied
    (the trainer goes on opening it) and found again by content by the other members of its
    seed; PEFT checkpoints are stored on it (else on the base). The final checkpoint waits
    for the held-out metrics and the cartography (:meth:`finish`)."""

    def __init__(
        self,
        store: Any,
        ms: MemberState,
        *,
        member: dict[str, Any],
        base: str,
        tune_id: str,
        quota: int | None,
        dataset: str = "",
    ) -> None:
        self.store, self.ms, self.dataset = store, ms, dataset
        self.member, self.base = member, base
        self.tune_id, self.quota = tune_id, quota
        self.saved: list[dict[str, Any]] = []
        self.final: tuple[int, Path, dict[str, Any]] | None = None

    def tags(self, step: int | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        out = {k: _tag_value(v) for k, v in (extra or {}).items()}
        out.update({k: _tag_value(v) for k, v in self.member["tags"].items()})
        out.update(tune=self.tune_id, member=int(self.member["index"]), trained_on=self.dataset)
        if step is not None:
            out["step"] = int(step)
        return {k: v for k, v in out.items() if v is not None}

    def put(self, path: Path, name: str, tags: dict[str, Any], *, copy: bool = False) -> str:
        """The store id of the checkpoint at ``path`` (moved in, or the one an earlier attempt stored)."""
        from basin.adapters import is_adapter_dir
        from service.store import CheckpointNotFound, QuotaExceeded, _dir_size

        if not self.ms.holds():
            raise Superseded()
        try:
            m = self.store.get_checkpoint(name)
            if (m.get("tags") or {}).get("tune") == self.tune_id:
                if not copy:
                    shutil.rmtree(path, ignore_errors=True)
                return str(m["id"])  # a dead attempt stored it: the same training, the same weights
        except CheckpointNotFound:
            pass
        free = self.store.free_bytes(self.quota)
        need = _dir_size(Path(path))
        if free is not None and need > free:
            raise QuotaExceeded(
                f"checkpoint {name!r} needs {need:,} bytes but the store has {free:,} left under "
                "its quota (BASIN_MAX_STORE_BYTES); the member stopped there"
            )
        kw: dict[str, Any] = {"base": self.base} if is_adapter_dir(Path(path)) else {}
        added = self.store.import_checkpoint(
            Path(path), name=name, tags=tags, mode="copy" if copy else "move", **kw
        )
        return str(added.manifest["id"])

    def save(self, step: int, path: Any, tags: dict[str, Any] | None) -> None:
        """``on_save``: θ0 and the intermediate checkpoints go into the store now."""
        path, tags = Path(path), dict(tags or {})
        if tags.get("method") == "init":  # θ0 of a seed: not this member's alone
            name = checkpoint_name(
                self.tune_id,
                f"{self.member['tags'].get('family', 'family')}-init-s{tags.get('seed')}",
                0,
            )
            init_tags = {
                **{k: _tag_value(v) for k, v in tags.items()},
                "tune": self.tune_id,
                "trained_on": self.dataset,
                "role": "tune init (θ0: the base with a seeded head)",
            }
            self.base = self.put(path, name, init_tags, copy=True)
            self.saved.append({"step": 0, "id": self.base, "init": True})
        elif path.name == "final":
            self.final = (int(step), path, tags)
            return
        else:
            name = checkpoint_name(self.tune_id, str(self.member["name"]), step)
            ident = self.put(path, name, self.tags(step, tags))
            self.saved.append({"step": int(step), "id": ident})
        self.ms.set(checkpoints=self.saved)

    def finish(self, metrics: dict[str, Any], cartography: Path | None) -> str:
        """Store the final checkpoint (with ``cartography.csv`` and the held-out metrics as tags)."""
        if self.final is None:
            raise RuntimeError("the trainer saved no final checkpoint")
        step, path, tags = self.final
        if cartography is not None and Path(cartography).is_file():
            shutil.copyfile(cartography, path / CARTOGRAPHY_FILE)
        extra = {
            f"heldout_{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and v == v
        }
        name = checkpoint_name(self.tune_id, str(self.member["name"]), None)
        ident = self.put(path, name, {**self.tags(step, {**tags, **extra}), "final": True})
        self.saved.append({"step": step, "id": ident, "final": True})
        return ident


def execute_tune(ref: str, ms: MemberState, state: Any) -> dict:
    """Train member ``ref`` (``<id>.<i>``), store its checkpoints, end it."""
    from basin.errors import InvalidSpec
    from basin.tune import TuneSpec, members
    from basin.tune.train import train_member
    from service.jobs.limits import JobLimits
    from service.store import Store
    from workers.tasks import _hook

    settings = state.settings
    if (getattr(settings, "api_url", "") or "").strip():
        raise InvalidSpec(
            "this worker has no shared store (BASIN_API_URL is set): a tune job writes its "
            "checkpoints into the store, so it needs a worker on the API's store"
        )
    r = ms.r
    fam = r.hgetall(TUNE.hash_key(ms.tune_id))
    spec = TuneSpec.model_validate(json.loads(fam["spec"]))
    if spec.device == "auto" and state.device != "auto":
        spec = spec.model_copy(update={"device": state.device})
    mine = json.loads(r.hget(ms.k.hash, "spec") or "{}")
    member = next(m for m in members(spec) if m.index == ms.index)
    store = Store(settings.store)
    limits = JobLimits.from_settings(settings)
    reg = Registrar(
        store,
        ms,
        member=mine,
        base=str(spec.base),
        tune_id=ms.tune_id,
        quota=limits.store_bytes,
        dataset=str(spec.dataset),
    )
    hook = _hook()
    total = int(spec.steps)
    t0 = time.monotonic()

    def on_step(step: int, loss: float, examples_seen: int = 0) -> None:
        if hook is not None:
            hook("tune-step", ref, step, state.name)
        rate = step / max(1e-9, time.monotonic() - t0)
        ms.step(step, loss, int(examples_seen or 0), (total - step) / rate if rate > 0 else None)

    def should_stop() -> bool:
        return ms.should_stop() or not ms.holds()

    with store.workspace() as ws:
        try:
            result = train_member(
                spec,
                member,
                store.resolver(),
                ws,
                on_step=on_step,
                on_save=reg.save,
                should_stop=should_stop,
            )
            if result.status != DONE or ms.timed_out or not ms.holds():
                if ms.timed_out:
                    msg = time_limit_message(
                        "tune job's member", ms.limit_s, len(result.losses), total
                    )
                    ms.end(FAILED, msg)
                    return {"tune": ref, "status": FAILED, "error": msg}
                if not ms.holds():  # re-queued or failed under this worker: store nothing more
                    return {"tune": ref, "status": r.hget(ms.k.hash, "status") or "gone"}
                ms.end(CANCELLED, checkpoints=reg.saved)
                return {"tune": ref, "status": CANCELLED}
            metrics = {
                k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) and v == v
            }
            final = reg.finish(metrics, result.cartography)
        except Superseded:
            return {"tune": ref, "status": "superseded"}
    out = ms.end(
        DONE,
        final=final,
        metrics=metrics,
        checkpoints=reg.saved,
        cartography=final if result.cartography is not None else "",
    )
    logger.info("tune %s done (%s): final %s, %s", ref, out, final[:12], metrics)
    return {"tune": ref, "status": DONE if out == "ok" else out, "final": final}


__all__ = ["CARTOGRAPHY_FILE", "Registrar", "execute_tune"]
