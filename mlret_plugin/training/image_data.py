"""Image-text parallel rows for hybrid batches: ``(group_id, lang, query=caption, image)``.

One group is one image with its captions in several languages. The rows become the same pair-composing
dataset as text rows (``mlret_plugin.training.data``): the image path is stored in the ``passage``
column, so ``HybridBatchSampler`` and ``mlret train`` work unchanged, and the dataset's transform opens
the images of a batch only when that batch is read (never all in memory).

What the batch types mean with images as passages: an image has no language, so a pair's "passage
language" is void and only caption languages vary.
- X-X batch: every caption of the batch in one language (the sampler's one language per batch).
- X-Y batch: each pair's caption language is drawn independently among its group's languages (the
  sampler's query row of a pair of two different rows), so one batch mixes caption languages.
This is the analogue of text X-Y batches: the in-batch contrast then sets captions of several languages
against each other (in the image -> caption direction of a symmetric loss, and in the shared text
encoder's batch statistics), so language cannot serve as a shortcut for matching, as mixed-language
candidates do in text hybrid batches. With a caption -> image loss only (MultipleNegativesRankingLoss),
a pair's loss depends on its caption and on the batch's images, so X-X and X-Y differ only in which
caption languages share a batch.

A ``datasets.Dataset`` with an ``image`` column (a ``datasets.Image`` feature, as hub image-caption sets and
``Dataset.from_dict`` with PIL images give; or file paths) keeps its images where ``datasets`` stores them
(encoded bytes in the Arrow table, or a path): ``hf_image_parallel_dataset`` re-casts the column to
``datasets.Image(decode=False)`` and the transform decodes only the passage rows of a batch when it is read.
Its ``passage`` column then holds a label (``dataset: row 17``) that decode errors name.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Iterable

import datasets
from PIL import Image, UnidentifiedImageError

from mlret_plugin.training.data import MARKER_COLUMN, NEGATIVE_COLUMN, compose_pairs, parallel_dataset
from mlret_plugin.training.images import check_image_file, load_image, save_image_atomic

IMAGE_REQUIRED_COLUMNS = ("group_id", "lang", "query", "image")
IMAGE_COLUMN = "_image_passage"  # flag column: this dataset's passages are images
# From a datasets.Dataset: the row's image as datasets stores it ({"bytes", "path"}, Image(decode=False)).
IMAGE_DATA_COLUMN = "_image_data"
_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def is_image_dataset(dataset) -> bool:
    return isinstance(dataset, datasets.Dataset) and IMAGE_COLUMN in dataset.column_names


def _image_pair_transform(batch: dict[str, list]) -> dict[str, list]:
    """As ``compose_pairs``, with each passage image (its path, or the image a ``datasets.Dataset`` stored) decoded
    as RGB: only this batch's passage images.

    Plain row access (``ds[0]``, as sentence-transformers' model card reads the columns) also returns the
    row's own columns, with the image opened, so (query, passage) read as (caption, image)."""
    n = len(batch["passage"])
    # The sampler's keys are the marker + (query row, passage row) pairs; the marker row read alone (a slice
    # at the end of the dataset) is a plain row.
    pair_mode = n > 1 and batch[MARKER_COLUMN][0]
    plain = {k: v for k, v in batch.items() if k != IMAGE_COLUMN}
    if not pair_mode:
        plain[MARKER_COLUMN] = [False] * n
    out = compose_pairs(plain)
    rows = range(2, n, 2) if pair_mode else range(n)
    out["positive"] = [_open_row_image(batch, i) for i in rows]
    if not pair_mode:
        out.update({k: v for k, v in batch.items() if k not in ("passage", IMAGE_DATA_COLUMN)}, passage=out["positive"])
    return out


def _open_row_image(batch: dict[str, list], i: int) -> Image.Image:
    who = f"(group {batch['group_id'][i]!r}, lang {batch['lang'][i]!r})"
    if IMAGE_DATA_COLUMN not in batch:  # the passage is the image's path
        return load_image(batch["passage"][i], where=f"image row {who}")
    stored, where = batch[IMAGE_DATA_COLUMN][i], f"{batch['passage'][i]} {who}"
    if stored.get("bytes") is None:
        return load_image(stored["path"], where=where)
    try:
        with Image.open(io.BytesIO(stored["bytes"])) as im:
            return im.convert("RGB")  # convert() decodes
    except _UNREADABLE as e:
        raise ValueError(f"{where}: image {_describe(stored)} is not a readable image ({type(e).__name__}: {e})") from e


def image_parallel_dataset(rows: Iterable[dict], where: str = "rows", base_dir: str | Path | None = None,
                           image_dir: str | Path | None = None) -> datasets.Dataset:
    """Validate image-text rows and return the pair-composing dataset (``HybridBatchSampler`` input).

    ``image`` is a path (relative paths resolve against ``base_dir``) or a PIL image; PIL images are
    written once to ``image_dir`` as PNG (required then). Every image file is checked (exists, is a
    readable image) and every group must have one image; errors name the row.
    """
    rows = list(rows)
    if not rows:
        raise ValueError(f"{where}: no rows")
    base = Path(base_dir) if base_dir is not None else None
    written: dict[int, str] = {}  # id(PIL image) -> the file it was written to
    checked: set[str] = set()
    image_of_group: dict[str, tuple[str, int]] = {}
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: row {i}: expected a dict with {list(IMAGE_REQUIRED_COLUMNS)}, got {row!r}")
        label = f"{row.get('_where') or f'{where}: row {i}'} (group {row.get('group_id')!r}, lang {row.get('lang')!r})"
        missing = [c for c in IMAGE_REQUIRED_COLUMNS if row.get(c) is None or row.get(c) == ""]
        if missing:
            raise ValueError(f"{label}: missing or empty {missing}; image-text rows need {list(IMAGE_REQUIRED_COLUMNS)}")
        if row.get("negative") or row.get("passage"):
            raise ValueError(f"{label}: image-text rows take 'image' as the passage; a 'passage' or hard 'negative' "
                             "column is not supported with images")
        image = row["image"]
        if isinstance(image, Image.Image):
            if image_dir is None:
                raise ValueError(f"{label}: a PIL image needs image_dir= (a folder to write it to, so the dataset "
                                 "holds paths and loads images per batch)")
            if id(image) not in written:
                path = Path(image_dir) / f"image-{len(written):06d}.png"
                written[id(image)] = str(save_image_atomic(image.convert("RGB"), path).resolve())
            path = written[id(image)]
        elif isinstance(image, (str, Path)):
            path = Path(image)
            if not path.is_absolute() and base is not None:
                path = base / path
            path = str(path.resolve())
            if path not in checked:
                check_image_file(path, label)
                checked.add(path)
        else:
            raise ValueError(f"{label}: 'image' must be a file path or a PIL image, got {type(image).__name__}")
        group = str(row["group_id"])
        first = image_of_group.setdefault(group, (path, i))
        if first[0] != path:
            raise ValueError(f"{label}: group {group!r} already has image {first[0]} (row {first[1]}), this row has "
                             f"{path}; one group is one image with its captions")
        out.append({"group_id": group, "lang": str(row["lang"]), "query": str(row["query"]), "passage": path})
    ds = parallel_dataset(out, where).with_format(None)
    ds = ds.add_column(IMAGE_COLUMN, [True] * len(ds))
    # caption and image first: sentence-transformers' model card takes the first two columns as (query, document)
    ds = ds.select_columns(["query", "passage", "group_id", "lang", MARKER_COLUMN, IMAGE_COLUMN])
    ds.set_transform(_image_pair_transform)
    return ds


def _describe(stored: dict) -> str:
    if stored.get("bytes") is None:
        return f"file {stored['path']}"
    name = f" {stored['path']!r}" if stored.get("path") else ""
    return f"stored in the dataset{name} ({len(stored['bytes'])} bytes)"


def _checked_digest(stored: dict, label: str, verified: set[str], digest_of_path: dict[str, str]) -> str:
    """A hash of one stored image's encoded bytes (its own, or its file's, read once per path), checked to be a
    readable image the first time it is seen (``PIL.Image.verify``: structure only, no pixel decoding)."""
    path = None
    if stored.get("bytes") is None:
        path = str(Path(stored["path"]).resolve())
        if path in digest_of_path:
            return digest_of_path[path]
        if not Path(path).is_file():
            raise FileNotFoundError(f"{label}: image file {path} does not exist")
        data = Path(path).read_bytes()
    else:
        data = stored["bytes"]
    digest = hashlib.sha256(data).hexdigest()
    if digest not in verified:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
        except _UNREADABLE as e:
            raise ValueError(f"{label}: image {_describe(stored)} is not a readable image ({type(e).__name__}: {e})") \
                from e
        verified.add(digest)
    if path is not None:
        digest_of_path[path] = digest
    return digest


def hf_image_parallel_dataset(source: datasets.Dataset, where: str = "dataset",
                              languages: Iterable[str] | None = None) -> datasets.Dataset:
    """Image-text rows given as a ``datasets.Dataset`` -> the pair-composing dataset (``HybridBatchSampler`` input).

    Columns ``group_id, lang, query, image`` (others are ignored); ``image`` is a ``datasets.Image`` feature
    (PIL images or image files) or file paths (strings, relative to the working directory). The images are not
    copied or decoded: the column is kept as ``datasets.Image(decode=False)`` and a batch decodes its own
    passage images when it is read. Checked here, as for JSONL rows: no empty field, every distinct image is a
    readable image (``PIL.Image.verify`` on its encoded bytes, pixels not decoded), one image per group (same
    encoded bytes), one row per (group, language). Errors name the source row index, group and language.
    ``languages`` keeps the rows of those caption languages.
    """
    columns = source.column_names
    missing = [c for c in IMAGE_REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; image-text rows need {list(IMAGE_REQUIRED_COLUMNS)}, "
                         f"got {sorted(columns)}")
    unsupported = [c for c in ("passage", NEGATIVE_COLUMN) if c in columns]
    if unsupported:
        raise ValueError(f"{where}: column(s) {unsupported}: image-text rows take 'image' as the passage; a 'passage' "
                         "or hard 'negative' column is not supported with images")
    feature = source.features["image"]
    is_path = isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
    if not isinstance(feature, datasets.Image) and not is_path:
        raise ValueError(f"{where}: column 'image' has feature {feature}; expected a datasets.Image feature (PIL "
                         "images or image files; cast with dataset.cast_column('image', datasets.Image())) or file "
                         "paths")
    index = list(range(len(source)))  # source row numbers, named by errors
    rows = source.select_columns(list(IMAGE_REQUIRED_COLUMNS))
    if languages is not None:
        wanted = set(languages)
        index = [i for i, lang in zip(index, rows.with_format(None)["lang"]) if lang in wanted]
        rows = rows.select(index)
        if not index:
            raise ValueError(f"{where}: no rows in language(s) {sorted(wanted)}")
    if len(rows) == 0:
        raise ValueError(f"{where}: no rows")
    rows = rows.cast_column("image", datasets.Image(decode=False)).with_format(None)

    verified: set[str] = set()
    digest_of_path: dict[str, str] = {}
    image_of_group: dict[str, tuple[str, int, str]] = {}  # group -> (digest, first row, description)
    out = []
    n = 0
    for batch in rows.iter(batch_size=256):
        for group, lang, query, stored in zip(batch["group_id"], batch["lang"], batch["query"], batch["image"]):
            row = index[n]
            n += 1
            label = f"{where}: row {row} (group {group!r}, lang {lang!r})"
            empty = [c for c, v in (("group_id", group), ("lang", lang), ("query", query)) if v is None or v == ""]
            if stored is None or (stored.get("bytes") is None and not stored.get("path")):
                empty.append("image")
            if empty:
                raise ValueError(f"{label}: missing or empty {empty}; image-text rows need "
                                 f"{list(IMAGE_REQUIRED_COLUMNS)}")
            digest = _checked_digest(stored, label, verified, digest_of_path)
            group = str(group)
            first = image_of_group.setdefault(group, (digest, row, _describe(stored)))
            if first[0] != digest:
                raise ValueError(f"{label}: group {group!r} already has another image (row {first[1]}: {first[2]}), "
                                 f"this row has {_describe(stored)}; one group is one image with its captions")
            out.append({"group_id": group, "lang": str(lang), "query": str(query), "passage": f"{where}: row {row}"})
    text = parallel_dataset(out, where).with_format(None)  # + the marker row, a copy of the first row
    images = rows.select_columns(["image"]).rename_column("image", IMAGE_DATA_COLUMN)
    images = datasets.concatenate_datasets([images, images.select([0])])
    ds = datasets.concatenate_datasets([text, images], axis=1)
    ds = ds.add_column(IMAGE_COLUMN, [True] * len(ds))
    ds = ds.select_columns(["query", "passage", "group_id", "lang", MARKER_COLUMN, IMAGE_COLUMN, IMAGE_DATA_COLUMN])
    ds.set_transform(_image_pair_transform)
    return ds


__all__ = ["IMAGE_COLUMN", "IMAGE_DATA_COLUMN", "IMAGE_REQUIRED_COLUMNS", "hf_image_parallel_dataset",
           "image_parallel_dataset", "is_image_dataset"]
