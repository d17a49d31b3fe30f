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
    # its metrics are declared by their own entries in basin.metrics (tasks=("generation",)),
    # where the generation metrics live
    metrics=(),
    default_metrics=(),
    # output ensembling of generated text: the two LMs' next-token log-probabilities mixed at
    # every sampling step (001 §4.4; basin.evaluate.generation.MixedScores)
    ensemble=True,
    prefix_reuse=False,
    generates="always",
    order=3,
)
