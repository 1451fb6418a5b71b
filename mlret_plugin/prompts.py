"""Which text prompt goes before a query or a passage: one rule for evaluation, training and image-text models.

A model's own sentence-transformers ``prompts`` are used by role: ``query`` for queries; ``passage``, else
``document``, for passages (candidates). Empty entries do not count (sentence-transformers >= 5 adds empty
"query" / "document" prompts to every model). An explicit prompt, "" included, overrides the model's.
So e5 is trained and evaluated with its "query: " / "passage: ", and a model without prompts gets none.
"""
from __future__ import annotations

PROMPT_NAMES = {"query": ("query",), "passage": ("passage", "document")}


def model_prompt(model, role: str) -> tuple[str, str]:
    """(the model's own prompt for ``role``, the name it was found under), or ("", "") when it has none."""
    if role not in PROMPT_NAMES:
        raise ValueError(f"prompt role {role!r}; expected one of {sorted(PROMPT_NAMES)}")
    prompts = getattr(model, "prompts", None) or {}
    for name in PROMPT_NAMES[role]:
        if prompts.get(name):
            return prompts[name], name
    return "", ""


def resolve_prompt(model, given: str | None, role: str) -> tuple[str, str]:
    """(prompt, where it came from): ``given`` when it is not None ("argument"), else the model's own
    (``"model:{name}"``), else "" ("none")."""
    if given is not None:
        return given, "argument"
    prompt, name = model_prompt(model, role)
    return (prompt, f"model:{name}") if prompt else ("", "none")


__all__ = ["PROMPT_NAMES", "model_prompt", "resolve_prompt"]
