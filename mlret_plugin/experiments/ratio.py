"""Research question C: how model size interacts with the hybrid batch ratio alpha (zero-shot).

Grid: model x alpha. Each cell fine-tunes a fresh copy of the model for ``max_steps`` hybrid batches
(share ``alpha`` monolingual X-X, the rest cross-lingual X-Y) on ``--train`` and evaluates it with
``run_lareqa`` on ``--eval`` (another collection by default: zero-shot). Every model also gets an
untrained cell (alpha = None), the starting point. Rows carry the model's parameter count.

A size series from one checkpoint: ``MODEL:layers=N`` keeps the first N transformer layers (embeddings,
pooling and the rest unchanged), e.g. ``offline-minilm:layers=2,offline-minilm:layers=4,offline-minilm``.
Such models are labelled ``NAME[first N of M layers]``: they are truncations, not separately
pre-trained small models, and start from a worse point than a real small checkpoint would.

Seeds: every trained cell runs once per training seed (``seeds``, default 0, 1, 2); tables show the mean
+- std over seeds, and each alpha is tested against the ``baseline`` alpha (default 0.5, or ``untrained``)
of the same model (``experiments.significance``). The untrained cell has no seed.

Held-out articles: with ``holdout_articles`` K (a dataset id as ``train``), K seeded articles of the training
collection are removed from training, and every cell is evaluated twice: zero-shot on ``eval`` and on the
held-out questions of the training collection (candidates: its whole collection), as ``mlret train
--holdout-articles`` does.

Recipe: ``recipe`` holds the training knobs beyond steps, batch size and learning rate (``RECIPE_DEFAULTS``:
the loss and its mini-batch size, hard negatives, frozen word embeddings, a distillation weight, warm-up,
bf16). ``split`` ("dev" or "test") splits the training collection by article (``training.splits.article_split``
with ``split_seed``): dev and test articles never reach training, and every cell is evaluated on that part's
questions (candidates: the whole collection); ``eval_collection=None`` leaves out the zero-shot evaluation
(a recipe search on dev must not look at it). ``wise_weights`` evaluates each trained model also at those
WiSE-FT interpolations with its starting weights (``training.wise``); such cells are labelled ``[WiSE w]``.

Joining commands: the report covers every finished cell in ``OUT`` with the same evaluation and training
recipe, whatever its model, alpha or seed, so a long grid runs as several commands sharing one ``--out``
(one seed or one alpha each) and each writes the joined report.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mlret_plugin.constants import CANDIDATE_KINDS, LAREQA_MEASURES
from mlret_plugin.experiments.cache import CellCache, cell_key
from mlret_plugin.experiments.significance import save_per_query
from mlret_plugin.training.recipe import NEUTRAL_RECIPE

MEASURES = LAREQA_MEASURES


@dataclass(frozen=True)
class ModelSpec:
    spec: str  # as given
    path: str  # resolved
    layers: int | None  # keep the first N layers (None: all)
    label: str


def model_spec(name: str, layers: int | None = None) -> ModelSpec:
    """A model of the size series: ``name`` (folder, hub id or alias) keeping its first ``layers`` layers
    (None: all), resolved and labelled."""
    from mlret_plugin.models.specs import model_name, resolve_model_spec

    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 1):
        raise ValueError(f"models: {name!r} with layers={layers!r}; expected an integer >= 1 (or None for all)")
    path = resolve_model_spec(name)
    if path is None:
        raise ValueError(f"models: {name!r}: no dense model is available")
    base = model_name(path)
    spec = name if layers is None else f"{name}:layers={layers}"
    return ModelSpec(spec, str(path), layers, base if layers is None else f"{base}[first {layers} layers]")


def parse_model(text: str) -> ModelSpec:
    """``NAME[:layers=N]`` -> ModelSpec."""
    name, *options = text.strip().split(":")
    layers = None
    for option in options:
        key, sep, value = option.partition("=")
        if key != "layers" or not sep:
            raise ValueError(f"models: {text!r}: unknown option {option!r}; the only option is layers=N")
        try:
            layers = int(value)
        except ValueError:
            raise ValueError(f"models: {text!r}: layers={value!r} is not an integer") from None
    return model_spec(name, layers)


def check_models(models: Sequence[ModelSpec | str]) -> list[ModelSpec]:
    """ModelSpecs from ModelSpecs or ``NAME[:layers=N]`` texts; no model twice."""
    out = [m if isinstance(m, ModelSpec) else parse_model(m) for m in models]
    if not out:
        raise ValueError("models is empty; e.g. ['offline-e5', 'offline-e5:layers=4'] or "
                         "[model_spec('offline-e5', layers=4)]")
    labels = [m.label for m in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"models: the same model is given twice ({labels})")
    return out


def parse_models(text: str) -> list[ModelSpec]:
    """``M1,M2:layers=4`` -> ModelSpecs (paths resolved, options checked)."""
    return check_models([s.strip() for s in text.split(",") if s.strip()])


def check_alphas(alphas: Sequence[float]) -> list[float]:
    """Alphas, sorted and unique, each in [0, 1] (the share of monolingual batches)."""
    try:
        values = sorted({float(a) for a in alphas})
    except (TypeError, ValueError):
        raise ValueError(f"alphas {list(alphas)!r}: expected numbers in [0, 1]") from None
    if not values:
        raise ValueError("alphas is empty; e.g. [0, 0.25, 0.5, 0.75, 1]")
    bad = [a for a in values if not 0 <= a <= 1]
    if bad:
        raise ValueError(f"alphas {bad}: alpha is the share of monolingual batches, in [0, 1]")
    return values


def parse_alphas(text: str) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0] (checked as ``check_alphas``)."""
    try:
        return check_alphas([float(a) for a in text.split(",") if a.strip()])
    except ValueError:
        if all(_is_number(a) for a in text.split(",") if a.strip()):
            raise
        raise ValueError(f"alphas {text!r}: expected comma-separated numbers in [0, 1]") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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

    from mlret_plugin.model import load_model

    model = load_model(spec.path)
    hf = model[0].auto_model
    path, layers = _layer_list(hf)
    total = len(layers)
    if spec.layers is not None:
        if spec.layers > total:
            raise ValueError(f"models: {spec.spec!r} keeps layers={spec.layers} but the model has {total}")
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
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    baseline: float | None = 0.5  # the alpha every other alpha of a model is tested against (None: untrained)
    holdout_articles: int = 0
    holdout_seed: int = 0
    eval_batch_size: int = 64
    include_untrained: bool = True
    only_untrained: bool = False  # evaluate each model's starting point only (a part of a split grid)
    _langs: tuple = field(default=(), repr=False)
    held_out: list = field(default_factory=list, repr=False)  # article numbers held out of training
    _evaluations: list | None = field(default=None, repr=False)
    train_data: object = field(default=None, repr=False)  # loaded and checked by build_ratio_grid
    embedding_cache: object = field(default=None, repr=False)  # DenseRetriever's cache=: None default, False off
    precision: str = "fp32"  # fp32, or bf16 (torch.autocast) for evaluation; part of a cell's key when not fp32
    recipe: dict = field(default_factory=dict)  # training knobs that differ from RECIPE_DEFAULTS
    split: str | None = None  # "dev" / "test": evaluate on that part of the train collection's article split
    split_seed: int = 0
    wise_weights: list[float] = field(default_factory=lambda: [1.0])  # WiSE-FT weights evaluated per training
    evaluated_part: list = field(default_factory=list, repr=False)  # articles of the evaluated split part
    part_langs: tuple = ()  # languages of the split / held-out evaluation (given eval_langs it has); () = all
    test_untrained: bool = False  # with an alpha baseline, also test each trained alpha against the untrained model

    def cells(self) -> list[tuple[ModelSpec, float | None, int | None, float | None]]:
        """(model, alpha, training seed, WiSE-FT weight): one per evaluation; the weights of one training share it."""
        untrained = [(None, None, None)] if self.include_untrained else []
        if self.only_untrained:
            return [(m, None, None, None) for m in self.models]
        trained = [(a, s, w) for a in self.alphas for s in self.seeds for w in self.wise_weights]
        return [(m, a, s, w) for m in self.models for a, s, w in untrained + trained]

    def params(self, model: ModelSpec, alpha: float | None, seed: int | None = None, wise: float | None = 1.0) -> dict:
        trained = alpha is not None
        return {
            "experiment": "ratio", "model": model.path, "layers": model.layers, "alpha": alpha,
            "train": self.train if trained else None, "max_steps": self.max_steps if trained else 0,
            "batch_size": self.batch_size if trained else None, "lr": self.learning_rate if trained else None,
            "passage_field": self.passage_field if trained else None, "seed": seed if trained else None,
            "eval": self.eval_collection, "langs": list(self._langs), "candidates": self.candidates, "measures": list(MEASURES),
            **({"holdout": {"train": self.train, "articles": self.held_out, **self._part_langs_key()}}
               if self.holdout_articles else {}),
            **({"precision": self.precision} if self.precision != "fp32" else {}),
            **({"recipe": self.recipe} if self.recipe and trained else {}),
            **({"split": {"train": self.train, "seed": self.split_seed, "part": self.split,
                          "articles": self.evaluated_part, **self._part_langs_key()}} if self.split else {}),
            **({"wise": wise} if trained and wise not in (None, 1.0) else {}),
        }

    def _part_langs_key(self) -> dict:
        return {"langs": list(self.part_langs)} if self.part_langs else {}  # absent: every language (older keys)

    def joins(self, params: dict) -> bool:
        """Whether a cached cell belongs in this grid's report: same evaluation and, if trained, same recipe."""
        reference = self.params(self.models[0], self.alphas[0], self.seeds[0])
        keys = ["experiment", "eval", "langs", "candidates", "measures", "holdout", "precision", "split"]
        if params.get("alpha") is not None:
            keys += ["train", "max_steps", "batch_size", "lr", "passage_field", "recipe"]
        return all(params.get(k) == reference.get(k) for k in keys)

    def evaluations(self) -> list[tuple[str, str, tuple, object]]:
        """(name, collection, languages, query groups) of each evaluation of a cell (computed once)."""
        if self._evaluations is not None:
            return self._evaluations
        out = [(self.eval_collection, self.eval_collection, self._langs, None)] if self.eval_collection else []
        if self.holdout_articles or self.split:
            from mlret_plugin.datasets import parse_dataset_id
            from mlret_plugin.training.splits import held_out_groups

            collection = parse_dataset_id(self.train).collection
            name, articles = ((f"{collection} {self.split}", self.evaluated_part) if self.split
                              else (f"{collection} held-out", self.held_out))
            out.append((name, collection, self.part_langs or None, held_out_groups(self.train, set(articles))))
        self._evaluations = out
        return out

    def label(self, spec: ModelSpec, wise: float | None) -> str:
        """A model's name in the report; a WiSE-FT interpolation is its own row."""
        return spec.label if wise in (None, 1.0) else f"{spec.label} [WiSE {wise:g}]"


