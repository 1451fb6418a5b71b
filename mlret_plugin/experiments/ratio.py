"""Research question C: how model size interacts with the hybrid batch ratio alpha (zero-shot).

Grid: model x alpha. Each cell fine-tunes a fresh copy of the model for ``max_steps`` hybrid batches
(share ``alpha`` monolingual X-X, the rest cross-lingual X-Y) on ``--train`` and evaluates it with
``run_lareqa`` on ``--eval`` (another collection by default: zero-shot). Every model also gets an
untrained cell (alpha = None), the starting point. Rows carry the model's parameter count.

A size series from one checkpoint: ``MODEL:layers=N`` keeps the first N transformer layers (embeddings,
pooling and the rest unchanged), e.g. ``offline-minilm:layers=2,offline-minilm:layers=4,offline-minilm``.
Such models are labelled ``NAME[first N of M layers]``: they are truncations, not separately
pre-trained small models, and start from a worse point than a real small checkpoint would.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlret_plugin.experiments.cache import CellCache

MEASURES = ("AP", "R@1", "R@10", "MaxRankDist")


@dataclass(frozen=True)
class ModelSpec:
    spec: str  # as given
    path: str  # resolved
    layers: int | None  # keep the first N layers (None: all)
    label: str


def parse_models(text: str) -> list[ModelSpec]:
    """``M1,M2:layers=4`` -> ModelSpecs (paths resolved, options checked)."""
    from mlret_plugin.evaluation.models import model_name, resolve_model_spec

    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise ValueError("--models is empty; e.g. offline-minilm:layers=2,offline-minilm:layers=4,offline-minilm")
    out = []
    for spec in specs:
        name, *options = spec.split(":")
        layers = None
        for option in options:
            key, sep, value = option.partition("=")
            if key != "layers" or not sep:
                raise ValueError(f"--models {spec!r}: unknown option {option!r}; the only option is layers=N")
            try:
                layers = int(value)
            except ValueError:
                raise ValueError(f"--models {spec!r}: layers={value!r} is not an integer") from None
            if layers < 1:
                raise ValueError(f"--models {spec!r}: layers={layers}; expected >= 1")
        path = resolve_model_spec(name)
        if path is None:
            raise ValueError(f"--models {spec!r}: no dense model is available")
        base = model_name(path)
        out.append(ModelSpec(spec, str(path), layers, base if layers is None else f"{base}[first {layers} layers]"))
    labels = [m.label for m in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--models: the same model is given twice ({labels})")
    return out


def parse_alphas(text: str) -> list[float]:
    try:
        alphas = sorted({float(a) for a in text.split(",") if a.strip()})
    except ValueError:
        raise ValueError(f"--alphas {text!r}: expected comma-separated numbers in [0, 1]") from None
    if not alphas:
        raise ValueError("--alphas is empty; e.g. 0,0.25,0.5,0.75,1")
    bad = [a for a in alphas if not 0 <= a <= 1]
    if bad:
        raise ValueError(f"--alphas {bad}: alpha is the share of monolingual batches, in [0, 1]")
    return alphas


def _layer_list(hf):
    """The ModuleList of transformer layers (BERT / XLM-R: encoder.layer; ModernBERT: layers)."""
    import torch

    for path in ("encoder.layer", "layers"):
        obj = hf
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList):
            return path, obj
    raise TypeError(f"cannot find the transformer layers of {type(hf).__name__} (looked for encoder.layer, layers); "
                    "a size series by truncation supports BERT, XLM-R and ModernBERT")


def load_sized(spec: ModelSpec):
    """The model, truncated to its first ``spec.layers`` layers; (model, parameter count, total layers)."""
    import torch

    from mlret_plugin.evaluation.models import load_model

    if Path(spec.path).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = load_model(spec.path)
    hf = model[0].auto_model
    path, layers = _layer_list(hf)
    total = len(layers)
    if spec.layers is not None:
        if spec.layers > total:
            raise ValueError(f"--models {spec.spec!r}: layers={spec.layers} but the model has {total}")
        kept = torch.nn.ModuleList(list(layers)[: spec.layers])
        parent = hf.encoder if path == "encoder.layer" else hf
        setattr(parent, path.split(".")[-1], kept)
        hf.config.num_hidden_layers = spec.layers
        if hasattr(hf.config, "layer_types") and hf.config.layer_types:
            hf.config.layer_types = hf.config.layer_types[: spec.layers]
    params = sum(p.numel() for p in model.parameters())
    return model, params, total


@dataclass
class RatioGrid:
    train: str
    eval_collection: str
    models: list[ModelSpec]
    alphas: list[float]
    max_steps: int
    out: Path
    eval_langs: list[str] | None = None
    candidates: str = "sentence"
    passage_field: str = "text"
    batch_size: int = 16
    learning_rate: float = 2e-5
    seed: int = 0
    eval_batch_size: int = 64
    include_untrained: bool = True
    _langs: tuple = field(default=(), repr=False)
    train_data: object = field(default=None, repr=False)  # loaded and checked by build_ratio_grid

    def cells(self) -> list[tuple[ModelSpec, float | None]]:
        alphas = ([None] if self.include_untrained else []) + list(self.alphas)
        return [(m, a) for m in self.models for a in alphas]

    def params(self, model: ModelSpec, alpha: float | None) -> dict:
        trained = alpha is not None
        return {
            "experiment": "ratio", "model": model.path, "layers": model.layers, "alpha": alpha,
            "train": self.train if trained else None, "max_steps": self.max_steps if trained else 0,
            "batch_size": self.batch_size if trained else None, "lr": self.learning_rate if trained else None,
            "passage_field": self.passage_field if trained else None, "seed": self.seed,
            "eval": self.eval_collection, "langs": list(self._langs), "candidates": self.candidates, "measures": list(MEASURES),
        }


def build_ratio_grid(train: str, eval_collection: str, models: str, alphas: str, max_steps: int, out: str | Path,
                     eval_langs: str | None = None, **options) -> RatioGrid:
    """Validate every argument (data ids, models, alphas, steps) before any training starts."""
    from mlret_plugin.datasets import COLLECTIONS, parse_dataset_id
    from mlret_plugin.datasets.subsets import check_langs

    if eval_collection not in COLLECTIONS:
        raise ValueError(f"--eval {eval_collection!r}: expected a collection, one of {sorted(COLLECTIONS)} (use --eval-langs to restrict)")
    if not (str(train).endswith(".jsonl") or Path(train).is_file()):
        parse_dataset_id(train)  # clear error for an unknown id
    if max_steps < 1:
        raise ValueError(f"--max-steps {max_steps}; expected >= 1")
    langs = [x.strip() for x in eval_langs.split(",") if x.strip()] if eval_langs else list(COLLECTIONS[eval_collection])
    grid = RatioGrid(train=train, eval_collection=eval_collection, models=parse_models(models), alphas=parse_alphas(alphas),
                     max_steps=max_steps, out=Path(out), eval_langs=langs, **options)
    grid._langs = check_langs(eval_collection, langs)
    if grid.candidates not in ("context", "sentence"):
        raise ValueError(f"--candidates {grid.candidates!r}; expected context or sentence")
    from mlret_plugin.experiments.finetune import check_batches, load_train_data

    grid.train_data = load_train_data(grid.train, passage_field=grid.passage_field)
    for alpha in grid.alphas:  # too few groups / a language too small for X-X: fail before any cell
        check_batches(grid.train_data, grid.batch_size, alpha)
    for spec in grid.models:  # loads each once: missing folders, bad layer counts fail here
        load_sized(spec)
    return grid


def run_ratio_grid(grid: RatioGrid, progress: bool = True) -> list[dict]:
    from tqdm.auto import tqdm

    from mlret_plugin.evaluation.dense import DenseRetriever
    from mlret_plugin.evaluation.lareqa import run_lareqa
    from mlret_plugin.experiments.finetune import finetune, load_train_data

    cache = CellCache(grid.out / "cells.jsonl")
    cells = grid.cells()
    bar = tqdm(total=len(cells), initial=sum(grid.params(*c) in cache for c in cells), desc="ratio grid",
               unit="cell", disable=not progress)
    try:
        train_data = grid.train_data
        for spec, alpha in cells:
            params = grid.params(spec, alpha)
            if params in cache:
                continue
            bar.set_postfix_str(f"{spec.label} alpha={'untrained' if alpha is None else alpha}")
            model, n_params, total_layers = load_sized(spec)
            start = time.perf_counter()
            train_info = {}
            if alpha is not None:
                if train_data is None:
                    train_data = load_train_data(grid.train, passage_field=grid.passage_field)
                train_info = finetune(model, train_data, alpha, grid.max_steps, batch_size=grid.batch_size,
                                      learning_rate=grid.learning_rate, seed=grid.seed, show_progress_bar=progress)
            train_seconds = time.perf_counter() - start
            retriever = DenseRetriever(model, candidates=grid.candidates, batch_size=grid.eval_batch_size,
                                       show_progress_bar=False, name=f"{spec.label}@alpha={alpha}")
            rows = run_lareqa(grid.eval_collection, [retriever], langs=grid._langs, measures=MEASURES, progress=False)
            extra = {"experiment": "ratio", "model": spec.label, "layers": spec.layers or total_layers,
                     "params": n_params, "alpha": alpha, "steps": train_info.get("steps", 0), "train": params["train"],
                     "candidates": grid.candidates}
            info = {"train_seconds": train_seconds, "eval_seconds": time.perf_counter() - start - train_seconds, **train_info}
            cache.put(params, [{**r, **extra} for r in rows], info)
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        _write_ratio(grid, cache, cells, interrupted=True)
        raise
    bar.close()
    return _write_ratio(grid, cache, cells)


def _write_ratio(grid: RatioGrid, cache: CellCache, cells: list, interrupted: bool = False) -> list[dict]:
    """Outputs from the finished cells (all of them, or those done before an interruption)."""
    from mlret_plugin.experiments.report import rows_of, write_ratio_outputs

    ordered = [cell for cell in (cache.get(grid.params(*c)) for c in cells) if cell is not None]
    if not ordered:
        return []
    rows = rows_of(ordered)
    header = _header(grid, ordered)
    if interrupted:
        header += (f"\n\n**Interrupted: {len(ordered)} of {len(cells)} cells finished.** Rerun the same command to "
                   "resume.")
    write_ratio_outputs(rows, grid.out, header)
    return rows


def _header(grid: RatioGrid, cells: list[dict]) -> str:
    import platform

    import torch

    minutes = sum(c["info"].get("train_seconds", 0) + c["info"].get("eval_seconds", 0) for c in cells) / 60
    return "\n".join([
        f"# Ratio experiment: model size x alpha, train {grid.train} -> evaluate {grid.eval_collection}",
        "",
        f"- Models: {', '.join(m.label for m in grid.models)} (truncated models keep the first N layers of one checkpoint)",
        f"- Training: {grid.max_steps} steps of hybrid batches ({grid.batch_size} pairs, MultipleNegativesRankingLoss, "
        f"lr {grid.learning_rate}, seed {grid.seed}, passages: {grid.passage_field}); alphas {', '.join(f'{a:g}' for a in grid.alphas)}"
        + ("; 'untrained' rows are the starting point" if grid.include_untrained else ""),
        f"- Evaluation: {grid.eval_collection} over {', '.join(grid._langs)}, candidates {grid.candidates}, mAP over the full ranking",
        f"- Machine: {platform.machine()} {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}; compute time {minutes:.1f} min",
    ])


__all__ = ["ModelSpec", "RatioGrid", "build_ratio_grid", "parse_alphas", "parse_models", "run_ratio_grid"]
