"""The subspace job page (issue 27): one line per task/method in the reconstruction and task-loss
charts as the losses stream in, and the stage's table once done."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def page():
    from frontend.app import create_dash_app

    create_dash_app()  # registers the pages
    from frontend.pages import subspace

    return subspace


def test_fit_losses_draw_one_line_per_task_and_method(page):
    losses = [
        {
            "step": s,
            "loss": 3.0 / s,
            "dist": {"t/lora": 2.0 / s, "t/prompt": 1.0 / s},
            "task": {"t/lora": 0.7, "t/prompt": 0.6 + 0.01 * s},
        }
        for s in (1, 2, 3)
    ]
    dist, task = page.loss_figures(losses)
    assert [t.meta for t in dist.data] == ["t/lora", "t/prompt"]
    assert list(dist.data[0].y) == [2.0, 1.0, 2.0 / 3]
    assert list(task.data[1].y) == pytest.approx([0.61, 0.62, 0.63])
    opt_dist, opt_task = page.loss_figures([{"step": 1, "task": 0.5}, {"step": 2, "task": 0.4}])
    assert not opt_dist.data and list(opt_task.data[0].y) == [0.5, 0.4]


def test_view_shows_progress_outputs_and_the_table_once_done(page):
    running = page._view({"status": "running", "step": 5, "total": 20, "losses": []})
    assert running[4] == 25 and running[9] is False  # progress %, polling goes on
    done = page._view(
        {
            "status": "done",
            "step": 20,
            "total": 20,
            "losses": [],
            "artefact": "ab" * 32,
            "report": {
                "stage": "fit",
                "rows": [
                    {
                        "task": "t",
                        "method": "lora",
                        "parameters": 10,
                        "original": {"accuracy": 0.9, "loss": 0.3},
                        "reconstruction": {"accuracy": 0.8, "loss": 0.4},
                        "relative_distance": 0.05,
                    }
                ],
            },
        }
    )
    assert done[9] is True and "abababab" in str(done[7])
    assert "0.900 / 0.300" in str(done[8]) and "0.800 / 0.400" in str(done[8])
