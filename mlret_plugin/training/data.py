"""Parallel training data for hybrid batches: one row per (group, language).

A row is ``(group_id, lang, query, passage)`` with an optional hard ``negative``; translations of one
QA item share a ``group_id``. Rows are stored once. Training pairs are composed when a batch is read:
the batch sampler yields row keys ``[PAIR_MARKER_ROW, q_1, p_1, q_2, p_2, ...]`` and the dataset's
transform pairs row ``q_i``'s query with row ``p_i``'s passage. An X-Y pair is therefore two row
indices, never a stored text: memory is O(rows), not O(rows x languages^2).

The marker row (the last row, a copy of row 0 flagged ``_pair_marker``) tells the transform that the
keys come in (query row, passage row) pairs. Any other access (``ds[i]``, ``ds[:10]``, ``select``, as the
model card does) reads each row as its own monolingual pair, so the dataset stays an ordinary
``datasets.Dataset`` for the SentenceTransformerTrainer.

Image-text rows (``image`` in place of ``passage``) build the same dataset with images as passages, decoded
per batch: ``mlret_plugin.training.image_data``; ``read_jsonl`` / ``load_parallel`` hand them over (JSONL
rows, and a ``datasets.Dataset`` with an ``image`` column).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable

import datasets

from mlret_plugin.constants import PASSAGE_FIELDS
from mlret_plugin.datasets import parse_dataset_id
from mlret_plugin.datasets.ids import group_id
from mlret_plugin.datasets.lareqa import own_language_answers
from mlret_plugin.training.splits import group_articles, held_out_groups  # noqa: F401  (held_out_groups: moved)

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("group_id", "lang", "query", "passage")
NEGATIVE_COLUMN = "negative"
MARKER_COLUMN = "_pair_marker"


def _check_rows(columns: Iterable[str], where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {missing}; parallel training data needs {list(REQUIRED_COLUMNS)} "
            f"(optional {NEGATIVE_COLUMN!r}), got {sorted(columns)}"
        )


def compose_pairs(batch: dict[str, list]) -> dict[str, list]:
    """Rows -> (anchor, positive[, negative]). Pair mode when the first row is the marker row."""
    has_negative = NEGATIVE_COLUMN in batch
    if batch[MARKER_COLUMN] and batch[MARKER_COLUMN][0]:
        q_rows = range(1, len(batch["query"]), 2)
        out = {"anchor": [batch["query"][i] for i in q_rows], "positive": [batch["passage"][i + 1] for i in q_rows]}
        if has_negative:
            out["negative"] = [batch[NEGATIVE_COLUMN][i + 1] for i in q_rows]
        return out
    out = {"anchor": list(batch["query"]), "positive": list(batch["passage"])}
    if has_negative:
        out["negative"] = list(batch[NEGATIVE_COLUMN])
    return out


def is_parallel_dataset(dataset: Any) -> bool:
    return isinstance(dataset, datasets.Dataset) and MARKER_COLUMN in dataset.column_names


def row_table(dataset: datasets.Dataset) -> tuple[list[str], list[str]]:
    """(group_ids, langs) of every real row (the marker row excluded), read without the pair transform."""
    if not is_parallel_dataset(dataset):
        raise TypeError(
            "HybridBatchSampler needs a dataset built by mlret_plugin.training.parallel_dataset / "
            f"load_parallel (it pairs rows on the fly); got {type(dataset).__name__} with columns "
            f"{getattr(dataset, 'column_names', None)}"
        )
    plain = dataset.with_format(None)
    groups, langs, markers = plain["group_id"], plain["lang"], plain[MARKER_COLUMN]
    groups, langs, markers = list(groups), list(langs), list(markers)
    if not markers or not markers[-1] or any(markers[:-1]):
        raise ValueError("the parallel dataset was reordered or filtered: its marker row must be the last row only; "
                         "rebuild it with parallel_dataset() after selecting rows")
    return groups[:-1], langs[:-1]


def parallel_dataset(rows: datasets.Dataset | Iterable[dict], where: str = "rows") -> datasets.Dataset:
    """Validate parallel rows and return the pair-composing ``datasets.Dataset`` (marker row appended)."""
    if not isinstance(rows, datasets.Dataset):
        rows = list(rows)
        if not rows:
            raise ValueError(f"{where}: no rows")
        columns = set().union(*(r.keys() for r in rows))
        _check_rows(columns, where)
        keep = [c for c in (*REQUIRED_COLUMNS, NEGATIVE_COLUMN) if c in columns]
        for i, row in enumerate(rows):
            absent = [c for c in keep if row.get(c) in (None, "") and c != NEGATIVE_COLUMN]
            if absent:
                raise ValueError(f"{where}: row {i} has empty {absent}: {row}")
        rows = datasets.Dataset.from_dict({c: [str(r.get(c) or "") for r in rows] for c in keep})
    else:
        _check_rows(rows.column_names, where)
        rows = rows.with_format(None)
        if MARKER_COLUMN in rows.column_names:  # rebuilt after select/filter: drop the old marker row
            rows = rows.filter(lambda m: not m, input_columns=[MARKER_COLUMN]).remove_columns(MARKER_COLUMN)
        if len(rows) == 0:
            raise ValueError(f"{where}: no rows")
        extra = [c for c in rows.column_names if c not in (*REQUIRED_COLUMNS, NEGATIVE_COLUMN)]
        rows = rows.remove_columns(extra).cast(
            datasets.Features({c: datasets.Value("string") for c in rows.column_names if c not in extra})
        )
    duplicates = _duplicate_keys(rows["group_id"], rows["lang"])
    if duplicates:
        raise ValueError(
            f"{where}: {len(duplicates)} (group_id, lang) pair(s) appear more than once, e.g. {duplicates[:3]}; "
            "a group has one query/passage per language"
        )
    rows = rows.add_column(MARKER_COLUMN, [False] * len(rows))
    marker = rows.select([0]).with_format(None).to_dict()
    marker[MARKER_COLUMN] = [True]
    rows = datasets.concatenate_datasets([rows, datasets.Dataset.from_dict(marker, features=rows.features)])
    rows.set_transform(compose_pairs)
    return rows


def _duplicate_keys(groups: Iterable[str], langs: Iterable[str]) -> list[tuple[str, str]]:
    seen, dup = set(), []
    for key in zip(groups, langs):
        if key in seen:
            dup.append(key)
        seen.add(key)
    return dup


def read_jsonl(path: str | Path) -> list[dict]:
    """JSONL rows; errors name the file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object with {list(REQUIRED_COLUMNS)}, got {row!r}")
            if "image" in row:  # an image-text row (training.image_data): checked there, naming this line
                row["_where"] = f"{path}:{n}"
                rows.append(row)
                continue
            missing = [c for c in REQUIRED_COLUMNS if not row.get(c)]
            if missing:
                raise ValueError(f"{path}:{n}: missing or empty {missing}; expected {list(REQUIRED_COLUMNS)} "
                                 "(or 'image' in place of 'passage' for image-text rows)")
            rows.append(row)
    return rows


