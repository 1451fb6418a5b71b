"""argparse ``type=`` callables: command-line text -> the typed values the library takes.

Each raises ``argparse.ArgumentTypeError`` with what was expected, which argparse reports with the flag's
name (``argument --noise: ...``). Values are only parsed here; the library checks them (ranges, kinds).
"""
from __future__ import annotations

import argparse
from typing import Callable, TypeVar

T = TypeVar("T")


def _items(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def comma_list(convert: Callable[[str], T], example: str) -> Callable[[str], list[T]]:
    """A ``type=`` for a comma-separated list, each item converted by ``convert``."""
    def parse(text: str) -> list[T]:
        items = _items(text)
        if not items:
            raise argparse.ArgumentTypeError(f"empty list; e.g. {example}")
        try:
            return [convert(item) for item in items]
        except (ValueError, TypeError) as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {e} (expected e.g. {example})") from None

    parse.__name__ = f"list of {getattr(convert, '__name__', 'values')}"
    return parse


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


names = comma_list(str, "en,de,es")
integers = comma_list(_integer, "0,1,2")
numbers = comma_list(_number, "0,0.5,1")


def _variant(text: str):
    from mlret_plugin.experiments.variants import parse_variant

    return parse_variant(text)


def _model(text: str):
    from mlret_plugin.experiments.ratio import parse_model

    return parse_model(text)


variants = comma_list(_variant, "dense,local:window=64,block_sparse:block=32")
models = comma_list(_model, "offline-e5:layers=4,offline-e5")


def baseline(text: str) -> float | str:
    """An alpha, or ``untrained``."""
    if text == "untrained":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an alpha (e.g. 0.5) or 'untrained'") from None


def attention_pattern(text: str):
    """``KIND[:KEY=VALUE...]`` (``mlret_plugin.attention.spec``) -> (kind, options)."""
    from mlret_plugin.attention.spec import PatternError, parse_pattern

    try:
        return parse_pattern(text, complete=False)  # --attention-option may add options; checked when merged
    except PatternError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


__all__ = ["attention_pattern", "baseline", "comma_list", "integers", "models", "names", "numbers", "variants"]
