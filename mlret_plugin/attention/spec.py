"""Attention patterns as text: one ``KIND[:KEY=VALUE...]`` grammar with ``SparsityConfig``'s own option names.

    dense
    local:window=64
    local:window=32:num_global=1
    block_sparse:block=32:band=1:num_global=1:num_random=2:seed=3

Every command that takes a pattern reads it here (``mlret train --attention``, its ``--attention-option
KEY=VALUE``, ``mlret experiment attention --variants``), so one spelling works everywhere and is checked by
``SparsityConfig`` before any model loads. The short names of the first grammar (``global``, ``random``)
still parse, with a DeprecationWarning naming the new one. ``per_head`` takes 0 / 1 (or true / false).
"""
from __future__ import annotations

import warnings
from dataclasses import fields

from mlret_plugin.attention.config import SparsityConfig
from mlret_plugin.constants import ATTENTION_KINDS

OPTION_NAMES = tuple(f.name for f in fields(SparsityConfig) if f.name != "kind")
DEPRECATED_NAMES = {"global": "num_global", "random": "num_random"}  # the first grammar's spellings
_KIND_OPTIONS = {
    "dense": (),
    "local": ("window", "num_global", "block"),  # block: the kernels' tile for the band
    "block_sparse": ("block", "band", "num_global", "num_random", "stride", "per_head", "seed"),
}


class PatternError(ValueError):
    """A pattern text that cannot be used; the message names the text and what was expected."""


def canonical_option(name: str, where: str) -> str:
    """``SparsityConfig``'s name for an option (old short names warn and map to it)."""
    name = name.strip()
    if name in DEPRECATED_NAMES:
        new = DEPRECATED_NAMES[name]
        warnings.warn(f"{where}: attention option {name!r} is now {new!r} (SparsityConfig's name); the old "
                      "spelling goes in the next release", DeprecationWarning, stacklevel=3)
        return new
    return name


def option_value(name: str, text: str, where: str) -> int | bool:
    """An option's value: integers, and 0 / 1 / true / false for ``per_head``."""
    text = text.strip()
    if name == "per_head":
        lowered = text.lower()
        if lowered in ("1", "true"):
            return True
        if lowered in ("0", "false"):
            return False
        raise PatternError(f"{where}: per_head={text!r}; expected 0 or 1")
    try:
        return int(text)
    except ValueError:
        raise PatternError(f"{where}: {name}={text!r} is not an integer") from None


def parse_options(pairs: list[str] | tuple[str, ...], where: str = "attention options") -> dict[str, int | bool]:
    """``["window=64", "num_global=1"]`` -> {"window": 64, "num_global": 1} (names checked, not per kind)."""
    options: dict[str, int | bool] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise PatternError(f"{where}: {pair!r} is not KEY=VALUE, e.g. window=64")
        name = canonical_option(key, where)
        if name not in OPTION_NAMES:
            raise PatternError(f"{where}: unknown option {key.strip()!r}; SparsityConfig's options are "
                               f"{', '.join(OPTION_NAMES)}")
        if name in options:
            raise PatternError(f"{where}: option {name!r} given twice")
        options[name] = option_value(name, value, where)
    return options


def parse_pattern(text: str, complete: bool = True) -> tuple[str, dict[str, int | bool]]:
    """``local:window=64`` -> ("local", {"window": 64}), checked by ``SparsityConfig``; PatternError otherwise.

    ``complete=False`` checks the kind, names and values only: more options may follow (``mlret train
    --attention local --attention-option window=64``), and the whole is checked once they are merged."""
    where = f"attention pattern {text.strip()!r}"
    kind, *pairs = text.strip().split(":")
    kind = kind.strip()
    if kind not in ATTENTION_KINDS:
        raise PatternError(f"{where}: unknown attention kind {kind!r}; expected one of {', '.join(ATTENTION_KINDS)}")
    options = parse_options(pairs, where)
    allowed = _KIND_OPTIONS[kind]
    extra = [name for name in options if name not in allowed]
    if extra:
        raise PatternError(f"{where}: option(s) {extra} do not apply to {kind}; allowed: "
                           f"{', '.join(allowed) if allowed else 'none'}")
    if complete:
        try:
            SparsityConfig(kind=kind, **options)
        except (TypeError, ValueError) as e:
            raise PatternError(f"{where}: {e}") from e
    return kind, options


def format_pattern(kind: str, options: dict[str, int | bool]) -> str:
    """The text of a pattern, options in the order given: ``format_pattern(*parse_pattern(t))`` is canonical."""
    return ":".join([kind] + [f"{name}={int(value)}" for name, value in options.items()])


def pattern_config(text: str) -> SparsityConfig:
    """The ``SparsityConfig`` a pattern text describes."""
    kind, options = parse_pattern(text)
    return SparsityConfig(kind=kind, **options)


__all__ = ["DEPRECATED_NAMES", "OPTION_NAMES", "PatternError", "format_pattern", "parse_options", "parse_pattern",
           "pattern_config"]
