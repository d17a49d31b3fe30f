"""Generation: continuations sampled from prompts and scored (sentiment, perplexity, distinct-n)."""

from basin.tasks.base import TaskEntry

TASK = TaskEntry(
    name="generation",
    label="generation",
    help="a decoder LM samples continuations of prompts, scored by a classifier (sentiment), a "
    "reference LM (perplexity of the samples), distinct-n and length",
    auto_class="AutoModelForCausalLM",
    columns=("prompt",),
    evaluator="basin.evaluate.generation:GenerationEvaluator",
    metrics=("sentiment", "sample_perplexity", "distinct_1", "distinct_2", "distinct_3", "length"),
    default_metrics=("sentiment", "sample_perplexity", "distinct_2"),
    prefix_reuse=False,
    generates="always",
    order=3,
)
