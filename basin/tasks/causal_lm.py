"""Causal language modelling: texts scored token by token; loss and perplexity (and, with
``generation.prompts``, the generation metrics of sampled continuations too)."""

from basin.tasks.base import TaskEntry

TASK = TaskEntry(
    name="causal_lm",
    label="causal LM",
    help="a decoder LM scored on texts: mean next-token loss and perplexity; with generation prompts "
    "it also samples continuations",
    auto_class="AutoModelForCausalLM",
    columns=("text",),
    peft_task_types=("CAUSAL_LM",),
    evaluator="basin.evaluate.causal_lm:CausalLMEvaluator",
    metrics=("loss", "perplexity"),
    default_metrics=("loss", "perplexity"),
    ensemble=True,
    per_example=True,
    example_columns=("nll", "tokens"),
    trainable=True,
    generates="with_prompts",
    order=1,
)
