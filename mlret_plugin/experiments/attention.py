"""Research questions A and B: cross-lingual retrieval under sparse / local attention vs dense, as the pool
grows and as contexts get noisier.

Grid: attention variant x noise level x pool size. Each cell is ``run_lareqa`` (Mono / Cross / Multi
mAP over the full ranking, R@1, R@10, MaxRankDist, per language) over the pool's languages, with the
model's attention swapped in place (``set_attention``; weights unchanged) and the candidates' contexts
lengthened by the noise transform. Degradation is each variant minus dense at the same noise and pool.

Order of work: one variant at a time (optionally fine-tuned after the swap), one noise level at a time,
pool sizes ascending; pools are nested, so a language's candidates are encoded once per (variant,
noise) and reused by every larger pool. Queries are encoded once per variant. Finished cells are in
``OUT/cells.jsonl`` (their per-query AP / MaxRankDist in ``OUT/per_query/``); a restarted grid skips them.

Seeds: a fine-tuned grid trains every variant once per training seed (``seeds``, default 0, 1, 2) and
reports the mean +- std over seeds; a zero-shot swap has no training seed. ``seed`` is the data seed
(noise draws, pool order) and is the same for every training seed.

Joining commands: the report covers every finished cell in ``OUT`` that shares this grid's fixed settings
(model, collection, candidates, length, backend, data seed, fine-tune recipe), whatever its variant, noise
level, distractor language, pool or training seed. So a grid too long for one command runs as several
commands sharing one ``--out`` (one seed, one noise level, ... each), and each writes the joined report.
Each variant is tested against dense at the same noise, distractors and pool (``experiments.significance``),
and every two non-dense variants there against each other (block-sparse vs local: contrast rows).
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from mlret_plugin.constants import CANDIDATE_KINDS, LAREQA_MEASURES
from mlret_plugin.experiments.cache import CellCache, cell_key
from mlret_plugin.experiments.significance import save_per_query
from mlret_plugin.experiments.noise import NoiseSpec
from mlret_plugin.experiments.pools import parse_pool_sizes, pool_languages
from mlret_plugin.experiments.variants import AttentionVariant, check_variants

if TYPE_CHECKING:
    from mlret_plugin.attention.config import SparsityConfig

log = logging.getLogger(__name__)

MEASURES = LAREQA_MEASURES
TRAIN_FOR = {"xquad-r": "mlqa-r", "mlqa-r": "xquad-r"}  # zero-shot: fine-tune on the other collection
DEFAULT_POOLS = {"xquad-r": (2, 4, 7, 11), "mlqa-r": (2, 4, 7)}


@dataclass
class AttentionGrid:
    collection: str
    model: str  # path / hub id / 'offline-minilm'
    variants: list[AttentionVariant]
    noise: list[float]
    pool_sizes: list[int]
    out: Path
    candidates: str = "context"
    mixed_noise: bool = False
    seed: int = 0
    seeds: list[int | None] = field(default_factory=lambda: [None])  # training seeds; [None] when zero-shot
    max_seq_length: int | None = None
    batch_size: int = 32
    backend: str = "auto"  # the attention backend of the patterns
    precision: str = "fp32"  # fp32, or bf16 (torch.autocast) for encoding; part of a cell's key when not fp32
    finetune_steps: int = 0
    finetune_train: str | None = None
    finetune_alpha: float = 0.5
    finetune_batch_size: int = 16
    finetune_passages: str = "text+context"  # training passage: long inputs train the pattern on long texts
    model_label: str = ""
    resolved_model: str = field(default="", repr=False)
    train_data: object = field(default=None, repr=False)  # loaded and checked by build_grid
    embedding_cache: object = field(default=None, repr=False)  # DenseRetriever's cache=: None default, False off

    def cells(self) -> list[tuple[AttentionVariant, float, int, int | None]]:
        return [(v, n, p, s) for v in self.variants for n in self.noise for p in self.pool_sizes for s in self.seeds]

    def params(self, variant: AttentionVariant, noise: float, pool_size: int, train_seed: int | None = None) -> dict:
        """Everything that defines a cell's numbers (its cache key)."""
        return {
            "experiment": "attention", "collection": self.collection, "model": self.resolved_model,
            "variant": variant.params(), "noise": noise, "mixed_noise": self.mixed_noise if noise > 0 else False,
            "seed": self.seed, "pool": list(pool_languages(self.collection, pool_size, self.seed)),
            "candidates": self.candidates, "max_seq_length": self.max_seq_length, "backend": self.backend,
            **({"precision": self.precision} if self.precision != "fp32" else {}),
            "measures": list(MEASURES),
            "finetune": None if not self.finetune_steps else {
                "steps": self.finetune_steps, "train": self.finetune_train, "alpha": self.finetune_alpha,
                "batch_size": self.finetune_batch_size, "passages": self.finetune_passages, "seed": train_seed},
        }

    def joins(self, params: dict) -> bool:
        """Whether a cached cell belongs in this grid's report: equal on everything but the grid's axes."""
        def fixed(p: dict) -> dict:
            p = {k: v for k, v in p.items() if k not in ("variant", "noise", "mixed_noise", "pool")}
            if p.get("finetune"):
                p["finetune"] = {k: v for k, v in p["finetune"].items() if k != "seed"}
            return p

        reference = self.params(self.variants[0], self.noise[0], self.pool_sizes[0], self.seeds[0])
        return params.get("experiment") == "attention" and fixed(params) == fixed(reference)


