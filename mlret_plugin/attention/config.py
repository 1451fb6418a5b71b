"""SparsityConfig: which attention pattern to use, validated on construction."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from mlret_plugin.constants import ATTENTION_KINDS as KINDS, BLOCK_SIZES


@dataclass(frozen=True)
class SparsityConfig:
    """An attention pattern.

    - ``dense``: every token attends to every token.
    - ``local``: token-exact sliding window ``|i - j| <= window``; the first ``num_global`` tokens (e.g.
      [CLS]) attend everywhere and are attended by all.
    - ``block_sparse``: BigBird-style blocks of ``block`` tokens: a band of ``band`` blocks either side of
      the diagonal, ``num_global`` global blocks (first blocks: full rows and columns), ``num_random``
      seeded random key blocks per query row, optional ``stride`` (every ``stride``-th key block is seen by
      all rows); random blocks differ per head when ``per_head``.

    ``block`` is also the tile size handed to the kernels for ``local`` (the band of blocks is the
    smallest cover of the window).
    """

    kind: str = "dense"
    window: int | None = None
    num_global: int = 0
    block: int = 64
    band: int = 1
    num_random: int = 0
    stride: int | None = None
    per_head: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"SparsityConfig.kind must be one of {KINDS}; got {self.kind!r}")
        if self.block not in BLOCK_SIZES:
            raise ValueError(f"SparsityConfig.block must be one of {BLOCK_SIZES}; got {self.block!r}")
        for name in ("num_global", "band", "num_random", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"SparsityConfig.{name} must be an integer >= 0; got {value!r}")
        if self.kind == "local":
            if self.window is None:
                raise ValueError("SparsityConfig(kind='local') needs window=<tokens either side>, e.g. window=256")
        if self.window is not None:
            if self.kind != "local":
                raise ValueError(f"SparsityConfig.window applies to kind='local' only; got kind={self.kind!r}")
            if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 0:
                raise ValueError(f"SparsityConfig.window must be an integer >= 0; got {self.window!r}")
        if self.stride is not None and (not isinstance(self.stride, int) or self.stride < 1):
            raise ValueError(f"SparsityConfig.stride must be None or an integer >= 1; got {self.stride!r}")
        if self.kind != "block_sparse":
            extra = [n for n in ("num_random", "stride", "per_head") if getattr(self, n) not in (0, None, False)]
            if extra:
                raise ValueError(f"SparsityConfig options {extra} apply to kind='block_sparse' only (kind={self.kind!r})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SparsityConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SparsityConfig keys {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**data)

    @classmethod
    def coerce(cls, value: "SparsityConfig | dict | str | None", **overrides: Any) -> "SparsityConfig":
        """A SparsityConfig from a config, a dict, or a kind name plus keyword options."""
        if value is None:
            value = "dense"
        if isinstance(value, SparsityConfig):
            return cls(**{**value.to_dict(), **overrides}) if overrides else value
        if isinstance(value, str):
            return cls.from_dict({"kind": value, **overrides})
        if isinstance(value, dict):
            return cls.from_dict({**value, **overrides})
        raise TypeError(f"expected a SparsityConfig, dict or kind name; got {type(value).__name__}")

    def layout(self, seq_len: int, num_heads: int = 1):
        """The BlockLayout of this pattern for ``seq_len`` tokens (cached)."""
        from mlret_plugin.attention.patterns import build_layout

        return build_layout(self, seq_len, num_heads)
