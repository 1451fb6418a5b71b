"""Hard negatives for LAReQA training rows: another sentence of the answer's own paragraph.

In LAReQA only the answer sentence is relevant to a question (in each language); the other sentences of its
paragraph share the topic and most of the words, so they are the hardest negatives there are, and they are
never relevant. Each row's negative is drawn with a seed of its own (``{seed}:{group}:{lang}``), so the same
data gets the same negatives in every run. A paragraph of one sentence has no sibling: its row takes a
sentence of another paragraph of the same article, or (an article of one sentence) of the same language
(both counted and logged); a sentence relevant to the row's question is never chosen (checked against the
qrels of every language).
"""
from __future__ import annotations

import logging
import random
from collections import defaultdict

from mlret_plugin.datasets.ids import group_id, paragraph_of, parse_doc_id

log = logging.getLogger(__name__)


def add_paragraph_negatives(rows: list[dict], docs: dict, dataset, seed: int = 0) -> list[dict]:
    """Give each row (with ``_doc_id``, its answer) a ``negative`` text and its ``_negative_doc_id``, in place.

    ``docs``: doc id -> doc (``text``) of the collection; ``dataset``: the ir_datasets dataset (for its qrels)."""
    relevant: dict[str, set[str]] = defaultdict(set)
    for qrel in dataset.qrels_iter():
        if qrel.relevance > 0:
            relevant[group_id(qrel.query_id)].add(qrel.doc_id)
    pools: dict[str, dict] = {"paragraph": defaultdict(list), "article": defaultdict(list), "language": defaultdict(list)}
    for doc_id in docs:
        for level, key in _keys(doc_id).items():
            pools[level][key].append(doc_id)
    wider = {"article": 0, "language": 0}
    for row in rows:
        answer, banned = row["_doc_id"], relevant[row["group_id"]] | {row["_doc_id"]}
        keys = _keys(answer)
        for level in ("paragraph", "article", "language"):
            choices = [d for d in pools[level][keys[level]] if d not in banned]
            if choices:
                break
        else:
            raise ValueError(f"{answer}: no sentence of its language is free of question {row['group_id']}'s answers; "
                             "no hard negative can be drawn")
        if level != "paragraph":
            wider[level] += 1
        pick = random.Random(f"{seed}:{row['group_id']}:{row['lang']}").choice(sorted(choices))
        row["negative"], row["_negative_doc_id"] = docs[pick].text, pick
    if any(wider.values()):
        log.warning("hard negatives: of %d answers alone in their paragraph, %d got a sentence of the same article, "
                    "%d of the same language", sum(wider.values()), wider["article"], wider["language"])
    return rows


def _keys(doc_id: str) -> dict[str, object]:
    parsed = parse_doc_id(doc_id)
    return {"paragraph": paragraph_of(doc_id), "article": (parsed.lang, parsed.article), "language": parsed.lang}


__all__ = ["add_paragraph_negatives"]
