"""High-noise contexts: lengthen each candidate's paragraph with distractor sentences from other paragraphs.

The transform touches candidates only (``LareqaDoc.context``); doc ids, sentences, queries and qrels are
unchanged, so the same qrels judge the noisy run.

Definitions
- *token*: a token of the model's tokenizer without special tokens when a tokenizer is given (what the
  experiments use, so the level is what the attention sees); otherwise a whitespace-separated word
  (scripts written without spaces, zh / th, then count a sentence as very few tokens: pass a tokenizer).
- *level*: distractor tokens / original context tokens. Level 1 doubles the context. Distractors are
  whole sentences added until the target ``ceil(level * original)`` is reached, so the achieved level is
  at least the target and exceeds it by less than one sentence, unless capped.
- *cap*: with ``max_length`` the encoded pair ``[CLS] sentence [SEP] noisy context [SEP]`` must fit the
  model's max length (``pair_overhead`` special tokens; the paragraph's longest sentence is reserved), so
  nothing is truncated and the extra length really reaches the attention. Distractors that would not
  fit are skipped; the achieved level then stays below the target, which ``NoiseStats`` reports.
- *distractors*: candidate sentences of other paragraphs, drawn uniformly at random; never from the same
  paragraph index ``a{article}-p{paragraph}`` in any language (in XQuAD-R those are translations of the
  paragraph, i.e. not distractors). Same language by default; ``mixed=True`` draws from every language
  of ``source_docs``. Distractors are appended after the paragraph, separated by a space.
- *seeding*: one ``random.Random`` per paragraph, seeded with ``f"{seed}:{paragraph}"``, so the result
  depends only on (seed, level, inputs), not on processing order; every sentence of one paragraph
  gets the same noisy context.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from mlret_plugin.datasets import LareqaDoc
from mlret_plugin.datasets.ids import paragraph_of, parallel_paragraph

PAIR_OVERHEAD = 3  # [CLS] A [SEP] B [SEP] (BERT); XLM-R's <s> A </s></s> B </s> needs 4: pass pair_overhead
MAX_SKIPS = 32  # consecutive distractors that do not fit before a paragraph is declared full


@dataclass(frozen=True)
class NoiseSpec:
    level: float
    mixed: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.level, (int, float)) and math.isfinite(self.level)) or self.level < 0:
            raise ValueError(f"noise level {self.level!r}: expected a finite number >= 0 (distractor / original tokens)")

    @property
    def label(self) -> str:
        return f"{self.level:g}" + ("-mixed" if self.mixed else "")


@dataclass
class NoiseStats:
    paragraphs: int = 0
    original_tokens: int = 0
    distractor_tokens: int = 0
    capped: int = 0  # paragraphs whose target was not reached because of max_length

    @property
    def level(self) -> float:
        """Achieved level over all paragraphs (token-weighted)."""
        return self.distractor_tokens / self.original_tokens if self.original_tokens else 0.0

    def as_dict(self) -> dict:
        return {"paragraphs": self.paragraphs, "original_tokens": self.original_tokens,
                "distractor_tokens": self.distractor_tokens, "achieved_level": self.level, "capped": self.capped}


def token_counter(tokenizer=None) -> Callable[[str], int]:
    """Tokens of a text: the tokenizer's (no special tokens) if given, else whitespace words."""
    if tokenizer is None:
        return lambda text: len(text.split())

    def count(text: str) -> int:
        # verbose=False: counting a text longer than the model's max length is intended here, not a mistake
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    return count


def add_noise(
    docs: Sequence[LareqaDoc],
    spec: NoiseSpec,
    source_docs: Iterable[LareqaDoc] | None = None,
    tokenizer=None,
    max_length: int | None = None,
    pair_overhead: int = PAIR_OVERHEAD,
) -> tuple[list[LareqaDoc], NoiseStats]:
    """``docs`` with their contexts lengthened by distractors (see the module doc), and what was achieved.

    ``source_docs`` supplies distractor sentences (default: ``docs`` itself); for ``spec.mixed`` pass the
    candidates of every language that should contribute. Order and ids of ``docs`` are kept.
    """
    docs = list(docs)
    stats = NoiseStats()
    if spec.level == 0:
        return docs, stats
    count = token_counter(tokenizer)
    source = docs if source_docs is None else list(source_docs)
    by_paragraph: dict[str, list[LareqaDoc]] = {}
    for doc in docs:
        by_paragraph.setdefault(paragraph_of(doc.doc_id), []).append(doc)
    pools: dict[str, list[tuple[str, str]]] = {}  # lang (or "*") -> [(parallel key, sentence)]
    for doc in source:
        key = "*" if spec.mixed else doc.lang
        pools.setdefault(key, []).append((parallel_paragraph(doc.doc_id), doc.text))
    token_cache: dict[str, int] = {}

    def tokens(text: str) -> int:
        if text not in token_cache:
            token_cache[text] = count(text)
        return token_cache[text]

    noisy_context: dict[str, str] = {}
    for paragraph, members in by_paragraph.items():
        context = members[0].context
        original = tokens(context)
        target = math.ceil(spec.level * original)
        budget = None
        if max_length is not None:
            longest = max(tokens(d.text) for d in members)
            budget = max(0, max_length - pair_overhead - longest - original)
        pool_key = "*" if spec.mixed else members[0].lang
        candidates = pools.get(pool_key, [])
        own = parallel_paragraph(members[0].doc_id)
        rng = random.Random(f"{spec.seed}:{paragraph}")
        chosen: list[str] = []
        added, skips, used = 0, 0, set()
        eligible = sum(1 for k, _ in candidates if k != own)
        while added < target and len(used) < eligible and skips < MAX_SKIPS:
            i = rng.randrange(len(candidates))
            key, sentence = candidates[i]
            if key == own or i in used:
                continue
            used.add(i)
            n = tokens(sentence)
            if budget is not None and added + n > budget:
                skips += 1
                continue
            skips = 0
            chosen.append(sentence)
            added += n
        if budget is not None and chosen:
            # Token counts of joined text can differ from the sum of parts (subword merges at the joins):
            # check the real pair length and drop distractors until it fits.
            while chosen and longest + tokens(_join(context, chosen)) + pair_overhead > max_length:
                added -= tokens(chosen.pop())
        if not chosen and target > 0 and eligible == 0:
            raise ValueError(
                f"noise {spec.label}: paragraph {paragraph} has no distractor sentences in "
                f"{'any language' if spec.mixed else 'language ' + members[0].lang} (source_docs holds no other paragraph)"
            )
        stats.paragraphs += 1
        stats.original_tokens += original
        stats.distractor_tokens += added
        stats.capped += added < target
        noisy_context[paragraph] = _join(context, chosen)
    out = [d._replace(context=noisy_context[paragraph_of(d.doc_id)]) for d in docs]
    return out, stats


def _join(context: str, distractors: list[str]) -> str:
    return " ".join([context, *distractors]) if distractors else context
