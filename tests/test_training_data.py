"""Parallel training data: loading from datasets.Dataset, JSONL, an ir_datasets id; bad input."""
from __future__ import annotations

import json

import datasets
import pytest

from mlret_plugin.training import load_parallel, parallel_dataset
from mlret_plugin.training.data import lareqa_rows, row_table

ROWS = [
    {"group_id": "g1", "lang": "en", "query": "where?", "passage": "here.", "negative": "there."},
    {"group_id": "g1", "lang": "de", "query": "wo?", "passage": "hier.", "negative": "dort."},
    {"group_id": "g2", "lang": "en", "query": "who?", "passage": "me.", "negative": "you."},
]


def test_rows_read_as_monolingual_pairs_outside_the_sampler():
    ds = parallel_dataset(ROWS)
    assert len(ds) == 4  # 3 rows + the marker row
    assert ds[1] == {"anchor": "wo?", "positive": "hier.", "negative": "dort."}
    assert ds[:3]["anchor"] == ["where?", "wo?", "who?"]
    assert row_table(ds) == (["g1", "g1", "g2"], ["en", "de", "en"])


def test_pair_keys_compose_cross_lingual_pairs_with_the_passage_rows_negative():
    ds = parallel_dataset(ROWS)
    marker = len(ds) - 1
    assert ds.__getitems__([marker, 0, 1, 2, 2]) == [
        {"anchor": "where?", "positive": "hier.", "negative": "dort."},
        {"anchor": "who?", "positive": "me.", "negative": "you."},
    ]


def test_jsonl_and_dataset_sources_agree(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    from_file = load_parallel(path)
    from_dataset = load_parallel(datasets.Dataset.from_list(ROWS))
    assert from_file.with_format(None).to_list() == from_dataset.with_format(None).to_list()
    assert row_table(load_parallel(path, languages=["en"])) == (["g1", "g2"], ["en", "en"])


def test_rebuilding_a_selected_parallel_dataset_keeps_one_marker_row():
    ds = parallel_dataset(ROWS)
    again = parallel_dataset(ds)
    assert len(again) == len(ds) and row_table(again) == row_table(ds)


def test_lareqa_id_rows_group_translations(lareqa_home):
    rows = lareqa_rows("mlqa-r")
    by_group: dict[str, set[str]] = {}
    for r in rows:
        by_group.setdefault(r["group_id"], set()).add(r["lang"])
        assert r["query"].startswith(r["lang"] + " ") and r["passage"].startswith(r["lang"] + " fact")
    # Fixture: 8 questions, every one in English; others in some languages only (MLQA-like).
    assert len(by_group) == 8 and all("en" in langs for langs in by_group.values())
    assert any(len(langs) < 7 for langs in by_group.values())
    # The passage is the answer sentence: question "which fact is k001?" -> sentence with k001.
    for r in rows:
        token = r["query"].split()[-1].rstrip("?")
        assert token in r["passage"]
    context = lareqa_rows("mlqa-r/de", passage_field="context")
    assert all(len(r["passage"]) > len(r["query"]) and r["lang"] == "de" for r in context)


def test_lareqa_held_out_articles(lareqa_home):
    """Holding out article 1 removes exactly its groups (q1..), in every language, and keeps every row of
    article 0; held_out_groups names the same groups, so they can be evaluated."""
    from mlret_plugin.training.splits import collection_articles, held_out_groups

    everything = lareqa_rows("xquad-r")
    kept = lareqa_rows("xquad-r", exclude_articles={1})
    article_of_group = {r["group_id"]: int(r["group_id"][1]) for r in everything}  # fixture ids: q{a}{p}{s}
    assert {(r["group_id"], r["lang"]) for r in kept} == \
        {(r["group_id"], r["lang"]) for r in everything if article_of_group[r["group_id"]] == 0}
    assert held_out_groups("xquad-r", {1}) == {g for g, a in article_of_group.items() if a == 1}
    assert {r["lang"] for r in kept} == {r["lang"] for r in everything}  # every language keeps article 0
    assert collection_articles("xquad-r") == [0, 1]


# -- bad input ----------------------------------------------------------------------------------------
def test_missing_columns_named():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['passage'\]"):
        parallel_dataset([{"group_id": "g", "lang": "en", "query": "q"}])
    with pytest.raises(ValueError, match=r"dataset: missing column\(s\) \['group_id', 'lang'\]"):
        load_parallel(datasets.Dataset.from_dict({"query": ["q"], "passage": ["p"]}))


def test_jsonl_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        load_parallel(bad)
    bad.write_text(json.dumps({"group_id": "g", "lang": "en", "query": "", "passage": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: missing or empty \['query'\]"):
        load_parallel(bad)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_parallel(tmp_path / "nope.jsonl")


def test_duplicate_group_language_and_unknown_id():
    with pytest.raises(ValueError, match=r"\('g1', 'en'\)"):
        parallel_dataset(ROWS + [ROWS[0]])
    with pytest.raises(ValueError, match="not an mlret dataset id"):
        load_parallel("squad/train")
    with pytest.raises(ValueError, match="passage_field"):
        lareqa_rows("mlqa-r", passage_field="title")
