"""The new-run form opens ready to run: the demo's two seeds and its evaluation set preselected."""

from __future__ import annotations

from frontend.defaults import default_dataset, default_picks


def _ck(id_: str, **tags) -> dict:
    return {"id": id_, "name": id_, "tags": tags}


def test_final_checkpoint_of_each_seed_first_then_the_rest():
    ckpts = [
        _ck("init", task="t", step=0),
        _ck("s1-step15", seed=1, step=15),
        _ck("s1", seed=1, step=60),
        _ck("s2", seed=2, step=60),
    ]
    assert default_picks(ckpts) == ["s1", "s2", "init"]


def test_the_demo_as_a_tune_family_gives_its_two_fine_tunings_then_its_init():
    """The demo trained as a tune job (issue 25): one seed, two data orders; beside them the
    headless pre-trained body it started from and the trajectories."""
    fam = {"family": "minilm", "seed": 0, "method": "full", "lr": 1e-4}
    ckpts = [
        _ck("minilm", role="pre-trained body", demo="minilm"),
        _ck("minilm-init", family="minilm", seed=0, step=0, method="init"),
        _ck("minilm-seed2-step45", **fam, order=2, step=45),
        _ck("minilm-seed2", **fam, order=2, step=60, final=True),
        _ck("minilm-seed1-step15", **fam, order=1, step=15),
        _ck("minilm-seed1", **fam, order=1, step=60, final=True),
    ]
    assert default_picks(ckpts) == ["minilm-seed1", "minilm-seed2", "minilm-init"]


def test_fewer_checkpoints_leave_pickers_empty():
    assert default_picks([_ck("only")]) == ["only", "", ""]
    assert default_picks([]) == ["", "", ""]


def test_evaluation_set_preferred():
    dsets = [{"id": "t", "name": "tweets-train.csv"}, {"id": "e", "name": "tweets-eval.csv"}]
    assert default_dataset(dsets) == "e"
    assert default_dataset(dsets[:1]) == "t" and default_dataset([]) == ""
