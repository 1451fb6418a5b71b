"""HybridBatchSampler on synthetic parallel data: batch types, distinct groups, determinism, len, bad input."""
from __future__ import annotations

import logging
import math
import pickle

import pytest

from mlret_plugin.training import HybridBatchSampler, parallel_dataset

LANGS = ("ar", "de", "en", "es")


def synthetic_rows(n_groups: int = 120, langs=LANGS, missing=lambda g, lang: False) -> list[dict]:
    return [
        {"group_id": f"g{g}", "lang": lang, "query": f"{lang} q{g}", "passage": f"{lang} p{g}"}
        for g in range(n_groups) for lang in langs if not missing(g, lang)
    ]


@pytest.fixture(scope="module")
def parallel():
    # Spanish lacks every third group; group 7 exists in English only.
    return parallel_dataset(synthetic_rows(missing=lambda g, lang: (lang == "es" and g % 3 == 0)
                                           or (g == 7 and lang != "en")))


def decoded(ds, keys: list[int]) -> list[tuple[str, str, str, str]]:
    """(query group, query lang, passage group, passage lang) of every pair the dataset yields for keys."""
    out = []
    for item in ds.__getitems__(keys):
        ql, qg = item["anchor"].split()
        pl, pg = item["positive"].split()
        out.append((qg[1:], ql, pg[1:], pl))
    return out


def test_batches_read_back_as_hybrid_pairs(parallel):
    sampler = HybridBatchSampler(parallel, batch_size=8, drop_last=True, seed=0, alpha=0.5)
    kinds = [kind for kind, _ in sampler.batches()]
    assert len(kinds) == len(sampler) > 0
    for kind, keys in zip(kinds, sampler):
        pairs = decoded(parallel, keys)
        assert len(pairs) == 8
        assert all(qg == pg for qg, _, pg, _ in pairs), "query and passage must come from one group"
        groups = [qg for qg, *_ in pairs]
        assert len(set(groups)) == len(groups), f"duplicate group in a batch: {groups}"
        if kind == "X-X":
            assert len({ql for _, ql, _, pl in pairs} | {pl for _, ql, _, pl in pairs}) == 1
        else:
            assert all(ql != pl for _, ql, _, pl in pairs)


def test_xx_share_within_binomial_tolerance():
    ds = parallel_dataset(synthetic_rows(n_groups=400))
    for alpha in (0.2, 0.5, 0.8):
        kinds = []
        for epoch in range(5):
            sampler = HybridBatchSampler(ds, batch_size=4, drop_last=True, seed=11, alpha=alpha)
            sampler.set_epoch(epoch)
            kinds += [k for k, _ in sampler.batches()]
        n = len(kinds)
        share = kinds.count("X-X") / n
        assert abs(share - alpha) <= 4 * math.sqrt(alpha * (1 - alpha) / n), (alpha, share, n)


@pytest.mark.parametrize("alpha,kind", [(1.0, "X-X"), (0.0, "X-Y")])
def test_alpha_extremes_are_pure(parallel, alpha, kind):
    sampler = HybridBatchSampler(parallel, batch_size=8, drop_last=False, seed=3, alpha=alpha)
    assert {k for k, _ in sampler.batches()} == {kind}


def test_xx_languages_uniform_or_proportional():
    # English has every group, German a quarter of them.
    ds = parallel_dataset(synthetic_rows(n_groups=400, langs=("de", "en"), missing=lambda g, lang: lang == "de" and g % 4))
    counts = {}
    for sampling in ("uniform", "proportional"):
        langs = []
        for epoch in range(8):
            sampler = HybridBatchSampler(ds, batch_size=4, drop_last=True, seed=5, alpha=1.0, language_sampling=sampling)
            sampler.set_epoch(epoch)
            langs += [parallel_lang(ds, pairs) for _, pairs in sampler.batches()]
        counts[sampling] = langs.count("de") / len(langs)
        n = len(langs)
        expected = 0.5 if sampling == "uniform" else 100 / 500
        assert abs(counts[sampling] - expected) <= 4 * math.sqrt(expected * (1 - expected) / n), (sampling, counts)


def parallel_lang(ds, pairs) -> str:
    plain = ds.with_format(None)
    langs = {plain[q]["lang"] for q, _ in pairs}
    assert len(langs) == 1
    return langs.pop()


def test_languages_option_restricts_both_batch_types(parallel):
    sampler = HybridBatchSampler(parallel, batch_size=8, drop_last=True, seed=2, alpha=0.5, languages=["de", "es"])
    for keys in sampler:
        for _, ql, _, pl in decoded(parallel, keys):
            assert {ql, pl} <= {"de", "es"}


def test_deterministic_per_seed_and_epoch(parallel):
    def run(seed, epoch=0):
        s = HybridBatchSampler(parallel, batch_size=8, drop_last=False, seed=seed, alpha=0.5)
        s.set_epoch(epoch)
        return list(s)

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert run(1, epoch=0) != run(1, epoch=1)
    assert run(1, epoch=1) == run(1, epoch=1)


