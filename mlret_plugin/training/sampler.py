"""HybridBatchSampler: each batch is monolingual (X-X) with probability alpha, else cross-lingual (X-Y).

arXiv 2408.10536. X-X: every pair of the batch in one language, drawn uniformly (or by size) among the
training languages. X-Y: every pair's query and passage in two different languages of its group. Every
batch holds distinct groups (two translations of one item in a batch are false in-batch negatives).

Distributed: the sampler draws one *step* at a time: ``world_size`` batches with one batch type (and one
X-X language) and pairwise distinct groups, yielded consecutively. accelerate's ``BatchSamplerShard``
hands consecutive batches to consecutive ranks, so at every step all ranks train on the same batch type
and no group repeats across ranks (all-gathered negatives stay valid).

Epoch: ``len()`` steps cover the usable groups once in count; each pool (a language's groups for X-X,
the multi-language groups for X-Y) is walked as a fresh permutation, so a group repeats only after its
pool is exhausted. ``set_epoch`` reseeds (seed, epoch).
"""
from __future__ import annotations

import functools
import logging
from collections import Counter
from typing import Iterable, Iterator

import numpy as np
import torch
from sentence_transformers.base.sampler import DefaultBatchSampler
from torch.utils.data import SequentialSampler

from mlret_plugin.training.data import row_table

log = logging.getLogger(__name__)

LANGUAGE_SAMPLING = ("uniform", "proportional")


def _distributed_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class _Pool:
    """Groups walked in a fresh permutation per pass; ``take`` returns distinct groups not in ``exclude``."""

    def __init__(self, groups: np.ndarray, rng: np.random.Generator):
        self.groups, self.rng = groups, rng
        self.order, self.pos = rng.permutation(groups), 0

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        chosen: set[int] = set()
        passes = 0
        while len(out) < n:
            if self.pos == len(self.order):
                self.order, self.pos = self.rng.permutation(self.groups), 0
                passes += 1
                if passes > 2:  # unreachable with the size checks in __init__
                    raise RuntimeError("pool too small for a batch of distinct groups")
            g = int(self.order[self.pos])
            self.pos += 1
            if g not in chosen:
                chosen.add(g)
                out.append(g)
        return out


