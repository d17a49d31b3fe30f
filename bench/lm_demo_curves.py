"""The sentiment demo's curves (001 §4.1 / §4.4): weight interpolation and output ensembling.

The LM demo's ready run (``service.launch.demo_lm_spec``: the line from the negative- to the
positive-tuned SmolLM2-135M, α ∈ [−0.5, 1.5] in 9 points, 8 neutral prompts × 4 samples × ≤ 20
new tokens, scorer ``minilm-seed1``) with the samples' perplexity under the common θ0
(SmolLM2-135M itself, not an end of the path) and output ensembling of the two LMs' next-token
log-probabilities beside weight interpolation. Builds the MiniLM demo and the LM demo first
(both cached), then prints one row per α and the run's summary sentence.

    python -m bench.lm_demo_curves [--store models_store] [--prompts 8] [--points 9]

Cost: building the LM demo took 764 s on the 2-core development machine (load ~7); the run
about twice the 467 s of CPU of the plain run (ensembling generates every α's texts again,
with two models per step).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="models_store")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--points", type=int, default=9)
    ap.add_argument("--out", default="bench/results/lm_demo_curves.json")
    args = ap.parse_args()

    from basin.demo import build_demo
    from basin.demo_lm import BASE, NEGATIVE, POSITIVE, build_lm_demo
    from basin.engine import run
    from basin.report import summarize
    from basin.resolve import FileResolver
    from basin.spec import parse_spec

    store = Path(args.store)
    build_demo(store / "demo")
    lm = build_lm_demo(store / "demo-src" / "lm")
    path = {c["name"]: c["path"] for c in lm["checkpoints"]}
    data = {d["name"]: d["path"] for d in lm["datasets"]}
    spec = parse_spec(
        {
            "name": "sentiment per α (θ0 reference, ensembling)",
            "path": {
                "type": "linear",
                "a": path[NEGATIVE],
                "b": path[POSITIVE],
                "points": args.points,
                "range": [-0.5, 1.5],
            },
            "dataset": data["lm-prompts"],
            "task": "generation",
            "ensemble": True,
            "max_examples": args.prompts,
            "batch_size": 32,
            "max_length": 64,
            "generation": {
                "samples_per_prompt": 4,
                "max_new_tokens": 20,
                "top_p": 0.9,
                "temperature": 1.0,
                "seed": 0,
                "scorer": str(store / "demo" / "minilm-seed1"),
                "positive_label": "positive",
                "reference": path[BASE],
                "keep_samples": 8,
            },
        }
    )
    doc = run(spec, FileResolver(), progress=True)
    print(
        f"{'α':>6} | {'sentiment':>9} {'ensemble':>9} | {'ppl θ0':>8} {'ensemble':>9} | {'distinct-2':>10}"
    )
    for p in sorted(doc["points"], key=lambda p: p["coords"]["alpha"]):
        m, e = p["metrics"], p.get("ensemble") or {}
        print(
            f"{p['coords']['alpha']:6.2f} | {m['sentiment']:9.3f} {e.get('sentiment', float('nan')):9.3f} | "
            f"{m['sample_perplexity']:8.2f} {e.get('sample_perplexity', float('nan')):9.2f} | "
            f"{m['distinct_2']:10.3f}"
        )
    print(summarize(doc))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"points": doc["points"], "summary": doc["summary"]}, indent=1))


if __name__ == "__main__":
    main()