def check_seed_list(seeds: Sequence[int]) -> list[int]:
    """Training seeds: distinct integers."""
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds {seeds!r}: expected distinct integers, e.g. [0, 1, 2]")
    return seeds


RECIPE_DEFAULTS = {**NEUTRAL_RECIPE, "bf16": False}  # a cell's key holds only the knobs that differ


def check_recipe(recipe: dict) -> dict:
    """The recipe's knobs that differ from ``RECIPE_DEFAULTS`` (so a cell's key only holds what was changed)."""
    from mlret_plugin.training.losses import LOSSES

    unknown = sorted(set(recipe) - set(RECIPE_DEFAULTS))
    if unknown:
        raise ValueError(f"recipe: unknown knob(s) {unknown}; expected some of {sorted(RECIPE_DEFAULTS)}")
    if recipe.get("loss", "mnrl") not in LOSSES[:2]:
        raise ValueError(f"recipe loss {recipe['loss']!r}; expected mnrl or cached-mnrl")
    for name in ("mini_batch_size",):
        if name in recipe and (not isinstance(recipe[name], int) or recipe[name] < 1):
            raise ValueError(f"recipe {name}={recipe[name]!r}; expected an integer >= 1")
    if not 0 <= float(recipe.get("distill_weight", 0.0)):
        raise ValueError(f"recipe distill_weight={recipe['distill_weight']}; expected >= 0")
    if not float(recipe.get("scale", 20.0)) > 0:
        raise ValueError(f"recipe scale={recipe['scale']}; expected > 0 (the loss's inverse temperature)")
    if not 0 <= float(recipe.get("warmup_ratio", 0.1)) < 1:
        raise ValueError(f"recipe warmup_ratio={recipe['warmup_ratio']}; expected a share in [0, 1)")
    if recipe.get("bf16"):
        from mlret_plugin.encoding.backends import check_backend

        check_backend("torch", "bf16")
    return {k: v for k, v in recipe.items() if v != RECIPE_DEFAULTS[k]}


