"""The prompts training puts before the query and passage columns (the rule: ``mlret_plugin.prompts``).

The same rule as the dense evaluator, so a model is trained as it is evaluated (e5: "query: " /
"passage: "); an explicit prompt (also "") overrides; a model without prompts trains without them.
"""
from __future__ import annotations

from mlret_plugin.prompts import resolve_prompt

QUERY_COLUMNS = ("anchor",)
PASSAGE_COLUMNS = ("positive", "negative")


def training_prompts(model, query_prompt: str | None = None, passage_prompt: str | None = None) -> tuple[str, str]:
    """(query prompt, passage prompt) for training ``model``; "" means none."""
    return resolve_prompt(model, query_prompt, "query")[0], resolve_prompt(model, passage_prompt, "passage")[0]


def column_prompts(query: str, passage: str) -> dict[str, str] | None:
    """The ``prompts`` argument of ``SentenceTransformerTrainingArguments`` for the (anchor, positive[,
    negative]) columns of ``mlret_plugin.training`` data; None when there is no prompt at all."""
    prompts = {**{c: query for c in QUERY_COLUMNS if query}, **{c: passage for c in PASSAGE_COLUMNS if passage}}
    return prompts or None
