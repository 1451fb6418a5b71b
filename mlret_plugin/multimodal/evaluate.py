"""Zero-shot cross-lingual image retrieval through the evaluation harness (ir_measures, full depth).

Evaluation rows are image-text rows ``(group_id, lang, query=caption, image)`` of held-out images.
- ``mono`` (breakdown ``language``): captions of one language -> every image; one relevant image per
  caption. The summary is the mean over caption languages.
- ``multi`` (breakdown ``pool``): every image -> the pool of all captions in every language, relevant =
  the image's captions in all languages; MaxRankDist says whether captions of some languages rank
  systematically below others (the LAReQA pooled setting with images as queries).
Query ids are ``{lang}-{group}`` for captions and ``img-{group}`` for images, so ``evaluation.stats``
clusters a paired test by image (its captions in every language form one unit).
Scores are cosine similarities (the dual encoder's); measures come from ``FullDepthEvaluator`` (exact
full-depth ranks, trec_eval tie order).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mlret_plugin.tables import markdown_table
from mlret_plugin.evaluation.measures import FullDepthEvaluator, aggregate, is_max_rank_dist, parse_measures
from mlret_plugin.training.images import load_image

CAPTION_MEASURES = ("AP", "R@1", "R@5", "R@10")
POOL_MEASURES = ("AP", "R@10", "MaxRankDist")
IMAGE_QUERY_PREFIX = "img"


def eval_table(rows: Iterable[dict], where: str = "evaluation rows") -> list[dict]:
    """Validated rows (image paths resolved and checked, one image per group) as plain dicts."""
    from mlret_plugin.training.image_data import image_parallel_dataset

    plain = image_parallel_dataset(rows, where).with_format(None)
    return [r for r in plain.select(range(len(plain) - 1)).to_list()]  # the last row is the pair marker


def encode_images(model, paths: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Normalised image embeddings, decoding ``batch_size`` images at a time (never all in memory)."""
    out = []
    for start in range(0, len(paths), batch_size):
        images = [load_image(p, where=f"image {p}") for p in paths[start:start + batch_size]]
        out.append(model.encode_document(images, batch_size=batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True))
    return np.concatenate(out) if out else np.zeros((0, model.get_embedding_dimension()), dtype=np.float32)


