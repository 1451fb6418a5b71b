"""Tiny generated LAReQA-format collections, so tests never need ../shared.

Every language of both collections gets a file. XQuAD-like: every question exists in every language
and paragraphs are parallel. MLQA-like: a question exists in English and only in some other languages.
Each sentence carries a distinctive token ``k{a}{p}{s}`` that the questions about it repeat, so lexical
and dense retrievers have something to find.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mlret_plugin.datasets.subsets import COLLECTIONS

ARTICLES, PARAGRAPHS, SENTENCES = 2, 2, 3
QUESTIONS_PER_PARAGRAPH = 2  # about sentences 0 and 2


def _paragraph(lang: str, a: int, p: int, n_sentences: int, qids: list[tuple[str, int]]) -> dict:
    sentences = [f"{lang} fact k{a}{p}{s} number {a * 10 + p * 3 + s} is stated here." for s in range(n_sentences)]
    breaks, pos = [], 0
    for sentence in sentences:
        breaks.append([pos, pos + len(sentence)])
        pos += len(sentence) + 1
    qas = [
        {
            "id": qid,
            "question": f"{lang} which fact is k{a}{p}{s}?",
            "answers": [{"text": f"k{a}{p}{s}", "answer_start": breaks[s][0] + len(lang) + 6}],
        }
        for qid, s in qids
    ]
    return {"context": " ".join(sentences), "sentences": sentences, "sentence_breaks": breaks, "qas": qas}


def fixture_json(collection: str, lang: str, articles: int = ARTICLES) -> dict:
    langs = COLLECTIONS[collection]
    data = []
    for a in range(articles):
        paragraphs = []
        for p in range(PARAGRAPHS):
            qids = []
            for s in (0, 2):
                qid = f"q{a}{p}{s}"
                # MLQA-like: question (a, p, s) is translated into every other language only when
                # (a + p + s + language index) is even; English has all of them.
                if collection == "mlqa-r" and lang != "en" and (a + p + s + langs.index(lang)) % 2:
                    continue
                qids.append((qid, s))
            n_sentences = SENTENCES + (1 if collection == "mlqa-r" and lang == "en" else 0)
            paragraphs.append(_paragraph(lang, a, p, n_sentences, qids))
        data.append({"title": f"Article_{a}", "paragraphs": paragraphs})
    return {"version": "1.1", "data": data}


def write_fixture_collection(root: Path, articles: int = ARTICLES) -> Path:
    """Write ``root/{xquad-r,mlqa-r}/{lang}.json`` (+ LICENSE) and return root."""
    for collection, langs in COLLECTIONS.items():
        (root / collection).mkdir(parents=True, exist_ok=True)
        (root / collection / "LICENSE").write_text("fixture licence\n")
        for lang in langs:
            data = fixture_json(collection, lang, articles)
            (root / collection / f"{lang}.json").write_text(json.dumps(data, ensure_ascii=False))
    return root


def fixture_downloads(root: Path) -> dict:
    """The shipped downloads config with the md5s of the fixture files in ``root``."""
    from mlret_plugin.datasets.lareqa import _shipped_downloads

    config = json.loads(json.dumps(_shipped_downloads()))
    for collection, files in config.items():
        for lang, entry in files.items():
            entry["expected_md5"] = hashlib.md5((root / collection / f"{lang}.json").read_bytes()).hexdigest()
    return config


def seeded_home(tmp_path: Path, monkeypatch, articles: int = ARTICLES) -> Path:
    """Point IR_DATASETS_HOME at a fresh cache seeded with fixture files; returns the home folder."""
    from mlret_plugin.datasets import lareqa
    from mlret_plugin.datasets.seed import seed_cache

    source = write_fixture_collection(tmp_path / "lareqa-src", articles)
    home = tmp_path / "irds-home"
    monkeypatch.setenv("IR_DATASETS_HOME", str(home))
    config = fixture_downloads(source)
    monkeypatch.setattr(lareqa, "downloads_config", lambda: config)
    seed_cache(source)
    return home