def lareqa_rows(dataset_id: str, passage_field: str = "text", exclude_articles: set[int] | None = None,
                hard_negatives: bool = False, keep_doc_ids: bool = False, seed: int = 0) -> list[dict]:
    """Rows of an mlret ir_datasets id: group = question id, passage = the answer sentence in the query's language.

    ``exclude_articles`` drops groups whose answer lies in those article numbers (held-out split by article,
    numbered as in the English file, else the first language that has the group). ``hard_negatives``: each row
    also gets a ``negative``, another sentence of the answer's paragraph (``training.negatives``; as the passage,
    with its paragraph for the context fields). ``keep_doc_ids``: keep ``_doc_id`` (the answer) and
    ``_negative_doc_id`` on the rows.
    """
    if passage_field not in PASSAGE_FIELDS:
        raise ValueError(f"passage_field={passage_field!r}; expected one of {PASSAGE_FIELDS}")
    ds = parse_dataset_id(dataset_id).load()
    docs = {d.doc_id: d for d in ds.docs_iter()}
    answer = own_language_answers(ds)
    rows, no_answer = [], 0
    for q in ds.queries_iter():
        did = answer.get(q.query_id)
        if did is None:
            no_answer += 1
            continue
        doc = docs[did]
        passage = {"text": doc.text, "context": doc.context, "text+context": f"{doc.text} {doc.context}"}[passage_field]
        rows.append({"group_id": group_id(q.query_id), "lang": q.lang, "query": q.text, "passage": passage,
                     "_doc_id": did})
    if no_answer:
        log.warning("%s: %d queries have no relevant candidate in their own language; skipped", dataset_id, no_answer)
    if exclude_articles:
        article = group_articles(rows)
        before = len(rows)
        rows = [r for r in rows if article[r["group_id"]] not in exclude_articles]
        log.warning("%s: held out %d rows of articles %s", dataset_id, before - len(rows), sorted(exclude_articles))
    if hard_negatives:
        from mlret_plugin.training.negatives import add_paragraph_negatives

        add_paragraph_negatives(rows, docs, ds, seed)
        for r in rows:
            negative = docs[r["_negative_doc_id"]]
            r["negative"] = {"text": negative.text, "context": negative.context,
                             "text+context": f"{negative.text} {negative.context}"}[passage_field]
    if not keep_doc_ids:
        for r in rows:
            del r["_doc_id"]
            r.pop("_negative_doc_id", None)
    return rows


