"""Attention variants of an experiment, from the command line's ``--variants`` text.

Grammar: comma-separated specs, each ``KIND`` or ``KIND:key=value[:key=value...]``::

    dense,local:window=64,local:window=32:global=1,block_sparse:block=32:random=1

Commas separate variants; a colon separates a variant's options. Every key is checked against its
kind and every value against its type and range here, before any model is loaded, so a typo fails
the grid at once instead of after hours of encoding. ``AttentionVariant.config`` holds the keyword
arguments for ``mlret_plugin.set_attention(model, kind, **config)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

BLOCK_SIZES = (16, 32, 64, 128)

# kind -> {key on the command line: (keyword of set_attention / SparsityConfig, minimum value)}
KINDS: dict[str, dict[str, tuple[str, int]]] = {
    "dense": {},
    "local": {
        "window": ("window", 0),  # token-exact |i - j| <= window
        "global": ("num_global", 0),  # leading tokens ([CLS]) that attend and are attended everywhere
        "block": ("block", 16),  # tile size of the kernel (the band of tiles covers the window)
    },
    "block_sparse": {
        "block": ("block", 16),
        "band": ("band", 0),  # neighbouring key blocks on each side of the diagonal
        "global": ("num_global", 0),  # leading global blocks (full rows and columns)
        "random": ("num_random", 0),  # seeded random key blocks per query block (BigBird)
        "stride": ("stride", 1),  # every stride-th key block is seen by all rows
        "per_head": ("per_head", 0),  # 1: random blocks differ per head
        "seed": ("seed", 0),
    },
}
REQUIRED = {"local": ("window",), "block_sparse": ("block",)}


class VariantError(ValueError):
    """A ``--variants`` spec that cannot be used; the message names the spec and what was expected."""


@dataclass(frozen=True)
class AttentionVariant:
    kind: str
    config: dict[str, int] = field(default_factory=dict)  # keywords for set_attention
    label: str = "dense"  # the spec as written (normalised), used in tables and cache keys

    def params(self) -> dict:
        return {"kind": self.kind, **self.config}


def _int_value(spec: str, key: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise VariantError(f"variant {spec!r}: {key}={text!r} is not an integer") from None
    if value < minimum:
        raise VariantError(f"variant {spec!r}: {key}={value} must be >= {minimum}")
    return value


def _check_with_sparsity_config(spec: str, kind: str, config: dict) -> None:
    """The attention helper's own validation, so the grid never starts with a config it would reject."""
    from mlret_plugin.attention.config import SparsityConfig

    try:
        SparsityConfig(kind=kind, **config)
    except (TypeError, ValueError) as e:
        raise VariantError(f"variant {spec!r}: {e}") from e


def parse_variant(spec: str) -> AttentionVariant:
    """One spec (``local:window=64``) -> AttentionVariant; VariantError naming the problem otherwise."""
    text = spec.strip()
    kind, *options = text.split(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise VariantError(f"variant {spec!r}: unknown attention kind {kind!r}; expected one of {', '.join(KINDS)}")
    allowed = KINDS[kind]
    config: dict[str, int] = {}
    seen: list[str] = []
    for option in options:
        key, sep, value = option.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise VariantError(f"variant {spec!r}: option {option!r} is not key=value")
        if key not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise VariantError(f"variant {spec!r}: unknown option {key!r} for {kind}; allowed: {known}")
        if key in seen:
            raise VariantError(f"variant {spec!r}: option {key!r} given twice")
        seen.append(key)
        keyword, minimum = allowed[key]
        config[keyword] = _int_value(spec, key, value.strip(), minimum)
    missing = [k for k in REQUIRED.get(kind, ()) if k not in seen]
    if missing:
        raise VariantError(f"variant {spec!r}: {kind} needs {', '.join(f'{k}=N' for k in missing)}")
    if "block" in config and config["block"] not in BLOCK_SIZES:
        raise VariantError(f"variant {spec!r}: block={config['block']}; expected one of {BLOCK_SIZES}")
    if "per_head" in config:
        if config["per_head"] not in (0, 1):
            raise VariantError(f"variant {spec!r}: per_head={config['per_head']}; expected 0 or 1")
        config["per_head"] = bool(config["per_head"])
    _check_with_sparsity_config(spec, kind, config)
    by_keyword = {kw: key for key, (kw, _) in allowed.items()}
    label = ":".join([kind] + [f"{by_keyword[kw]}={int(v)}" for kw, v in config.items()])
    return AttentionVariant(kind, config, label)


def parse_variants(text: str) -> list[AttentionVariant]:
    """The whole ``--variants`` value. Dense must be among them (it is the reference for degradation)."""
    specs = [s for s in (part.strip() for part in text.split(",")) if s]
    if not specs:
        raise VariantError("--variants is empty; e.g. dense,local:window=64,block_sparse:block=32")
    variants = [parse_variant(s) for s in specs]
    labels = [v.label for v in variants]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise VariantError(f"--variants: {duplicates} given more than once")
    if "dense" not in labels:
        raise VariantError("--variants must include 'dense': degradation is measured against it")
    return variants
