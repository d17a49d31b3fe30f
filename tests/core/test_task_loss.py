"""Each task's evaluator owns its training loss (``Evaluator.batch_loss``), which ``basin fit``
minimises: on one batch holding every example it is exactly the loss ``evaluate()`` reports,
and gradients flow through it. Opened with :func:`basin.opening.open_model`, the one opening
sequence runs and fits share."""

from __future__ import annotations

import pytest
import torch

from basin.errors import InvalidSpec
from basin.fit import parse_fit_spec
from basin.opening import open_model
from basin.resolve import FileResolver
from basin.tasks import tasks_with


@pytest.mark.parametrize("task", ["classification", "causal_lm", "seq2seq"])
def test_batch_loss_is_the_reported_loss_and_differentiable(
    task, classifier_family, gpt2_pair, t5_pair
):
    a, b, data = {
        "classification": (
            classifier_family["ft_a"],
            classifier_family["ft_b"],
            classifier_family["data"],
        ),
        "causal_lm": (gpt2_pair["a"], gpt2_pair["b"], gpt2_pair["data"]),
        "seq2seq": (t5_pair["a"], t5_pair["b"], t5_pair["data"]),
    }[task]
    opened = open_model(
        task,
        [str(a), str(b)],
        FileResolver(),
        dataset=str(data),
        max_examples=16,
        seed=0,
        device="cpu",
    )
    ev = opened.evaluator(batch_size=64, max_length=64)  # one batch: every example
    assert len(ev.batches) == 1
    reported = ev.evaluate(opened.model)["loss"]
    name = opened.names[0]
    param = dict(opened.model.named_parameters())[name]
    param.requires_grad_(True)
    logits = opened.model(**ev.batches[0]).logits
    loss = ev.batch_loss(0, logits)
    assert loss.dim() == 0 and float(loss.detach()) == pytest.approx(reported, rel=1e-5)
    loss.backward()
    assert (
        param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0
    )


def test_a_task_without_a_training_loss_cannot_be_fitted():
    assert tasks_with(trainable=True) == ("classification", "causal_lm", "seq2seq")
    with pytest.raises(InvalidSpec, match="a curve fit needs a task with a training loss"):
        parse_fit_spec({"a": "x", "b": "y", "dataset": "d", "task": "generation"})