def where_of(source) -> str:
    return "the dataset" if isinstance(source, datasets.Dataset) else str(source)


def load_parallel(
    source: str | Path | datasets.Dataset,
    passage_field: str = "text",
    languages: Iterable[str] | None = None,
    exclude_articles: set[int] | None = None,
    hard_negatives: bool = False,
) -> datasets.Dataset:
    """Parallel training data from a ``datasets.Dataset``, a JSONL file or an mlret ir_datasets id.

    ``hard_negatives`` (dataset ids only): each row also gets another sentence of its answer's paragraph as a
    ``negative`` (``lareqa_rows``); other sources bring their own ``negative`` column, if any.

    Rows with an ``image`` in place of the ``passage`` (JSONL, or a ``datasets.Dataset`` whose ``image`` column
    is a ``datasets.Image`` feature or file paths) give image-text data (``training.image_data``)."""
    if hard_negatives and (isinstance(source, datasets.Dataset) or str(source).endswith(".jsonl")
                           or Path(source).is_file()):
        raise ValueError(f"hard_negatives: drawn from an mlret dataset id's paragraphs; {where_of(source)} brings "
                         "its own 'negative' column instead")
    if isinstance(source, datasets.Dataset):
        if "image" in source.column_names:  # image-text rows, e.g. a hub image-caption set (training.image_data)
            from mlret_plugin.training.image_data import hf_image_parallel_dataset

            return hf_image_parallel_dataset(source, "dataset", languages)
        rows, where = source, "dataset"
    elif str(source).endswith(".jsonl") or Path(source).is_file():
        if not Path(source).is_file():
            raise FileNotFoundError(f"{source}: no such JSONL file")
        rows, where = read_jsonl(source), str(source)
    else:
        parse_dataset_id(str(source))  # clear error for an unknown id
        rows, where = lareqa_rows(str(source), passage_field, exclude_articles, hard_negatives), str(source)
    if languages is not None:
        wanted = set(languages)
        if isinstance(rows, datasets.Dataset):
            _check_rows(rows.column_names, where)
            rows = rows.filter(lambda lang: lang in wanted, input_columns=["lang"])
        else:
            rows = [r for r in rows if r.get("lang") in wanted]
    if isinstance(rows, list) and any("image" in r for r in rows):
        if not all("image" in r for r in rows):
            raise ValueError(f"{where}: mixes image-text rows (with 'image') and text rows; use one kind per file")
        from mlret_plugin.training.image_data import image_parallel_dataset

        return image_parallel_dataset(rows, where, base_dir=Path(source).parent)
    return parallel_dataset(rows, where)
