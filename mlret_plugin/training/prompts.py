"""Which text prompts training puts before the query and passage columns.

By default the model's own sentence-transformers ``prompts`` (``query``; ``passage``, else ``document``;
empty ones do not count, as sentence-transformers >= 5 adds empty "query" / "document" entries), the
same rule as the dense evaluator, so a model is trained as it is evaluated (e5: "query: " /
"passage: "). An explicit prompt (also "") overrides; a model without prompts trains without them.
"""
from __future__ import annotations

QUERY_PROMPT_NAMES = ("query",)
PASSAGE_PROMPT_NAMES = ("passage", "document")
QUERY_COLUMNS = ("anchor",)
PASSAGE_COLUMNS = ("positive", "negative")


def _model_prompt(model, names: tuple[str, ...]) -> str:
    prompts = getattr(model, "prompts", None) or {}
    return next((prompts[name] for name in names if prompts.get(name)), "")


def training_prompts(model, query_prompt: str | None = None, passage_prompt: str | None = None) -> tuple[str, str]:
    """(query prompt, passage prompt) for training ``model``; "" means none."""
    query = _model_prompt(model, QUERY_PROMPT_NAMES) if query_prompt is None else query_prompt
    passage = _model_prompt(model, PASSAGE_PROMPT_NAMES) if passage_prompt is None else passage_prompt
    return query, passage


def column_prompts(query: str, passage: str) -> dict[str, str] | None:
    """The ``prompts`` argument of ``SentenceTransformerTrainingArguments`` for the (anchor, positive[,
    negative]) columns of ``mlret_plugin.training`` data; None when there is no prompt at all."""
    prompts = {**{c: query for c in QUERY_COLUMNS if query}, **{c: passage for c in PASSAGE_COLUMNS if passage}}
    return prompts or None
