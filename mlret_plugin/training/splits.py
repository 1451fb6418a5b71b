"""Splits of a LAReQA collection by article, so that no article is both trained on and evaluated.

A group (a question and its translations) belongs to the article of its answer, numbered as in the
collection's English file (else the first language that has the group): translations of one article
share its number in every language of XQuAD-R and MLQA-R. Draws are seeded, so every process and every
rerun gets the same articles.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import NamedTuple

from mlret_plugin.datasets import parse_dataset_id
from mlret_plugin.datasets.ids import article_of, group_id, lang_of
from mlret_plugin.datasets.lareqa import own_language_answers


def group_articles(rows: list[dict]) -> dict[str, int]:
    """Article number of each group, from rows ``{"group_id", "lang", "_doc_id"}`` (the answer's doc id);
    an English row decides where there is one."""
    article: dict[str, int] = {}
    for r in sorted(rows, key=lambda r: r["lang"] != "en"):
        article.setdefault(r["group_id"], article_of(r["_doc_id"]))
    return article


def answer_rows(dataset_id: str) -> list[dict]:
    """One row per query with an answer in its own language: ``{"group_id", "lang", "_doc_id"}``."""
    answers = own_language_answers(parse_dataset_id(dataset_id).load())
    return [{"group_id": group_id(qid), "lang": lang_of(qid), "_doc_id": did} for qid, did in answers.items()]


def collection_articles(dataset_id: str) -> list[int]:
    """Every article number of the groups of ``dataset_id``, ascending."""
    return sorted(set(group_articles(answer_rows(dataset_id)).values()))


def holdout_articles(dataset_id: str, k: int, seed: int) -> list[int]:
    """``k`` article numbers of the collection, drawn with ``seed`` (sorted)."""
    articles = collection_articles(dataset_id)
    if not 0 < k < len(articles):
        raise ValueError(f"holdout_articles={k}: {dataset_id} has {len(articles)} articles; hold out between 1 and "
                         f"{len(articles) - 1}")
    return sorted(random.Random(seed).sample(articles, k))


def held_out_groups(dataset_id: str, articles: set[int]) -> set[str]:
    """Groups (question ids) of ``dataset_id`` whose answer lies in ``articles``: exactly the groups
    ``lareqa_rows(..., exclude_articles=articles)`` drops, so they can be evaluated as a held-out split."""
    return {g for g, article in group_articles(answer_rows(dataset_id)).items() if article in articles}


class ArticleSplit(NamedTuple):
    """Article numbers of each part of a collection split by article (sorted)."""

    train: list[int]
    dev: list[int]
    test: list[int]

    def part(self, name: str) -> list[int]:
        if name not in self._fields:
            raise ValueError(f"split part {name!r}; expected one of {self._fields}")
        return getattr(self, name)

    def as_dict(self) -> dict[str, list[int]]:
        return self._asdict()


def article_split(dataset_id: str, dev: float = 0.2, test: float = 0.2, seed: int = 0) -> ArticleSplit:
    """The collection's articles in train / dev / test parts: the articles, shuffled with ``seed``, go to test
    until it holds at least ``test`` of the source questions (groups), then to dev until it holds ``dev``, the
    rest to train. Whole articles, so no article is both trained on and evaluated; the same arguments give
    the same split in every process."""
    if not (0 < dev < 1 and 0 < test < 1 and dev + test < 1):
        raise ValueError(f"article_split(dev={dev}, test={test}): expected shares in (0, 1) that sum below 1")
    groups_per_article = Counter(group_articles(answer_rows(dataset_id)).values())
    articles = sorted(groups_per_article)
    random.Random(seed).shuffle(articles)
    total = sum(groups_per_article.values())
    parts: dict[str, list[int]] = {"test": [], "dev": [], "train": []}
    counts = {"test": 0, "dev": 0}
    targets = {"test": test * total, "dev": dev * total}
    for article in articles:
        name = next((n for n in ("test", "dev") if counts[n] < targets[n]), "train")
        parts[name].append(article)
        if name in counts:
            counts[name] += groups_per_article[article]
    if not parts["train"]:
        raise ValueError(f"{dataset_id}: {len(articles)} articles leave none for training with dev={dev}, test={test}")
    return ArticleSplit(sorted(parts["train"]), sorted(parts["dev"]), sorted(parts["test"]))


__all__ = ["ArticleSplit", "answer_rows", "article_split", "collection_articles", "group_articles", "held_out_groups",
           "holdout_articles"]