def check_wise_weights(weights: Sequence[float]) -> list[float]:
    """WiSE-FT weights in [0, 1], sorted and unique; 1.0 is the fine-tuned model itself."""
    values = sorted({float(w) for w in weights}, reverse=True)
    if not values or any(not 0 <= w <= 1 for w in values):
        raise ValueError(f"wise_weights {list(weights)}: expected weights in [0, 1] (1: the fine-tuned model)")
    return values


def parse_seed_list(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2] (checked as ``check_seed_list``)."""
    try:
        return check_seed_list([int(x) for x in text.split(",") if x.strip()])
    except ValueError:
        raise ValueError(f"seeds {text!r}: expected distinct comma-separated integers, e.g. 0,1,2") from None


def check_baseline(baseline: float | str | None, alphas: list[float], include_untrained: bool,
                   finished: Sequence[float] = ()) -> float | None:
    """The alpha every other alpha is tested against, or None for the untrained model (``"untrained"``).
    ``finished``: alphas whose cells another command sharing ``out`` (same evaluation and recipe) has
    already finished; a baseline among them need not be trained again, so one alpha per command works."""
    if baseline is None or baseline == "untrained":
        if not include_untrained:
            raise ValueError("baseline='untrained' needs the untrained cells; set include_untrained=True")
        return None
    try:
        value = float(baseline)
    except (TypeError, ValueError):
        raise ValueError(f"baseline {baseline!r}: expected one of the alphas or 'untrained'") from None
    if value not in alphas and value not in finished:
        raise ValueError(f"baseline {baseline}: not among the alphas {', '.join(f'{a:g}' for a in alphas)}, nor "
                         "finished in out by a command with the same evaluation and recipe; add it to the alphas, "
                         "run its cells first, or pass baseline='untrained' / another alpha")
    return value


def parse_baseline(text: str | None, alphas: list[float], include_untrained: bool) -> float | None:
    """``"0.5"`` / ``"untrained"`` -> the baseline (checked as ``check_baseline``)."""
    return check_baseline(text, alphas, include_untrained)


def _from_text(value, parse, name: str):
    """A builder argument given as command-line text (the API before typed values): parsed, with a warning."""
    if isinstance(value, str) and name != "baseline":
        warnings.warn(f"{name}: pass a list, not the command-line text {value!r} (text goes in the next release)",
                      DeprecationWarning, stacklevel=3)
        return parse(value)
    return value


def build_ratio_grid(train: str, eval_collection: str | None, models: Sequence[ModelSpec | str], alphas: Sequence[float],
                     max_steps: int, out: str | Path, eval_langs: Sequence[str] | None = None,
                     seeds: Sequence[int] = (0, 1, 2), baseline: float | str | None = 0.5, *, cache=None,
                     **options) -> RatioGrid:
    """Validate every argument (data ids, models, alphas, steps) before any training starts.

    ``models``: ``ModelSpec`` (``model_spec(name, layers=N)``) or ``"NAME[:layers=N]"``; ``alphas``: in [0, 1];
    ``baseline``: an alpha of the grid or ``"untrained"``; ``cache``: the embedding cache (None: the default
    one, False: off, a folder); ``eval_collection=None``: no zero-shot evaluation (then ``split`` or
    ``holdout_articles`` gives the evaluation); ``options``: the other ``RatioGrid`` fields (``recipe``,
    ``split``, ``wise_weights``, ...). Errors name the parameter."""
    from mlret_plugin.datasets import COLLECTIONS, parse_dataset_id
    from mlret_plugin.datasets.subsets import check_langs

    if eval_collection is not None and eval_collection not in COLLECTIONS:
        raise ValueError(f"eval_collection {eval_collection!r}: expected a collection, one of {sorted(COLLECTIONS)} "
                         "(eval_langs restricts it), or None")
    if not (str(train).endswith(".jsonl") or Path(train).is_file()):
        parse_dataset_id(train)  # clear error for an unknown id
    if max_steps < 1:
        raise ValueError(f"max_steps {max_steps}; expected >= 1")
    models = _from_text(models, lambda t: [s.strip() for s in t.split(",") if s.strip()], "models")
    alphas = _from_text(alphas, parse_alphas, "alphas")
    seeds = _from_text(seeds, parse_seed_list, "seeds")
    eval_langs = _from_text(eval_langs, lambda t: [x.strip() for x in t.split(",") if x.strip()], "eval_langs")
    langs = list(eval_langs) if eval_langs else list(COLLECTIONS.get(eval_collection, ()))
    grid = RatioGrid(train=train, eval_collection=eval_collection, models=check_models(models),
                     alphas=check_alphas(alphas), max_steps=max_steps, out=Path(out), eval_langs=langs,
                     seeds=check_seed_list(seeds), embedding_cache=cache, **options)
    if grid.only_untrained and not grid.include_untrained:
        raise ValueError("only_untrained and include_untrained=False exclude each other")
    grid._langs = check_langs(eval_collection, langs) if eval_collection else ()
    grid.recipe = check_recipe(grid.recipe)
    grid.wise_weights = check_wise_weights(grid.wise_weights)
    if grid.candidates not in CANDIDATE_KINDS:
        raise ValueError(f"candidates {grid.candidates!r}; expected one of {CANDIDATE_KINDS}")
    if grid.holdout_articles < 0:
        raise ValueError(f"holdout_articles {grid.holdout_articles}; expected >= 0")
    from mlret_plugin.encoding.backends import check_backend

    check_backend("torch", grid.precision)
    if grid.holdout_articles:
        if str(train).endswith(".jsonl") or Path(train).is_file():
            raise ValueError("holdout_articles needs train to be a dataset id (articles come from its doc ids)")
        from mlret_plugin.training.splits import holdout_articles

        grid.held_out = holdout_articles(train, grid.holdout_articles, grid.holdout_seed)
    if grid.split is not None:
        if grid.holdout_articles:
            raise ValueError("split and holdout_articles are two ways to hold articles out: choose one")
        if grid.split not in ("dev", "test"):
            raise ValueError(f"split {grid.split!r}: expected 'dev' or 'test' (the part evaluated; train is trained on)")
        if str(train).endswith(".jsonl") or Path(train).is_file():
            raise ValueError("split needs train to be a dataset id (articles come from its doc ids)")
        from mlret_plugin.training.splits import article_split

        parts = article_split(train, seed=grid.split_seed)
        grid.held_out = sorted(parts.dev + parts.test)  # neither reaches training
        grid.evaluated_part = parts.part(grid.split)
    if eval_langs and (grid.split or grid.holdout_articles):  # the held-out part: the given languages it has
        own = COLLECTIONS[parse_dataset_id(train).collection]
        grid.part_langs = tuple(lang for lang in eval_langs if lang in own)
        if not grid.part_langs:
            raise ValueError(f"eval_langs {list(eval_langs)}: none is a language of {train}, whose held-out part is "
                             f"evaluated too; expected some of {list(own)}")
    if not grid.evaluations():
        raise ValueError("nothing to evaluate: give eval_collection, split or holdout_articles")
    finished = []  # alphas finished in --out by another command: read only when the baseline is not in this grid
    if baseline not in (None, "untrained") and _is_number(str(baseline)) and float(baseline) not in grid.alphas:
        cells = CellCache(grid.out / "cells.jsonl").cells()
        finished = sorted({c["params"].get("alpha") for c in cells if grid.joins(c["params"])} - {None})
    grid.baseline = check_baseline(baseline, grid.alphas, grid.include_untrained, finished)
    from mlret_plugin.experiments.finetune import check_batches, load_train_data

    grid.train_data = load_train_data(grid.train, passage_field=grid.passage_field,
                                      exclude_articles=set(grid.held_out) or None,
                                      hard_negatives=grid.recipe.get("hard_negatives", False))
    for alpha in [] if grid.only_untrained else grid.alphas:  # too few groups / X-X impossible: fail before any cell
        check_batches(grid.train_data, grid.batch_size, alpha)
    for spec in grid.models:  # loads each once: missing folders, bad layer counts fail here
        load_sized(spec)
    return grid


def run_ratio_grid(grid: RatioGrid, progress: bool = True) -> list[dict]:
    from tqdm.auto import tqdm

    cache = CellCache(grid.out / "cells.jsonl")
    cells = grid.cells()
    bar = tqdm(total=len(cells), initial=sum(grid.params(*c) in cache for c in cells), desc="ratio grid",
               unit="cell", disable=not progress)
    trainings: dict[tuple, list[float | None]] = {}  # (model, alpha, seed) -> its WiSE weights, in order
    for spec, alpha, seed, wise in cells:
        trainings.setdefault((spec, alpha, seed), []).append(wise)
    try:
        for (spec, alpha, seed), weights in trainings.items():
            todo = [w for w in weights if grid.params(spec, alpha, seed, w) not in cache]
            if todo:
                _run_training(grid, spec, alpha, seed, todo, cache, bar, progress)
    except KeyboardInterrupt:
        bar.close()
        _write_ratio(grid, cache, cells, interrupted=True)
        raise
    bar.close()
    return _write_ratio(grid, cache, cells)


def _run_training(grid: RatioGrid, spec: ModelSpec, alpha: float | None, seed: int | None, weights: list,
                  cache: CellCache, bar, progress: bool) -> None:
    """Train one cell's model (untrained: none) and evaluate it at each WiSE-FT weight; each is a finished cell."""
    from mlret_plugin.evaluation.dense import DenseRetriever
    from mlret_plugin.evaluation.lareqa import run_lareqa
    from mlret_plugin.experiments.finetune import finetune
    from mlret_plugin.encoding.backends import describe_machine, remove_autocast
    from mlret_plugin.training.wise import interpolate, snapshot

    machine = describe_machine()
    bar.set_postfix_str(f"{spec.label} alpha={'untrained' if alpha is None else alpha}"
                        + ("" if alpha is None else f" seed={seed}"))
    model, n_params, total_layers = load_sized(spec)
    start = time.perf_counter()
    train_info, initial = {}, None
    if alpha is not None:
        if any(w not in (None, 1.0) for w in weights):
            initial = snapshot(model)
        train_info = finetune(model, grid.train_data, alpha, grid.max_steps, batch_size=grid.batch_size,
                              learning_rate=grid.learning_rate, seed=seed, show_progress_bar=progress, **grid.recipe)
        finetuned = snapshot(model) if initial is not None else None
    train_seconds = time.perf_counter() - start
    for wise in weights:
        begin = time.perf_counter()
        if initial is not None:  # from the fine-tuned weights, every time: interpolations do not compound
            remove_autocast(model)  # the last evaluation's bf16 wrapper renames every weight
            model.load_state_dict(finetuned, strict=False)
            interpolate(model, initial, 1.0 if wise is None else wise)
        params = grid.params(spec, alpha, seed, wise)
        label = grid.label(spec, wise)
        extra = {"experiment": "ratio", "model": label, "base_model": spec.label,
                 "layers": spec.layers or total_layers, "params": n_params,
                 "alpha": alpha, "steps": train_info.get("steps", 0), "train": params["train"],
                 "candidates": grid.candidates, **({"wise": wise} if "wise" in params else {})}
        rows: list[dict] = []
        records: list[dict] = []
        for eval_name, collection, langs, groups in grid.evaluations():
            # a new retriever per evaluation: candidates of another collection share nothing
            retriever = DenseRetriever(model, candidates=grid.candidates, batch_size=grid.eval_batch_size,
                                       show_progress_bar=False, name=f"{label}@alpha={alpha}",
                                       cache=grid.embedding_cache, precision=grid.precision)
            sink: list[dict] = []
            found = run_lareqa(collection, [retriever], langs=langs or None, measures=MEASURES, progress=False,
                               query_groups=groups, per_query_sink=sink)
            rows += [{**r, **extra, "eval": eval_name} for r in found]
            records += [{**r, "eval": eval_name} for r in sink]
        info = {"train_seconds": train_seconds, "eval_seconds": time.perf_counter() - begin, **train_info,
                "machine": machine}
        save_per_query(grid.out, cell_key(params), records)  # before the cell counts as finished
        cache.put(params, rows, info)
        bar.update(1)


