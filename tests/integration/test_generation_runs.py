"""Generation runs through the real stack: API → Celery worker → Redis → stored document."""

from __future__ import annotations

import csv
import io

import pytest


def gen_spec(**gen) -> dict:
    return {"path": {"type": "linear", "a": "lm_neg", "b": "lm_pos", "points": 3}, "dataset": "prompts.csv",
            "task": "generation", "batch_size": 8,
            "generation": {"scorer": "scorer", "samples_per_prompt": 2, "max_new_tokens": 6, "keep_samples": 4,
                           "reference": "lm_init", **gen}}


def test_a_generation_run_streams_samples_and_stores_them(stack):
    r = stack.request("POST", "/api/runs", json=gen_spec())
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    assert stack.wait_run(run_id)["status"] == "done"
    assert all("samples" not in p for p in stack.request("GET", f"/api/runs/{run_id}/points").json()["points"])
    page = stack.request("GET", f"/api/runs/{run_id}/points?samples=true").json()  # only when asked
    by = {p["coords"]["alpha"]: p for p in page["points"]}
    assert set(by) == {0.0, 0.5, 1.0}
    for p in by.values():
        assert set(p["metrics"]) == {"sentiment", "sample_perplexity", "distinct_2"}
        assert len(p["samples"]) == 4 and all(set(s) == {"prompt", "text", "sentiment"} for s in p["samples"])
    assert by[1.0]["metrics"]["sentiment"] > by[0.0]["metrics"]["sentiment"]
    doc = stack.wait_stored(run_id)
    assert [p["samples"] for p in sorted(doc["points"], key=lambda p: p["index"])] == \
        [by[a]["samples"] for a in (0.0, 0.5, 1.0)]
    rows = list(csv.DictReader(io.StringIO(stack.request("GET", f"/api/runs/{run_id}/export?format=csv").text)))
    assert [float(row["sentiment"]) for row in rows] == pytest.approx([by[a]["metrics"]["sentiment"]
                                                                      for a in (0.0, 0.5, 1.0)])


def test_a_second_run_reuses_the_cached_points_with_their_samples(stack):
    first = stack.request("POST", "/api/runs", json=gen_spec(seed=7)).json()["id"]
    stack.wait_run(first)
    second = stack.request("POST", "/api/runs", json=gen_spec(seed=7)).json()["id"]
    body = stack.wait_run(second)
    assert body["status"] == "done" and body["cached_points"] == 3
    pts = [sorted(stack.request("GET", f"/api/runs/{i}/points?samples=true").json()["points"], key=lambda x: x["index"])
           for i in (first, second)]
    assert [p["samples"] for p in pts[0]] == [p["samples"] for p in pts[1]]  # the texts come back too


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (gen_spec(scorer="ft_a"), "'LABEL_0', 'LABEL_1', none named 'positive'"),
        (gen_spec(scorer="scorer", positive_label="joy"), "'joy' is not one of"),
        ({**gen_spec(), "dataset": "eval.csv"}, "set generation.prompt_tokens"),
        ({**gen_spec(samples_per_prompt=64, max_new_tokens=512), "dataset": "many-prompts.csv"},
         "64 samples × 40 prompts × 512 new tokens"),
    ],
    ids=["unnamed-labels", "unknown-positive-label", "no-prompt-column", "over-budget"],
)
def test_bad_generation_specs_are_refused_before_any_worker_starts(stack, spec, needle):
    before = stack.redis().zcard("basin:runs")
    r = stack.request("POST", "/api/runs", json=spec)
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"]
    assert stack.redis().zcard("basin:runs") == before
