"""The noise transform: deterministic, candidates only, length grows as specified, capped at max length."""
from __future__ import annotations

import math

import pytest

from mlret_plugin.datasets import LareqaDoc
from mlret_plugin.experiments.noise import NoiseSpec, add_noise, paragraph_of, token_counter


def _docs(langs=("en", "de"), articles=3, paragraphs=3, sentences=3) -> list[LareqaDoc]:
    docs = []
    for lang in langs:
        for a in range(articles):
            for p in range(paragraphs):
                texts = [f"{lang} sentence a{a} p{p} s{s} " + "word " * (2 + s) for s in range(sentences)]
                texts = [t.strip() for t in texts]
                context = " ".join(texts)
                docs += [LareqaDoc(f"{lang}-a{a}-p{p}-s{s}", t, context, lang, f"T{a}") for s, t in enumerate(texts)]
    return docs


def test_level_zero_is_identity():
    docs = _docs()
    out, stats = add_noise(docs, NoiseSpec(0.0))
    assert out == docs and stats.distractor_tokens == 0


@pytest.mark.parametrize("level", [0.5, 1.0, 2.0])
def test_length_grows_as_specified(level):
    docs = _docs()
    out, stats = add_noise(docs, NoiseSpec(level, seed=3))
    longest = max(len(d.text.split()) for d in docs)
    for before, after in zip(docs, out):
        original = len(before.context.split())
        added = len(after.context.split()) - original
        target = math.ceil(level * original)
        assert after.context.startswith(before.context + " ")
        # whole sentences until the target is reached: at least the target, less than one sentence more
        assert target <= added < target + longest
    assert stats.level >= level and stats.capped == 0


def test_candidates_only_ids_and_sentences_unchanged():
    docs = _docs()
    out, _ = add_noise(docs, NoiseSpec(1.0))
    assert [d.doc_id for d in out] == [d.doc_id for d in docs]
    assert [(d.text, d.lang, d.title) for d in out] == [(d.text, d.lang, d.title) for d in docs]
    assert all(a.context != b.context for a, b in zip(out, docs))


def test_deterministic_per_seed_and_order_independent():
    docs = _docs()
    a, _ = add_noise(docs, NoiseSpec(1.0, seed=7))
    b, _ = add_noise(docs, NoiseSpec(1.0, seed=7))
    c, _ = add_noise(docs, NoiseSpec(1.0, seed=8))
    assert a == b
    assert a != c
    # one paragraph's noise does not depend on which other paragraphs are transformed with it
    subset = [d for d in docs if paragraph_of(d.doc_id) == "en-a1-p2"]
    alone, _ = add_noise(subset, NoiseSpec(1.0, seed=7), source_docs=docs)
    assert alone == [d for d in a if paragraph_of(d.doc_id) == "en-a1-p2"]


def test_same_paragraph_shares_context_and_distractors_come_from_elsewhere():
    docs = _docs()
    out, _ = add_noise(docs, NoiseSpec(1.0, seed=1))
    by_paragraph = {}
    for d in out:
        by_paragraph.setdefault(paragraph_of(d.doc_id), set()).add(d.context)
    assert all(len(c) == 1 for c in by_paragraph.values())
    for before, after in zip(docs, out):
        extra = after.context[len(before.context):]
        a_p = before.doc_id.split("-", 1)[1].rsplit("-s", 1)[0]  # e.g. a1-p2
        assert f" {a_p} " not in extra  # never the paragraph itself (or its translation)
        assert f"{before.lang} sentence" in extra  # same language by default
        other = "de" if before.lang == "en" else "en"
        assert f"{other} sentence" not in extra


def test_mixed_languages_draws_from_every_language():
    docs = _docs()
    out, _ = add_noise(docs, NoiseSpec(2.0, mixed=True, seed=0))
    noise = " ".join(after.context[len(before.context):] for before, after in zip(docs, out) if before.lang == "en")
    assert "de sentence" in noise and "en sentence" in noise


def test_cap_at_max_length_with_tokenizer():
    from tiny_models import train_tiny_tokenizer

    tok = train_tiny_tokenizer()
    count = token_counter(tok)
    docs = _docs(langs=("en",))
    max_length = 160
    out, stats = add_noise(docs, NoiseSpec(5.0), tokenizer=tok, max_length=max_length)
    assert stats.capped > 0 and stats.distractor_tokens > 0
    for d in out:
        pair = len(tok(d.text, d.context)["input_ids"])
        assert pair <= max_length
    # token levels are counted with the tokenizer, not words
    assert stats.original_tokens == sum(count(d.context) for d in {paragraph_of(d.doc_id): d for d in docs}.values())


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_levels_rejected(bad):
    with pytest.raises(ValueError, match="noise level"):
        NoiseSpec(bad)


def test_no_distractor_source_is_an_error():
    docs = [d for d in _docs(langs=("en",)) if paragraph_of(d.doc_id) == "en-a0-p0"]
    with pytest.raises(ValueError, match="no distractor"):
        add_noise(docs, NoiseSpec(1.0))