def untrained_coord(row: dict) -> tuple:
    """The grid point of a row's untrained model: a WiSE-FT row's is its base model's starting point (an
    untrained model has no WiSE weight)."""
    return (row.get("base_model", row["model"]), None)


def ratio_points(grid: RatioGrid, cells: list[dict]) -> list:
    """Grid points (model, alpha) of the finished cells, each with its seeds; each model's alphas are tested
    against its ``grid.baseline`` alpha (the baseline itself is not)."""
    from mlret_plugin.experiments.significance import Point

    points: dict[tuple, Point] = {}
    for cell in cells:
        first = cell["rows"][0]
        coord = (first["model"], first["alpha"])
        base = untrained_coord(first) if grid.baseline is None else (first["model"], grid.baseline)
        label = "untrained" if first["alpha"] is None else f"alpha {first['alpha']:g}"
        point = points.setdefault(coord, Point(coord, label, {}, None if base == coord else base))
        point.cells[cell["params"]["seed"]] = cell
    order = {m.label: i for i, m in enumerate(grid.models)}
    return sorted(points.values(), key=lambda p: (order.get(p.coord[0], len(order)), p.coord[0],
                                                  p.coord[1] is not None, p.coord[1] or 0.0))


def untrained_contrasts(points: list) -> list[tuple[tuple, tuple]]:
    """(trained point, its model's untrained point: ``untrained_coord``) for every trained point."""
    return [(point.coord, untrained_coord(next(iter(point.cells.values()))["rows"][0]))
            for point in points if point.coord[1] is not None]


