"""The ``hub`` kind's executor: fetch a checkpoint from the Hugging Face Hub into the store
(:func:`service.hub.import_from_hub`; ``HF_ENDPOINT`` and ``HF_TOKEN`` from this worker's
environment). Errors end the job ``failed`` with their message (:func:`workers.jobs.run_job`);
nothing is stored then. Like a fit, it needs the shared store (it writes a checkpoint)."""

from __future__ import annotations

import json
from typing import Any

from basin.status import CANCELLED, DONE, FAILED
from service.jobs.kernel import JobState


def execute_hub(job_id: str, js: JobState, state: Any) -> dict:
    from basin.errors import InvalidSpec
    from service.hub import import_from_hub
    from service.jobs.hub import HubSpec, HubStopped, progress_callback
    from service.jobs.kernel import time_limit_message
    from service.store import Store

    settings = state.settings
    if (getattr(settings, "api_url", "") or "").strip():
        raise InvalidSpec(
            "this worker has no shared store (BASIN_API_URL is set): a Hub download writes "
            "a checkpoint into the store, so it needs a worker on the API's store"
        )
    spec = HubSpec.model_validate(json.loads(js.hash()["spec"]))
    store = Store(settings.store)
    try:
        added, commit = import_from_hub(
            store,
            spec.ref,
            name=spec.name,
            tags=spec.tags,
            allow_bin=spec.allow_bin,
            max_bytes=settings.max_upload_bytes,
            quota=settings.max_store_bytes,
            on_progress=progress_callback(js),
        )
    except HubStopped as e:
        if js.timed_out:
            msg = time_limit_message(
                "Hub download",
                js.limit_s,
                int(js.hash().get("step") or 0),
                int(js.hash().get("total") or 0),
            )
            js.end(FAILED, msg)
            return {"hub": job_id, "status": FAILED, "error": msg}
        js.end(CANCELLED, str(e))
        return {"hub": job_id, "status": CANCELLED}
    m = added.manifest
    js.set(
        commit=commit,
        checkpoint=m["id"],
        name=m.get("name") or "",
        created_new="1" if added.created else "0",
    )
    js.end(DONE)
    return {"hub": job_id, "checkpoint": m["id"], "commit": commit, "created": added.created}