def check_seeds(seeds: Sequence[int] | None, finetune_steps: int) -> list[int | None]:
    """The training seeds of a fine-tuned grid (default 0, 1, 2); a zero-shot grid has none ([None])."""
    if seeds is None:
        return [0, 1, 2] if finetune_steps else [None]
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty; e.g. [0, 1, 2]")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds {seeds}: expected integers, e.g. [0, 1, 2]")
    if not finetune_steps:
        raise ValueError("seeds: a zero-shot swap trains nothing, so it has no training seed; set finetune_steps "
                         "(seed sets the noise draws and pool order)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds}: a seed is given twice")
    return seeds


def check_noise(levels: Sequence[float]) -> list[float]:
    """Noise levels, sorted and unique; each a finite number >= 0."""
    levels = [float(x) for x in levels]
    if not levels:
        raise ValueError("noise is empty; e.g. [0, 0.5, 1]")
    for level in levels:
        NoiseSpec(level)  # >= 0 and finite, else a clear error
    return sorted(set(levels))


def parse_seeds(text: str | None, finetune_steps: int) -> list[int | None]:
    """``"0,1,2"`` -> [0, 1, 2] (checked as ``check_seeds``)."""
    return check_seeds(None if text is None else _integers(text, "seeds"), finetune_steps)


