"""Sequence to sequence: a source and its target; the target's token loss and perplexity."""

from basin.tasks.base import TaskEntry

TASK = TaskEntry(
    name="seq2seq",
    label="seq2seq",
    help="an encoder-decoder scored on source → target pairs: mean target-token loss and perplexity",
    auto_class="AutoModelForSeq2SeqLM",
    columns=("source", "target"),
    peft_task_types=("SEQ_2_SEQ_LM",),
    evaluator="basin.evaluate.seq2seq:Seq2SeqEvaluator",
    metrics=("loss", "perplexity"),
    default_metrics=("loss",),
    per_example=True,
    example_columns=("nll", "tokens"),
    trainable=True,
    order=2,
)
