"""Variant parser, pool rule and the resumable cell cache."""
from __future__ import annotations

import json

import pytest

from mlret_plugin.datasets import COLLECTIONS
from mlret_plugin.experiments.cache import CellCache, cell_key
from mlret_plugin.experiments.pools import language_order, parse_pool_sizes, pool_languages
from mlret_plugin.experiments.variants import VariantError, parse_variant, parse_variants


def test_variants_parse_into_set_attention_keywords():
    vs = parse_variants("dense, local:window=64:num_global=1 ,block_sparse:block=32:num_random=2:band=1:seed=3")
    assert [v.kind for v in vs] == ["dense", "local", "block_sparse"]
    assert vs[1].config == {"window": 64, "num_global": 1}
    assert vs[2].config == {"block": 32, "num_random": 2, "band": 1, "seed": 3}
    assert vs[2].label == "block_sparse:block=32:num_random=2:band=1:seed=3"
    from mlret_plugin.attention.config import SparsityConfig

    for v in vs:  # every parsed variant is a config the attention helper accepts
        SparsityConfig(kind=v.kind, **v.config)


@pytest.mark.parametrize("spec, message", [
    ("sparse:block=32", "unknown attention kind"),
    ("local:size=64", "unknown option 'size'"),
    ("local", "needs window"),
    ("local:window=-1", "must be an integer >= 0"),
    ("local:window=abc", "not an integer"),
    ("block_sparse:block=48", r"must be one of \(16, 32, 64, 128\)"),
    ("block_sparse:block=32:block=64", "given twice"),
    ("block_sparse:block", "not KEY=VALUE"),
    ("dense:window=3", "allowed: none"),
    ("block_sparse:block=32:per_head=2", "0 or 1"),
])
def test_bad_variants_name_the_problem(spec, message):
    with pytest.raises(VariantError, match=message):
        parse_variant(spec)


def test_variant_list_needs_dense_and_no_duplicates():
    with pytest.raises(VariantError, match="include 'dense'"):
        parse_variants("local:window=8")
    with pytest.raises(VariantError, match="more than once"):
        parse_variants("dense,local:window=8,local:window=8")
    with pytest.raises(VariantError, match="empty"):
        parse_variants(" , ")


def test_pool_rule_english_first_seeded_nested():
    for collection, langs in COLLECTIONS.items():
        order = language_order(collection, seed=0)
        assert order[0] == "en" and sorted(order) == sorted(langs)
        assert order == language_order(collection, seed=0)
        pools = [set(pool_languages(collection, n)) for n in range(2, len(langs) + 1)]
        assert all(a < b for a, b in zip(pools, pools[1:]))  # nested, one language more each time
        assert set(pool_languages(collection, len(langs))) == set(langs)
    assert language_order("xquad-r", seed=0) != language_order("xquad-r", seed=1)


def test_pool_sizes_validated():
    assert parse_pool_sizes("4,2,4", "mlqa-r") == [2, 4]
    with pytest.raises(ValueError, match="exceeds the 7 languages"):
        parse_pool_sizes("2,8", "mlqa-r")
    with pytest.raises(ValueError, match="too small"):
        parse_pool_sizes("1", "xquad-r")
    with pytest.raises(ValueError, match="integers"):
        parse_pool_sizes("2,x", "xquad-r")


def test_cell_key_is_stable_and_order_independent():
    assert cell_key({"a": 1, "b": [1, 2]}) == cell_key({"b": [1, 2], "a": 1})
    assert cell_key({"a": 1}) != cell_key({"a": 2})
    assert cell_key({"a": 1}) == "015abd7f5cc57a2d"  # fixed: keys must survive a restart and a new Python


def test_cache_resumes_and_recomputes_only_missing_cells(tmp_path):
    path = tmp_path / "cells.jsonl"
    cells = [{"variant": v, "noise": n} for v in ("dense", "local") for n in (0, 1)]
    computed = []

    def grid(stop_after=None):
        cache = CellCache(path)
        out = []
        for i, params in enumerate(cells):
            cell = cache.get(params)
            if cell is None:
                if stop_after is not None and len(computed) == stop_after:
                    raise KeyboardInterrupt
                computed.append(params)
                cell = cache.put(params, [{"value": i}])
            out.append(cell["rows"][0]["value"])
        return out

    with pytest.raises(KeyboardInterrupt):
        grid(stop_after=2)
    assert len(computed) == 2
    assert grid() == [0, 1, 2, 3]
    assert computed == cells  # the two finished cells were not recomputed
    assert grid() == [0, 1, 2, 3] and len(computed) == 4


def test_cache_drops_a_half_written_last_line(tmp_path, caplog):
    path = tmp_path / "cells.jsonl"
    cache = CellCache(path)
    cache.put({"x": 1}, [{"value": 1}])
    with open(path, "ab") as f:
        f.write(b'{"key": "abc", "params": {"x": 2}, "ro')  # killed mid-write
    reopened = CellCache(path)
    assert len(reopened) == 1 and reopened.get({"x": 1})["rows"] == [{"value": 1}]
    assert "unfinished last line" in caplog.text
    reopened.put({"x": 2}, [{"value": 2}])
    assert [json.loads(line)["params"] for line in path.read_text().splitlines()] == [{"x": 1}, {"x": 2}]


def test_cache_refuses_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "cells.jsonl"
    path.write_text('not json\n{"key": "k", "rows": []}\n')
    with pytest.raises(ValueError, match="line 1"):
        CellCache(path)


def test_pattern_density_matches_brute_force():
    from mlret_plugin.experiments.density import median_length, pattern_density

    for length in (5, 40, 100):  # local window 8: pairs with |i - j| <= 8, counted by hand
        expected = sum(abs(i - j) <= 8 for i in range(length) for j in range(length)) / length ** 2
        assert pattern_density("local", {"window": 8, "block": 16}, {length: 1}) == pytest.approx(expected)
    # a mixture of lengths is the candidate-weighted mean; dense keeps everything
    mixed = pattern_density("local", {"window": 8, "block": 16}, {"40": 3, "100": 1})
    at40 = pattern_density("local", {"window": 8, "block": 16}, {40: 1})
    at100 = pattern_density("local", {"window": 8, "block": 16}, {100: 1})
    assert mixed == pytest.approx((3 * at40 + at100) / 4)
    assert pattern_density("dense", {}, {512: 2}) == 1.0
    # block-sparse diagonal blocks of 16 at 32 tokens: two 16x16 blocks of 32x32
    assert pattern_density("block_sparse", {"block": 16, "band": 0}, {32: 1}) == pytest.approx(0.5)
    assert median_length({"10": 1, "20": 1, "30": 5}) == 30