def parse_noise(text: str) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0] (checked as ``check_noise``)."""
    try:
        return check_noise([float(x) for x in text.split(",") if x.strip()])
    except ValueError as e:
        raise ValueError(f"noise {text!r}: {e}" if "could not convert" in str(e) else str(e)) from None


def _integers(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name} {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def load_swappable(model_path: str, max_seq_length: int | None):
    """The model with swappable attention; a clear error when its architecture cannot swap."""
    from mlret_plugin.model import check_swappable, load_model

    model = load_model(model_path)
    check_swappable(model)
    if max_seq_length is not None:
        positions = getattr(model[0].auto_model.config, "max_position_embeddings", None)
        if positions is not None and max_seq_length > positions:
            raise ValueError(f"max_seq_length {max_seq_length} exceeds the model's {positions} position embeddings")
        model.max_seq_length = max_seq_length
    return model


def _from_text(value, parse, name: str):
    """A builder argument given as command-line text (the API before typed values): parsed, with a warning."""
    if isinstance(value, str):
        warnings.warn(f"{name}: pass a list, not the command-line text {value!r} (text goes in the next release)",
                      DeprecationWarning, stacklevel=3)
        return parse(value)
    return value


def build_grid(collection: str, model: str, variants: Sequence["AttentionVariant | SparsityConfig | str"],
               noise: Sequence[float] = (0.0,), pool_sizes: Sequence[int] | None = None, out: str | Path = "",
               seeds: Sequence[int] | None = None, *, cache=None, **options) -> tuple[AttentionGrid, object]:
    """Validate every argument and load the model (checking it can swap attention) before any cell runs.

    ``variants``: patterns (``AttentionVariant``, ``SparsityConfig`` or pattern text such as
    ``"local:window=64"``), dense among them; ``noise``: levels >= 0; ``pool_sizes``: default every size of
    ``DEFAULT_POOLS``; ``seeds``: training seeds of a fine-tuned grid; ``cache``: the embedding cache
    (None: the default one, False: off, a folder); ``options``: the other ``AttentionGrid`` fields. Errors
    name the parameter."""
    from mlret_plugin.datasets import COLLECTIONS
    from mlret_plugin.models.specs import model_name, resolve_model_spec

    if collection not in COLLECTIONS:
        raise ValueError(f"collection {collection!r}; expected one of {sorted(COLLECTIONS)}")
    if not out:
        raise ValueError("out: an output folder is required (reuse it to resume)")
    variants = _from_text(variants, lambda t: [v.strip() for v in t.split(",") if v.strip()], "variants")
    noise = _from_text(noise, parse_noise, "noise")
    pool_sizes = _from_text(pool_sizes, lambda t: parse_pool_sizes(t, collection), "pool_sizes")
    seeds = _from_text(seeds, lambda t: _integers(t, "seeds"), "seeds")
    grid = AttentionGrid(collection=collection, model=model, variants=check_variants(variants),
                         noise=check_noise(noise),
                         pool_sizes=parse_pool_sizes(DEFAULT_POOLS[collection] if pool_sizes is None else pool_sizes,
                                                     collection),
                         out=Path(out), embedding_cache=cache, **options)
    grid.seeds = check_seeds(seeds, grid.finetune_steps)
    if grid.candidates not in CANDIDATE_KINDS:
        raise ValueError(f"candidates {grid.candidates!r}; expected one of {CANDIDATE_KINDS}")
    if grid.candidates == "sentence" and any(n > 0 for n in grid.noise):
        raise ValueError("noise > 0 lengthens the candidates' context; it needs candidates='context'")
    if grid.finetune_steps < 0:
        raise ValueError(f"finetune_steps {grid.finetune_steps}; expected >= 0")
    if grid.finetune_steps and not grid.finetune_train:
        grid.finetune_train = TRAIN_FOR[collection]
    if not 0 <= grid.finetune_alpha <= 1:
        raise ValueError(f"finetune_alpha {grid.finetune_alpha}; expected a value in [0, 1]")
    from mlret_plugin.encoding.backends import check_backend

    check_backend("torch", grid.precision)  # patterns run on torch; bf16 needs the CPU for it
    if grid.finetune_steps:
        from mlret_plugin.experiments.finetune import check_batches, load_train_data

        grid.train_data = load_train_data(grid.finetune_train, passage_field=grid.finetune_passages)
        check_batches(grid.train_data, grid.finetune_batch_size, grid.finetune_alpha)
    path = resolve_model_spec(model)
    if path is None:
        raise ValueError(f"model {model!r}: no dense model is available")
    grid.resolved_model = str(path)
    grid.model_label = grid.model_label or model_name(path)
    loaded = load_swappable(grid.resolved_model, grid.max_seq_length)
    from mlret_plugin.model import set_attention

    for variant in grid.variants:  # every pattern is accepted by the model before the grid starts
        set_attention(loaded, variant.kind, backend=grid.backend, **variant.config)
    set_attention(loaded, "dense")
    grid.max_seq_length = loaded.max_seq_length
    return grid, loaded


def _annotate(rows: list[dict], grid: AttentionGrid, variant: AttentionVariant, noise: float, pool_size: int) -> list[dict]:
    extra = {"experiment": "attention", "model": grid.model_label, "variant": variant.label, "noise": noise,
             "mixed_noise": grid.mixed_noise if noise > 0 else False,
             "pool_size": pool_size, "candidates": grid.candidates, "finetune_steps": grid.finetune_steps}
    return [{**row, **extra} for row in rows]


def run_attention_grid(grid: AttentionGrid, model=None, progress: bool = True) -> list[dict]:
    """Run (or resume) every cell; returns all rows with degradation vs dense, and writes the outputs."""
    from tqdm.auto import tqdm

    from mlret_plugin.evaluation.lareqa import run_lareqa
    from mlret_plugin.experiments.noisy_dense import NoisyDenseRetriever
    from mlret_plugin.model import set_attention

    cache = CellCache(grid.out / "cells.jsonl")
    cells = grid.cells()
    done = sum(grid.params(*c) in cache for c in cells)
    bar = tqdm(total=len(cells), initial=done, desc="attention grid", unit="cell", disable=not progress)
    try:
        train_data = grid.train_data
        for variant, train_seed in ((v, s) for v in grid.variants for s in grid.seeds):
            todo = [(n, p) for n in grid.noise for p in grid.pool_sizes
                    if grid.params(variant, n, p, train_seed) not in cache]
            if not todo:
                continue
            if model is None or grid.finetune_steps:
                model = load_swappable(grid.resolved_model, grid.max_seq_length)  # fresh weights per fine-tuned variant
            set_attention(model, variant.kind, backend=grid.backend, **variant.config)
            train_info = {}
            if grid.finetune_steps:
                from mlret_plugin.experiments.finetune import finetune, load_train_data

                if train_data is None:
                    train_data = load_train_data(grid.finetune_train, passage_field=grid.finetune_passages)
                start = time.perf_counter()
                train_info = finetune(model, train_data, grid.finetune_alpha, grid.finetune_steps,
                                      batch_size=grid.finetune_batch_size, seed=train_seed, show_progress_bar=progress)
                train_info["seconds"] = time.perf_counter() - start  # once per variant, shared by its cells
            shared_queries: dict = {}
            for noise in grid.noise:
                retriever = None
                for pool_size in grid.pool_sizes:
                    params = grid.params(variant, noise, pool_size, train_seed)
                    if params in cache:
                        continue
                    langs = pool_languages(grid.collection, pool_size, grid.seed)
                    bar.set_postfix_str(f"{variant.label} noise={noise:g} pool={pool_size}"
                                        + ("" if train_seed is None else f" seed={train_seed}"))
                    if retriever is None:
                        retriever = NoisyDenseRetriever(
                            model, NoiseSpec(noise, mixed=grid.mixed_noise, seed=grid.seed), shared_queries=shared_queries,
                            candidates=grid.candidates, batch_size=grid.batch_size, show_progress_bar=False,
                            name=f"{variant.label}@noise={noise:g}", cache=grid.embedding_cache,
                            precision=grid.precision,
                        )
                    start = time.perf_counter()
                    records: list[dict] = []
                    rows = run_lareqa(grid.collection, [retriever], langs=langs, measures=MEASURES, progress=False,
                                      per_query_sink=records)
                    info = {"seconds": time.perf_counter() - start, "noise": retriever.stats_for(langs),
                            "finetune": train_info, "max_seq_length": model.max_seq_length,
                            "candidate_lengths": retriever.lengths_for(langs)}
                    save_per_query(grid.out, cell_key(params), records)  # before the cell counts as finished
                    cache.put(params, _annotate(rows, grid, variant, noise, pool_size), info)
                    bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        _write_attention(grid, cache, cells, interrupted=True)
        raise
    bar.close()
    return _write_attention(grid, cache, cells)


def _train_seed(params: dict) -> int | None:
    return (params.get("finetune") or {}).get("seed")


def attention_points(grid: AttentionGrid, cells: list[dict]) -> list:
    """Grid points (variant, noise, distractors, pool) of the finished cells, each with its seeds; the
    baseline of a point is dense at the same noise, distractors and pool."""
    from mlret_plugin.experiments.significance import Point

    order = {v.label: i for i, v in enumerate(grid.variants)}
    points: dict[tuple, Point] = {}
    for cell in cells:
        first = cell["rows"][0]
        achieved = cell["info"].get("noise", {}).get("achieved_level")
        for row in cell["rows"]:
            row.setdefault("achieved_noise", achieved)
        coord = (first["variant"], first["noise"], bool(first.get("mixed_noise")), first["pool_size"])
        point = points.setdefault(coord, Point(coord, first["variant"], {}, ("dense", *coord[1:])))
        point.cells[_train_seed(cell["params"])] = cell
    return sorted(points.values(), key=lambda p: (order.get(p.coord[0], len(order)), p.coord[0], *p.coord[1:]))


def variant_contrasts(points: list) -> list[tuple[tuple, tuple]]:
    """Every pair of non-dense variants at the same noise, distractors and pool, to be tested directly
    (e.g. block-sparse vs local); the label that sorts first is the system, so the direction does not depend
    on which command ran first."""
    at: dict[tuple, list] = {}
    for p in points:
        if p.coord[0] != "dense":
            at.setdefault(p.coord[1:], []).append(p.coord)
    return [(a, b) for coords in at.values() for a, b in combinations(sorted(coords), 2)]


def density_table(points: list) -> str:
    """Each pattern's mean density over the candidates it encoded (largest pool of each noise level)."""
    from mlret_plugin.experiments.density import median_length, pattern_density

    largest: dict[tuple, int] = {}
    for p in points:
        largest[p.coord[1:3]] = max(largest.get(p.coord[1:3], 0), p.coord[3])
    lines = ["| variant | noise | pool | candidates | median tokens | density |", "|---|---|---|---|---|---|"]
    for p in points:
        if p.coord[3] != largest[p.coord[1:3]]:
            continue
        cell = next(iter(p.cells.values()))
        lengths = cell["info"].get("candidate_lengths")
        if not lengths:
            continue
        variant = cell["params"]["variant"]
        config = {k: v for k, v in variant.items() if k != "kind"}
        density = pattern_density(variant["kind"], config, lengths)
        noise = f"{p.coord[1]:g}" + (" mixed" if p.coord[2] else "")
        lines.append(f"| {p.coord[0]} | {noise} | {p.coord[3]} | {sum(lengths.values())} | {median_length(lengths)} | "
                     f"{density:.3f} |")
    if len(lines) == 2:
        return ""
    return ("## Attention density at the candidates' lengths\n\nShare of (query, key) token pairs each pattern computes, "
            "averaged over the candidates as encoded (prompt and special tokens included, capped at max_seq_length). "
            "A pattern bites only where this is well below 1.\n\n" + "\n".join(lines))


