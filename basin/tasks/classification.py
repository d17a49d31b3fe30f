"""Sequence classification: a text (or text pair) and its label; loss, accuracy, F1."""

from basin.tasks.base import TaskEntry

TASK = TaskEntry(
    name="classification",
    label="classification",
    help="a classifier scored on labelled texts: cross-entropy loss, accuracy, macro F1",
    auto_class="AutoModelForSequenceClassification",
    columns=("text", "label"),
    optional_columns=("text_pair",),
    peft_task_types=("SEQ_CLS",),
    evaluator="basin.evaluate.classification:ClassificationEvaluator",
    metrics=("loss", "accuracy", "f1"),
    default_metrics=("loss", "accuracy"),
    ensemble=True,
    per_example=True,
    example_columns=("loss", "correct", "confidence"),
    trainable=True,
    labels=True,
    order=0,
)
