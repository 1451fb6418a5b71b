"""The hybrid recipe: the training knobs chosen on MLQA-R dev (docs/training.md, "The hybrid recipe").

``mlret train``'s defaults and the final grid of ``examples/e5_hybrid_recipe.py`` both read ``HYBRID_RECIPE``,
so the command README gives trains exactly what the final grid measured. Each key is a ``train_hybrid``
keyword; ``recipe_flags`` spells the recipe as ``mlret experiment ratio`` options.
"""
from __future__ import annotations

# sentence-transformers' plain defaults: what `mlret experiment ratio` grids mean when a knob is not given
NEUTRAL_RECIPE: dict = {"loss": "mnrl", "mini_batch_size": 32, "hard_negatives": False, "freeze_embeddings": False,
                        "distill_weight": 0.0, "scale": 20.0, "warmup_ratio": 0.1}

HYBRID_RECIPE: dict = {
    "batch_size": 64,  # pairs per logical batch: the in-batch contrast
    "max_steps": 100,
    "learning_rate": 2e-5,
    "warmup_ratio": 0.1,
    "loss": "cached-mnrl",  # the whole batch's contrast in mini-batches of mini_batch_size (bounded memory)
    "mini_batch_size": 32,
    "scale": 100.0,  # e5's own temperature (0.01): on dev it lifted Mono, Cross and Multi where 20 lost Mono
    "hard_negatives": False,
    "freeze_embeddings": False,
    "distill_weight": 0.0,
    "wise_ft": 0.75,  # WiSE-FT: 0.25 start + 0.75 fine-tuned; on dev it raised Mono more than it cost Multi
}

_FLAGS = {"batch_size": "--batch-size", "max_steps": "--max-steps", "learning_rate": "--learning-rate",
          "warmup_ratio": "--warmup-ratio", "loss": "--loss", "mini_batch_size": "--mini-batch-size",
          "scale": "--scale", "distill_weight": "--distill-weight", "wise_ft": "--wise-weights"}
_SWITCHES = {"hard_negatives": "--hard-negatives", "freeze_embeddings": "--freeze-embeddings"}


def recipe_flags(recipe: dict = HYBRID_RECIPE) -> tuple[str, ...]:
    """``recipe`` as ``mlret experiment ratio`` options (every knob spelled out, switches only when on)."""
    unknown = sorted(set(recipe) - set(_FLAGS) - set(_SWITCHES))
    if unknown:
        raise ValueError(f"recipe: unknown knob(s) {unknown}; expected some of {sorted({**_FLAGS, **_SWITCHES})}")
    flags: list[str] = []
    for key, value in recipe.items():
        if key in _SWITCHES:
            flags += [_SWITCHES[key]] if value else []
        else:
            flags += [_FLAGS[key], f"{value:g}" if isinstance(value, float) else str(value)]
    return tuple(flags)


__all__ = ["HYBRID_RECIPE", "NEUTRAL_RECIPE", "recipe_flags"]
