"""LAReQA ids, written and read in one place.

- doc id: ``{lang}-a{article}-p{paragraph}-s{sentence}`` (``en-a3-p2-s0``): numbers are positions in the
  language's file; XQuAD-R's translations share article and paragraph numbers.
- query id: ``{lang}-{source question id}`` (``de-5725...``): translations of a question share the source id,
  the *group* of a question.

The readers also accept ids of other collections evaluated by the same code (image-text rows:
``img-{group}``, ``{lang}-{group}``): an id without "-" has no language ("") and is its own group.
"""
from __future__ import annotations

import re
from typing import NamedTuple

_DOC_ID = re.compile(r"^(?P<lang>[^-]+)-a(?P<article>\d+)-p(?P<paragraph>\d+)-s(?P<sentence>\d+)$")


class DocId(NamedTuple):
    lang: str
    article: int
    paragraph: int
    sentence: int

    def __str__(self) -> str:
        return doc_id(*self)


def doc_id(lang: str, article: int, paragraph: int, sentence: int) -> str:
    return f"{lang}-a{article}-p{paragraph}-s{sentence}"


def query_id(lang: str, source_id: str) -> str:
    return f"{lang}-{source_id}"


def parse_doc_id(value: str) -> DocId:
    """``en-a3-p2-s0`` -> DocId('en', 3, 2, 0); a ValueError naming the id otherwise."""
    match = _DOC_ID.match(value)
    if match is None:
        raise ValueError(f"doc_id {value!r}: expected {{lang}}-a{{article}}-p{{paragraph}}-s{{sentence}}, "
                         "e.g. en-a3-p2-s0")
    return DocId(match["lang"], int(match["article"]), int(match["paragraph"]), int(match["sentence"]))


def lang_of(entity_id: str) -> str:
    """The language of a doc id or query id (``de-5725...`` -> ``de``); "" for an id without "-"."""
    head, sep, _ = entity_id.partition("-")
    return head if sep else ""


def group_id(query_id: str) -> str:
    """The source question id shared by a question's translations; an id without "-" is its own group."""
    head, sep, tail = query_id.partition("-")
    return tail if sep else query_id


def article_of(value: str) -> int:
    """The article number of a doc id."""
    return parse_doc_id(value).article


def paragraph_of(value: str) -> str:
    """``en-a3-p2-s0`` -> ``en-a3-p2``: the paragraph a sentence belongs to, in its language."""
    parsed = parse_doc_id(value)
    return f"{parsed.lang}-a{parsed.article}-p{parsed.paragraph}"


def parallel_paragraph(value: str) -> str:
    """``en-a3-p2-s0`` -> ``a3-p2``: the paragraph across languages (XQuAD-R's translations share it)."""
    parsed = parse_doc_id(value)
    return f"a{parsed.article}-p{parsed.paragraph}"


__all__ = ["DocId", "article_of", "doc_id", "group_id", "lang_of", "paragraph_of", "parallel_paragraph",
           "parse_doc_id", "query_id"]