def encode_captions(model, captions: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Normalised caption embeddings with the model's query prompt (encode_query)."""
    return model.encode_query(list(captions), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)


def evaluate_image_retrieval(
    model,
    rows: Iterable[dict],
    system: str,
    langs: Iterable[str] | None = None,
    caption_measures: Iterable[str] = CAPTION_MEASURES,
    pool_measures: Iterable[str] = POOL_MEASURES,
    batch_size: int = 64,
    per_query_sink: list | None = None,
    dataset: str = "images",
) -> list[dict]:
    """Result rows (summary rows first) of caption -> image per caption language and image -> caption pool.

    ``per_query_sink`` receives ``{"system", "setting", "dataset", "measure", "values"}`` records (the
    format of ``run_lareqa``'s, for ``evaluation.stats``)."""
    table = eval_table(rows)
    present = list(dict.fromkeys(r["lang"] for r in table))
    chosen = list(langs) if langs is not None else present
    unknown = [lang for lang in chosen if lang not in present]
    if unknown:
        raise ValueError(f"caption language(s) {unknown} have no evaluation rows; present: {present}")
    table = [r for r in table if r["lang"] in chosen]
    groups = list(dict.fromkeys(r["group_id"] for r in table))
    image_of = {r["group_id"]: r["passage"] for r in table}
    image_emb = encode_images(model, [image_of[g] for g in groups], batch_size)
    caption_ids = [f"{r['lang']}-{r['group_id']}" for r in table]
    caption_emb = encode_captions(model, [r["query"] for r in table], batch_size)
    out: list[dict] = []
    c_measures = [m for m in parse_measures(caption_measures) if not is_max_rank_dist(m)]
    for lang in chosen:
        idx = [i for i, r in enumerate(table) if r["lang"] == lang]
        qids = [caption_ids[i] for i in idx]
        qrels = {caption_ids[i]: {table[i]["group_id"]: 1} for i in idx}
        evaluator = FullDepthEvaluator(c_measures, qrels, groups)
        evaluator.add(qids, caption_emb[idx] @ image_emb.T)
        out += _rows(evaluator.per_query(), system, f"{dataset}/{lang}", "mono", "language", lang, "image",
                     per_query_sink)
    if len(chosen) > 1:
        qrels = {f"{IMAGE_QUERY_PREFIX}-{g}": {} for g in groups}
        for cid, r in zip(caption_ids, table):
            qrels[f"{IMAGE_QUERY_PREFIX}-{r['group_id']}"][cid] = 1
        evaluator = FullDepthEvaluator(pool_measures, qrels, caption_ids)
        evaluator.add(list(qrels), image_emb @ caption_emb.T)
        out += _rows(evaluator.per_query(), system, f"{dataset}/pool", "multi", "pool", "image", "all",
                     per_query_sink)
    return _summary(out) + out


def _rows(values: dict, system: str, dataset: str, setting: str, breakdown: str, qlang: str, dlang: str,
          sink: list | None) -> list[dict]:
    rows = []
    for measure, per_q in values.items():
        rows.append({"dataset": dataset, "system": system, "measure": str(measure), "value": aggregate(measure, per_q),
                     "setting": setting, "breakdown": breakdown, "qlang": qlang, "dlang": dlang,
                     "queries": len(per_q)})
        if sink is not None:
            sink.append({"system": system, "setting": setting, "dataset": dataset, "measure": str(measure),
                         "values": per_q})
    return rows


def _summary(rows: list[dict]) -> list[dict]:
    """Per (system, setting, measure): the mean over caption languages (mono) or the pool value (multi)."""
    out = []
    for key in dict.fromkeys((r["system"], r["setting"], r["measure"]) for r in rows):
        detail = [r for r in rows if (r["system"], r["setting"], r["measure"]) == key]
        out.append({"dataset": "images", "system": key[0], "setting": key[1], "measure": key[2],
                    "value": float(np.mean([r["value"] for r in detail])), "breakdown": "summary", "qlang": "all",
                    "dlang": "all", "subsets": len(detail)})
    return out


# --- outputs ---------------------------------------------------------------------------------------------------

def _fmt(value: float, measure: str) -> str:
    return "n/a" if value != value else f"{value:.1f}" if measure == "MaxRankDist" else f"{value:.4f}"


def language_table(rows: list[dict], measure: str = "AP") -> str:
    """Systems (rows) x caption languages (columns) of caption -> image ``measure``, plus their mean."""
    detail = [r for r in rows if r["breakdown"] == "language" and r["measure"] == measure]
    systems = list(dict.fromkeys(r["system"] for r in detail))
    langs = list(dict.fromkeys(r["qlang"] for r in detail))
    body = []
    for system in systems:
        cells = {r["qlang"]: r["value"] for r in detail if r["system"] == system}
        body.append([system] + [_fmt(cells.get(lang, float("nan")), measure) for lang in langs]
                    + [_fmt(float(np.mean(list(cells.values()))), measure)])
    name = "mAP" if measure == "AP" else measure
    return markdown_table(["system"] + [f"{lang} {name}" for lang in langs] + [f"mean {name}"], body)


def summary_table(rows: list[dict]) -> str:
    summary = [r for r in rows if r["breakdown"] == "summary"]
    columns = list(dict.fromkeys((r["setting"], r["measure"]) for r in summary))
    title = {"mono": "caption->image", "multi": "image->captions pool"}
    header = ["system"] + [f"{title[s]} {'mAP' if m == 'AP' else m}" for s, m in columns]
    body = []
    for system in dict.fromkeys(r["system"] for r in summary):
        cells = {(r["setting"], r["measure"]): r["value"] for r in summary if r["system"] == system}
        body.append([system] + [_fmt(cells[c], c[1]) if c in cells else "" for c in columns])
    return markdown_table(header, body)


def heatmap(rows: list[dict], path: Path, measure: str = "AP") -> Path | None:
    """PNG heatmap: systems (rows) x caption languages (columns) of caption -> image ``measure``."""
    from mlret_plugin.evaluation.report import matrix_png

    detail = [r for r in rows if r["breakdown"] == "language" and r["measure"] == measure]
    if not detail:
        return None
    systems = list(dict.fromkeys(r["system"] for r in detail))
    langs = list(dict.fromkeys(r["qlang"] for r in detail))
    cells = {(r["system"], r["qlang"]): r["value"] for r in detail}
    matrix = [[cells.get((s, lang), float("nan")) for lang in langs] for s in systems]
    return matrix_png(matrix, systems, langs, Path(path), title=f"{'mAP' if measure == 'AP' else measure} by caption language",
                      xlabel="caption language (caption -> image)")


def write_image_outputs(rows: list[dict], out_dir: str | Path, note: str | None = None) -> dict[str, Path]:
    """results.jsonl, report.md (summary + per-language table) and heatmap.png, each written atomically."""
    from mlret_plugin.evaluation.report import atomic_write_text, write_results_jsonl

    out_dir = Path(out_dir)
    written = {"results": write_results_jsonl(rows, out_dir / "results.jsonl")}
    png = heatmap(rows, out_dir / "heatmap.png")
    parts = ["# Zero-shot cross-lingual image retrieval", ""]
    if note:
        parts += [note, ""]
    parts += ["## Summary", "", summary_table(rows), "", "## caption -> image mAP by caption language", "",
              language_table(rows), ""]
    if png is not None:
        written["heatmap"] = png
        parts += [f"![mAP by caption language]({png.name})", ""]
    written["report"] = atomic_write_text(out_dir / "report.md", "\n".join(parts))
    return written