def test_len_and_drop_last(parallel):
    n_groups = 120  # group 7 is English-only but still a group
    for batch_size, drop_last in [(8, True), (8, False), (7, True), (7, False)]:
        sampler = HybridBatchSampler(parallel, batch_size=batch_size, drop_last=drop_last, seed=0)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        sizes = [(len(k) - 1) // 2 for k in batches]
        full, rest = divmod(n_groups, batch_size)
        assert sizes[:full] == [batch_size] * full
        assert sizes[full:] == ([] if drop_last or not rest else [rest])


def test_distributed_steps_share_type_and_have_distinct_groups(parallel):
    world = 2
    sampler = HybridBatchSampler(parallel, batch_size=6, drop_last=False, seed=4, alpha=0.5, world_size=world)
    plan = list(sampler.batches())
    assert len(plan) == len(sampler) and len(plan) % world == 0
    for step in range(0, len(plan), world):
        kinds = {kind for kind, _ in plan[step:step + world]}
        assert len(kinds) == 1
        keys = list(sampler)[step:step + world]
        pairs = [p for k in keys for p in decoded(parallel, k)]
        groups = [qg for qg, *_ in pairs]
        assert len(set(groups)) == len(groups)
        assert len({(len(k) - 1) // 2 for k in keys}) == 1, "ranks need equal batch sizes"
        if kinds == {"X-X"}:
            assert len({ql for _, ql, _, _ in pairs}) == 1, "all ranks use one X-X language per step"


def test_factory_is_picklable_and_builds_the_sampler(parallel):
    factory = pickle.loads(pickle.dumps(HybridBatchSampler.factory(alpha=0.25, languages=["de", "en"])))
    sampler = factory(parallel, batch_size=4, drop_last=True, valid_label_columns=None, generator=None, seed=9)
    assert isinstance(sampler, HybridBatchSampler)
    assert (sampler.alpha, sampler.languages, sampler.seed, sampler.pairs_per_batch) == (0.25, ("de", "en"), 9, 4)


def test_memory_grows_with_rows_not_language_pairs():
    """X-Y pairs are two row keys, composed when a batch is read: the dataset and the sampler's index hold one
    entry per (group, language) row, so going from 2 to 7 languages (1 to 21 language pairs per group) grows
    them like the rows (x3.5), not like the pairs (x21), and a batch is still 2B + 1 keys."""
    n_groups, batch = 50, 8
    sizes = {}
    for langs in (("de", "en"), ("ar", "de", "en", "es", "hi", "vi", "zh")):
        ds = parallel_dataset(synthetic_rows(n_groups=n_groups, langs=langs))
        sampler = HybridBatchSampler(ds, batch_size=batch, alpha=0.0, seed=0)
        indexed = sum(len(rows) for rows in sampler.rows_of.values())
        assert len(ds) == n_groups * len(langs) + 1 and indexed == n_groups * len(langs)
        keys = next(iter(sampler))
        assert len(keys) == 2 * batch + 1
        sizes[len(langs)] = (len(ds), indexed)
    assert sizes[7][1] / sizes[2][1] == 7 / 2


# -- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_unit_interval(parallel, alpha):
    with pytest.raises(ValueError, match=r"alpha=.*\[0, 1\]"):
        HybridBatchSampler(parallel, batch_size=4, alpha=alpha)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        HybridBatchSampler.factory(alpha=alpha)


def test_fewer_groups_than_batch_size():
    ds = parallel_dataset(synthetic_rows(n_groups=5))
    with pytest.raises(ValueError, match="5 distinct groups but a step needs 8"):
        HybridBatchSampler(ds, batch_size=8)
    with pytest.raises(ValueError, match=r"batch size 4 x 2 process"):
        HybridBatchSampler(ds, batch_size=4, world_size=2)


def test_small_language_is_skipped_for_xx_with_a_warning(caplog):
    ds = parallel_dataset(synthetic_rows(n_groups=40, missing=lambda g, lang: lang == "ar" and g > 2))
    with caplog.at_level(logging.WARNING):
        sampler = HybridBatchSampler(ds, batch_size=8, alpha=1.0, seed=0)
    assert "fewer than 8 groups" in caplog.text and "'ar': 3" in caplog.text
    assert "ar" not in sampler.mono_langs
    for keys in sampler:
        assert all(ql != "ar" for _, ql, _, _ in decoded(ds, keys))


def test_every_language_too_small_for_xx_is_an_error():
    # 20 groups, each in exactly one of two languages: no language has 16 groups.
    rows = [{"group_id": f"g{g}", "lang": LANGS[g % 2], "query": "q", "passage": "p"} for g in range(20)]
    with pytest.raises(ValueError, match="needs X-X batches"):
        HybridBatchSampler(parallel_dataset(rows), batch_size=16, alpha=0.5)


def test_single_language_groups_are_counted_and_reported(parallel, caplog):
    with caplog.at_level(logging.WARNING):
        sampler = HybridBatchSampler(parallel, batch_size=8, alpha=0.5)
    assert sampler.single_language_groups == 1
    assert "1 of 120 groups exist in one language only" in caplog.text and "'en': 1" in caplog.text
    assert "g7" not in {sampler.group_names[g] for g in sampler.cross_pool}


def test_no_cross_lingual_groups_is_an_error_unless_alpha_is_one():
    rows = synthetic_rows(n_groups=30, langs=("en",))
    with pytest.raises(ValueError, match="needs X-Y batches but only 0 groups"):
        HybridBatchSampler(parallel_dataset(rows), batch_size=4, alpha=0.5)
    assert len(HybridBatchSampler(parallel_dataset(rows), batch_size=4, alpha=1.0)) == 8


def test_unknown_language_and_plain_dataset_are_errors(parallel):
    import datasets

    with pytest.raises(ValueError, match=r"\['fr'\] have no rows"):
        HybridBatchSampler(parallel, batch_size=4, languages=["en", "fr"])
    with pytest.raises(TypeError, match="parallel_dataset"):
        HybridBatchSampler(datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"]}), batch_size=1)
