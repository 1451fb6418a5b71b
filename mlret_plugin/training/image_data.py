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
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import datasets
from PIL import Image

from mlret_plugin.training.data import MARKER_COLUMN, compose_pairs, parallel_dataset
from mlret_plugin.training.images import check_image_file, load_image, save_image_atomic

IMAGE_REQUIRED_COLUMNS = ("group_id", "lang", "query", "image")
IMAGE_COLUMN = "_image_passage"  # flag column: this dataset's passages are image paths


def is_image_dataset(dataset) -> bool:
    return isinstance(dataset, datasets.Dataset) and IMAGE_COLUMN in dataset.column_names


def _image_pair_transform(batch: dict[str, list]) -> dict[str, list]:
    """As ``compose_pairs``, with each passage path opened as an RGB image (only this batch's images).

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
    out["positive"] = [load_image(batch["passage"][i], where=f"image row (group {batch['group_id'][i]!r}, "
                                                         f"lang {batch['lang'][i]!r})") for i in rows]
    if not pair_mode:
        out.update({k: v for k, v in batch.items() if k != "passage"}, passage=out["positive"])
    return out


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


__all__ = ["IMAGE_COLUMN", "IMAGE_REQUIRED_COLUMNS", "image_parallel_dataset", "is_image_dataset"]