class HybridBatchSampler(DefaultBatchSampler):
    """Batch sampler for ``SentenceTransformerTrainingArguments(batch_sampler=HybridBatchSampler.factory(...))``.

    ``dataset`` must come from ``mlret_plugin.training.parallel_dataset`` / ``load_parallel``. Batches are
    lists of row keys that the dataset's transform turns into (anchor, positive[, negative]) pairs; the
    key list of a batch of ``B`` pairs has ``2B + 1`` entries, which is what ``batch_size`` reports to the
    DataLoader machinery (``pairs_per_batch`` is ``B``).
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        drop_last: bool = False,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        alpha: float = 0.5,
        languages: Iterable[str] | None = None,
        language_sampling: str = "uniform",
        world_size: int | None = None,
    ):
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha={alpha}: the probability of a monolingual (X-X) batch must be in [0, 1]")
        if language_sampling not in LANGUAGE_SAMPLING:
            raise ValueError(f"language_sampling={language_sampling!r}; expected one of {LANGUAGE_SAMPLING}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected >= 1")
        groups, langs = row_table(dataset)
        super().__init__(SequentialSampler(range(len(groups))), batch_size=batch_size, drop_last=drop_last)
        self.alpha, self.seed, self.language_sampling = float(alpha), int(seed or 0), language_sampling
        self.pairs_per_batch = batch_size
        self.batch_size = 2 * batch_size + 1  # keys per full batch: marker + (query row, passage row) per pair
        self.world_size = world_size or _distributed_world_size()
        self.marker_row = len(groups)
        self._index(groups, langs, languages)

    @classmethod
    def factory(
        cls,
        alpha: float = 0.5,
        languages: Iterable[str] | None = None,
        language_sampling: str = "uniform",
        world_size: int | None = None,
    ) -> functools.partial:
        """A callable for ``SentenceTransformerTrainingArguments(batch_sampler=...)`` (picklable)."""
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha={alpha}: the probability of a monolingual (X-X) batch must be in [0, 1]")
        return functools.partial(
            cls, alpha=alpha, languages=None if languages is None else tuple(languages),
            language_sampling=language_sampling, world_size=world_size,
        )

    # -- index ------------------------------------------------------------------------------------
    def _index(self, groups: list[str], langs: list[str], languages: Iterable[str] | None) -> None:
        present = sorted(set(langs))
        if languages is None:
            self.languages = tuple(present)
        else:
            self.languages = tuple(languages)
            unknown = [lang for lang in self.languages if lang not in present]
            if unknown:
                raise ValueError(f"language(s) {unknown} have no rows; the data has {present}")
        wanted = set(self.languages)
        self.group_names: list[str] = []
        gid: dict[str, int] = {}
        rows_of: dict[int, dict[str, int]] = {}
        for row, (g, lang) in enumerate(zip(groups, langs)):
            if lang not in wanted:
                continue
            i = gid.setdefault(g, len(gid))
            if i == len(self.group_names):
                self.group_names.append(g)
            rows_of.setdefault(i, {})[lang] = row
        self.rows_of = rows_of
        step = self.pairs_per_batch * self.world_size
        n_groups = len(rows_of)
        if n_groups < step:
            raise ValueError(
                f"{n_groups} distinct groups but a step needs {step} (batch size {self.pairs_per_batch} x "
                f"{self.world_size} process(es)); lower the batch size or add data"
            )
        # X-X pools: a language needs a full step of distinct groups.
        self.mono_pools = {lang: np.array([g for g, r in rows_of.items() if lang in r]) for lang in self.languages}
        small = {lang: len(p) for lang, p in self.mono_pools.items() if len(p) < step}
        if small and self.alpha > 0:
            log.warning("X-X batches skip language(s) with fewer than %d groups: %s", step, small)
        self.mono_langs = [lang for lang in self.languages if lang not in small]
        if self.alpha > 0 and not self.mono_langs:
            raise ValueError(f"alpha={self.alpha} needs X-X batches but every language has fewer than {step} "
                             f"groups: {small}")
        # X-Y pool: groups in at least two training languages.
        cross = np.array([g for g, r in rows_of.items() if len(r) >= 2])
        self.single_language_groups = n_groups - len(cross)
        if self.single_language_groups and self.alpha < 1:
            by_lang = Counter(next(iter(r)) for r in rows_of.values() if len(r) == 1)
            log.warning("%d of %d groups exist in one language only and cannot form X-Y pairs (X-X only): %s",
                        self.single_language_groups, n_groups, dict(by_lang))
        if self.alpha < 1 and len(cross) < step:
            raise ValueError(f"alpha={self.alpha} needs X-Y batches but only {len(cross)} groups exist in two or "
                             f"more of {list(self.languages)}; a step needs {step}")
        self.cross_pool = cross
        weights = np.array([len(self.mono_pools[lang]) for lang in self.mono_langs], dtype=float)
        if self.language_sampling == "uniform" or not len(weights):
            weights = np.ones(len(self.mono_langs))
        self.mono_weights = weights / weights.sum() if len(weights) else weights
        self.n_groups = n_groups

    # -- batches ----------------------------------------------------------------------------------
    def _step_sizes(self) -> list[int]:
        """Pairs per batch for every step of an epoch (each step has ``world_size`` batches of that size)."""
        full, rest = divmod(self.n_groups, self.pairs_per_batch * self.world_size)
        sizes = [self.pairs_per_batch] * full
        if rest and not self.drop_last and rest // self.world_size > 0:
            sizes.append(rest // self.world_size)  # every rank gets a batch, so equal sizes
        return sizes

    def __len__(self) -> int:
        return len(self._step_sizes()) * self.world_size

    def batches(self) -> Iterator[tuple[str, list[tuple[int, int]]]]:
        """(kind, [(query_row, passage_row), ...]) per batch, kind in {'X-X', 'X-Y'}; the sampler's plan."""
        rng = np.random.default_rng([self.seed, self.epoch])
        mono = {lang: _Pool(self.mono_pools[lang], rng) for lang in self.mono_langs}
        cross = _Pool(self.cross_pool, rng) if len(self.cross_pool) else None
        for size in self._step_sizes():
            n = size * self.world_size
            if rng.random() < self.alpha:
                lang = self.mono_langs[rng.choice(len(self.mono_langs), p=self.mono_weights)]
                picked = mono[lang].take(n)
                pairs = [(self.rows_of[g][lang],) * 2 for g in picked]
                kind = "X-X"
            else:
                picked = cross.take(n)
                pairs = []
                for g in picked:
                    rows = self.rows_of[g]
                    avail = sorted(rows)
                    q, p = rng.choice(len(avail), size=2, replace=False)
                    pairs.append((rows[avail[q]], rows[avail[p]]))
                kind = "X-Y"
            for r in range(self.world_size):
                yield kind, pairs[r * size:(r + 1) * size]

    def __iter__(self) -> Iterator[list[int]]:
        for _kind, pairs in self.batches():
            keys = [self.marker_row]
            for q, p in pairs:
                keys += (q, p)
            yield keys
