"""Study benchmark (issue 26): evaluations performed vs N(N−1)/2 × points for N = 6, wall time
with one and two workers, clusters found.

The population: tiny BERTs (``tests.factories.build_study_family``: θ0 trained on the task,
seeds fine-tuned gently from it) — four seeds (a, b, c, d) and two copies with their FFN
neurons permuted (of a and of b: the same functions, other basins). 256 evaluation examples.

- in-process (``basin study``'s core): evaluations, the fraction of full runs, clusters, wall;
- the service (real Redis, real Celery workers, the API; ``tests.stack``) with 1 and then 2
  workers, each a fresh stack (an empty point cache): the study's wall time from created to
  finished, and its evaluations.

    python -m bench.study [--out DIR] [--no-service]
    python -m bench.study --demo models_store/demo [--no-service]   # the MiniLM demo's six checkpoints
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def population(root: Path) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    from transformers import BertForSequenceClassification

    from tests import factories

    fam = (
        factories.build_study_family(root)
        if not (root / "permuted").exists()
        else {n: root / n for n in ("init", "seed_a", "seed_b", "permuted")}
        | {"data": root / "eval.csv"}
    )
    tok = factories.make_tokenizer("bert")
    for name, seed in (("seed_c", 3), ("seed_d", 4)):
        if not (root / name).exists():
            m = BertForSequenceClassification.from_pretrained(root / "init").eval()
            factories.finetune_classifier(m, seed, steps=12, lr=1e-3)
            factories.save(m, root / name, tok)
        fam[name] = root / name
    if not (root / "permuted_b").exists():
        m = factories.permute_ffn(
            BertForSequenceClassification.from_pretrained(root / "seed_b").eval(), seed=6
        )
        factories.save(m, root / "permuted_b", tok)
    fam["permuted_b"] = root / "permuted_b"
    cks = [
        {"ref": str(fam[n]), "name": n, "tags": {"method": "permuted" if "perm" in n else "seed"}}
        for n in ("seed_a", "seed_b", "seed_c", "seed_d", "permuted", "permuted_b")
    ]
    return fam, cks


def in_process(fam: dict[str, Path], cks: list[dict[str, Any]]) -> dict[str, Any]:
    from basin.resolve import FileResolver
    from basin.study.plan import parse_study
    from basin.study.run import run_study

    spec = parse_study(
        {
            "name": "bench",
            "checkpoints": cks,
            "dataset": str(fam["data"]),
            "max_examples": 256,
            "batch_size": 64,
        }
    )
    res = run_study(spec, FileResolver(), progress=False)
    return {
        "evaluations": res["evaluations"],
        "wall_s": res["wall_s"],
        "clusters": [c["names"] for c in res["clusters"]],
        "points": {
            f"{res['checkpoints'][p['a']]['name']}×{res['checkpoints'][p['b']]['name']}": (
                p["points"],
                p["barrier"]["loss"]["verdict"],
            )
            for p in res["pairs"]
        },
    }


def service(
    fam: dict[str, Path], cks: list[dict[str, Any]], workers: int, root: Path, **extra: Any
) -> dict[str, Any]:
    from service.store import Store
    from tests.stack import running_stack

    store_dir = root / f"store-{workers}w-{int(time.time())}"
    store = Store(store_dir)
    for c in cks:
        store.add_checkpoint_dir(
            Path(c["ref"]), name=c["name"], tags={"bench": "study", **c["tags"]}
        )
    store.add_dataset(fam["data"], name="study.csv")
    with running_stack(store_dir, workers=workers, ui=False) as stack:
        r = stack.request(
            "POST",
            "/api/studies",
            json={
                "name": "bench",
                "where": {"bench": "study"},
                "dataset": "study.csv",
                "max_examples": 256,
                "batch_size": 64,
                **extra,
            },
        )
        r.raise_for_status()
        sid = r.json()["id"]
        while True:
            d = stack.request("GET", f"/api/studies/{sid}").json()
            if d["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.2)
    assert d["status"] == "done", d.get("error")
    return {
        "workers": workers,
        "wall_s": d["finished"] - d["created"],
        "evaluations": d["result"]["evaluations"],
        "clusters": [c["names"] for c in d["result"]["clusters"]],
    }


def demo(out: Path) -> dict[str, Any]:
    """The MiniLM demo's six checkpoints (θ0, seed 1 at steps 15 / 30 / 45 / 60, seed 2 at 60;
    ``basin demo``'s builder, cached in ``out``), in-process, on the demo's 256 held-out tweets."""
    from basin.demo import build_demo
    from basin.resolve import FileResolver
    from basin.study.plan import parse_study
    from basin.study.run import run_study

    doc = build_demo(out, progress=False)
    cks = [
        {
            "ref": c["path"],
            "name": c["name"],
            "tags": {k: v for k, v in c["tags"].items() if k != "task"},
        }
        for c in doc["checkpoints"]
    ]
    data = next(d["path"] for d in doc["datasets"] if d["name"] == "tweets-eval")
    spec = parse_study(
        {
            "name": "MiniLM demo",
            "checkpoints": cks,
            "dataset": data,
            "max_examples": 256,
            "batch_size": 32,
            "max_length": 48,
        }
    )
    res = run_study(spec, FileResolver(), progress=False)
    return {
        "evaluations": res["evaluations"],
        "wall_s": res["wall_s"],
        "clusters": [c["names"] for c in res["clusters"]],
        "points": {
            f"{res['checkpoints'][p['a']]['name']}×{res['checkpoints'][p['b']]['name']}": (
                p["points"],
                round(p["barrier"]["loss"]["value"], 4),
                p["barrier"]["loss"]["verdict"],
            )
            for p in res["pairs"]
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/basin-bench-study")
    ap.add_argument("--no-service", action="store_true")
    ap.add_argument(
        "--demo",
        help="instead: the MiniLM demo's six checkpoints, built (or reused) in this folder",
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    if args.demo:
        out = {"demo": demo(Path(args.demo))}
        if not args.no_service:
            from basin.demo import build_demo

            doc = build_demo(Path(args.demo), progress=False)
            cks = [{"ref": c["path"], "name": c["name"], "tags": {}} for c in doc["checkpoints"]]
            data = {
                "data": Path(next(d["path"] for d in doc["datasets"] if d["name"] == "tweets-eval"))
            }
            out["service"] = [
                service(data, cks, w, root, batch_size=32, max_length=48) for w in (1, 2)
            ]
        print(json.dumps(out, indent=1))
        return
    fam, cks = population(root / "family")
    out: dict[str, Any] = {"in_process": in_process(fam, cks)}
    if not args.no_service:
        out["service"] = [service(fam, cks, w, root) for w in (1, 2)]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