def _write_attention(grid: AttentionGrid, cache: CellCache, cells: list, interrupted: bool = False) -> list[dict]:
    """Outputs from every finished cell that joins this grid (see the module doc), after all of the grid's
    cells or those done before an interruption."""
    from mlret_plugin.experiments.report import add_degradation, write_attention_outputs
    from mlret_plugin.experiments.significance import summarize

    joined = [c for c in cache.cells() if grid.joins(c["params"])]
    if not joined:
        return []
    points = attention_points(grid, joined)
    rows = add_degradation(summarize(points, grid.out, contrasts=variant_contrasts(points)))
    header = _header(grid, joined) + "\n\n" + density_table(points)
    if interrupted:
        header += "\n\n" + cache.interrupted_note([grid.params(*c) for c in cells])
    write_attention_outputs(rows, grid.out, header)
    return rows


def _header(grid: AttentionGrid, cells: list[dict]) -> str:
    from mlret_plugin.encoding.backends import describe_machine

    seconds = sum(c["info"].get("seconds", 0.0) for c in cells)
    # a variant's fine-tune is recorded in each of its cells; count it once per (variant, seed)
    trained = {cell_key([c["params"]["variant"], _train_seed(c["params"])]): (c["info"].get("finetune") or {}).get("seconds", 0.0)
               for c in cells}
    train_seconds = sum(trained.values())
    achieved = {}
    for c in cells:
        p = c["params"]
        level = c["info"].get("noise", {}).get("achieved_level")
        capped = c["info"].get("noise", {}).get("capped")
        if p["noise"] and level is not None:
            achieved.setdefault((p["noise"], bool(p.get("mixed_noise"))), (level, capped))
    noise_note = "; ".join(f"{n:g}{' mixed' if m else ''} -> {lv:.2f} achieved ({cp} paragraphs capped)"
                           for (n, m), (lv, cp) in sorted(achieved.items()))
    sizes = sorted({len(c["params"]["pool"]) for c in cells})
    pools = {p: ",".join(pool_languages(grid.collection, p, grid.seed)) for p in sizes}
    seeds = sorted({s for s in (_train_seed(c["params"]) for c in cells) if s is not None})
    variants = list(dict.fromkeys(c["rows"][0]["variant"] for c in cells))
    levels = ", ".join(f"{n:g}" for n in sorted({c["params"]["noise"] for c in cells}))
    ft = (f"fine-tuned {grid.finetune_steps} steps after the swap on {grid.finetune_train} (alpha "
          f"{grid.finetune_alpha}, batch {grid.finetune_batch_size}, passages {grid.finetune_passages}), "
          f"training seeds {', '.join(map(str, seeds))} "
          "(values: mean over seeds, ± std)" if grid.finetune_steps else "zero-shot swap (no fine-tuning)")
    return "\n".join([
        f"# Attention experiment: {grid.collection}",
        "",
        f"- Model: {grid.model_label} ({grid.resolved_model}), max_seq_length {grid.max_seq_length}; {ft}",
        f"- Candidates: {grid.candidates}; noise levels {levels}"
        f" (distractors: same language, or every language where marked mixed; data seed {grid.seed}); achieved: "
        f"{noise_note or '-'}",
        "- Pools (English first, seeded order, nested): " + "; ".join(f"{k}: {v}" for k, v in pools.items()),
        f"- Variants: {', '.join(variants)} (attention backend {grid.backend}, precision {grid.precision}); every "
        "finished cell in this folder with the same "
        "model, collection, candidates, length and fine-tune recipe is reported (commands sharing --out join here)",
        f"- Machine: {describe_machine()}; cell compute time {(seconds + train_seconds) / 60:.1f} min"
        + (f" (fine-tuning {train_seconds / 60:.1f} min)" if train_seconds else ""),
        "- Δ = variant - dense at the same noise, distractors and pool (AP, R@k: negative is a loss; MaxRankDist: "
        "positive is a loss).",
    ])


__all__ = ["AttentionGrid", "DEFAULT_POOLS", "attention_points", "build_grid", "check_noise", "check_seeds", "parse_noise",
           "parse_seeds", "run_attention_grid"]