def _write_ratio(grid: RatioGrid, cache: CellCache, cells: list, interrupted: bool = False) -> list[dict]:
    """Outputs from every finished cell that joins this grid (see the module doc)."""
    from mlret_plugin.experiments.report import add_baseline_delta, write_ratio_outputs
    from mlret_plugin.experiments.significance import summarize

    joined = [c for c in cache.cells() if grid.joins(c["params"])]
    if not joined:
        return []
    points = ratio_points(grid, joined)
    contrasts = untrained_contrasts(points) if grid.test_untrained and grid.baseline is not None else ()
    rows = add_baseline_delta(summarize(points, grid.out, evals=[name for name, *_ in grid.evaluations()],
                                        contrasts=contrasts), grid.baseline)
    header = _header(grid, joined)
    if interrupted:
        header += "\n\n" + cache.interrupted_note([grid.params(*c) for c in cells])
    write_ratio_outputs(rows, grid.out, header)
    return rows


def _header(grid: RatioGrid, cells: list[dict]) -> str:
    from mlret_plugin.encoding.backends import describe_machine

    here = describe_machine()
    # a grid sharing --out can grow over several machines (experiments.archive); bf16 numbers depend on the CPU
    machines = sorted({c["info"].get("machine", "not recorded") for c in cells} - {here})
    minutes = sum(c["info"].get("train_seconds", 0) + c["info"].get("eval_seconds", 0) for c in cells) / 60
    seeds = sorted({c["params"]["seed"] for c in cells if c["params"]["seed"] is not None})
    models = list(dict.fromkeys(c["rows"][0]["model"] for c in cells))
    alphas = sorted({c["params"]["alpha"] for c in cells if c["params"]["alpha"] is not None})
    held = (f"; {len(grid.held_out)} articles of {grid.train} held out of training ({grid.held_out}, holdout seed "
            f"{grid.holdout_seed}) and evaluated as '{grid.evaluations()[-1][0]}' (their questions against every candidate)"
            if grid.holdout_articles else "")
    if grid.split:
        held = (f"; {grid.train} split by article (seed {grid.split_seed}): dev and test ({len(grid.held_out)} articles) "
                f"never trained on; evaluated on '{grid.evaluations()[-1][0]}' ({len(grid.evaluated_part)} articles: "
                "their questions against every candidate"
                + (f" of {', '.join(grid.part_langs)}" if grid.part_langs else "") + ")")
    recipe = ", ".join(f"{k} {v}" for k, v in grid.recipe.items()) or "the defaults"
    wise = (f"; each trained model also at WiSE-FT weights {', '.join(f'{w:g}' for w in grid.wise_weights if w != 1)}"
            if any(w != 1 for w in grid.wise_weights) else "")
    return "\n".join([
        f"# Ratio experiment: model size x alpha, train {grid.train} -> evaluate "
        f"{', '.join(name for name, *_ in grid.evaluations())}",
        "",
        f"- Models: {', '.join(models)} (truncated models keep the first N layers of one checkpoint)",
        (f"- Training: {grid.max_steps} steps of hybrid batches ({grid.batch_size} pairs, in-batch negatives, "
         f"lr {grid.learning_rate}, passages: {grid.passage_field}; recipe: {recipe}){wise}; "
         f"alphas {', '.join(f'{a:g}' for a in alphas)}; "
         f"training seeds {', '.join(map(str, seeds)) or '-'} (values: mean over seeds, ± std)"
         + ("; 'untrained' rows are the starting point" if grid.include_untrained else "")
         if alphas else "- Training: none yet (the untrained starting point only)") + held,
        f"- Evaluation: {', '.join(name for name, *_ in grid.evaluations())}"
        + (f" ({grid.eval_collection} over {', '.join(grid._langs)})" if grid.eval_collection else "")
        + f", candidates {grid.candidates}, mAP over the full ranking",
        f"- Tests: each alpha against {'the untrained model' if grid.baseline is None else f'alpha {grid.baseline:g}'} "
        "of the same model" + (", and each trained alpha against the untrained model"
                               if grid.test_untrained and grid.baseline is not None else "")
        + "; Δ = alpha - baseline",
        "- Every finished cell in this folder with the same evaluation and training recipe is reported (commands "
        "sharing --out join here)",
        f"- Machine: {here}; compute time {minutes:.1f} min"
        + (f"; cells also from: {'; '.join(machines)}" if machines else ""),
    ])


__all__ = ["RECIPE_DEFAULTS", "ModelSpec", "RatioGrid", "build_ratio_grid", "check_alphas", "check_baseline",
           "check_models", "check_recipe", "check_wise_weights",
           "check_seed_list", "model_spec", "parse_alphas", "parse_baseline", "parse_model", "parse_models",
           "parse_seed_list", "ratio_points", "run_ratio_grid"]
