"""Attention variants of an experiment: patterns in the package's one grammar (``attention.spec``).

``dense,local:window=64,local:window=32:num_global=1,block_sparse:block=32:num_random=1`` on the command
line; in Python a list of ``AttentionVariant`` (``parse_variant(text)``, or ``AttentionVariant.of(config)``
from a ``SparsityConfig``). Every key is checked against its kind and every value by ``SparsityConfig``
before any model is loaded, so a typo fails the grid at once instead of after hours of encoding.
``AttentionVariant.config`` holds the keyword arguments for ``mlret_plugin.set_attention(model, kind,
**config)``; its label (the canonical text) names it in tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mlret_plugin.attention.config import SparsityConfig
from mlret_plugin.attention.spec import OPTION_NAMES, PatternError, format_pattern, parse_pattern

REQUIRED = {"local": ("window",), "block_sparse": ("block",)}  # explicit in an experiment's labels


class VariantError(PatternError):
    """A variant that cannot be used; the message names it and what was expected."""


@dataclass(frozen=True)
class AttentionVariant:
    kind: str
    config: dict[str, int] = field(default_factory=dict)  # keywords for set_attention
    label: str = "dense"  # the pattern as text (canonical), used in tables and reports

    def params(self) -> dict:
        return {"kind": self.kind, **self.config}

    @classmethod
    def of(cls, config: SparsityConfig) -> "AttentionVariant":
        """The variant of a ``SparsityConfig``: its options that differ from the defaults (and the required ones)."""
        defaults = SparsityConfig()
        options = {name: getattr(config, name) for name in OPTION_NAMES
                   if getattr(config, name) != getattr(defaults, name) or name in REQUIRED.get(config.kind, ())}
        return check_variant(config.kind, options)


def check_variant(kind: str, options: dict) -> AttentionVariant:
    """A variant from a kind and its options, with the experiment's rule that patterns spell out their size."""
    label = format_pattern(kind, options)
    missing = [k for k in REQUIRED.get(kind, ()) if k not in options]
    if missing:
        raise VariantError(f"variant {label!r}: {kind} needs {', '.join(f'{k}=N' for k in missing)}")
    try:
        SparsityConfig(kind=kind, **options)
    except (TypeError, ValueError) as e:
        raise VariantError(f"variant {label!r}: {e}") from e
    return AttentionVariant(kind, dict(options), label)


def parse_variant(spec: str) -> AttentionVariant:
    """One pattern text (``local:window=64``) -> AttentionVariant; VariantError naming the problem otherwise."""
    try:
        kind, options = parse_pattern(spec)
    except VariantError:
        raise
    except PatternError as e:
        raise VariantError(str(e)) from e
    return check_variant(kind, options)


def as_variant(value: "AttentionVariant | SparsityConfig | str") -> AttentionVariant:
    """An AttentionVariant from a variant, a ``SparsityConfig`` or a pattern text."""
    if isinstance(value, AttentionVariant):
        return value
    if isinstance(value, SparsityConfig):
        return AttentionVariant.of(value)
    if isinstance(value, str):
        return parse_variant(value)
    raise TypeError(f"variants: expected AttentionVariant, SparsityConfig or a pattern text; got {type(value).__name__}")


def check_variants(variants) -> list[AttentionVariant]:
    """The grid's variants: at least one, no duplicates, dense among them (degradation is measured against it)."""
    chosen = [as_variant(v) for v in variants]
    if not chosen:
        raise VariantError("variants is empty; e.g. dense, local:window=64, block_sparse:block=32")
    labels = [v.label for v in chosen]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise VariantError(f"variants: {duplicates} given more than once")
    if "dense" not in labels:
        raise VariantError("variants must include 'dense': degradation is measured against it")
    return chosen


def parse_variants(text: str) -> list[AttentionVariant]:
    """A comma-separated list of pattern texts (the command line's ``--variants``)."""
    return check_variants([s for s in (part.strip() for part in text.split(",")) if s])


__all__ = ["AttentionVariant", "VariantError", "as_variant", "check_variants", "parse_variant", "parse_variants"]
