"""The hybrid recipe's parts: the cached loss sees the sampler's whole logical batch, frozen word embeddings stay put,
the distillation term keeps embeddings near the start, WiSE-FT interpolates, the article split is disjoint and
stable, hard negatives are never relevant."""
from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

from mlret_plugin.training import HybridBatchSampler, parallel_dataset
from mlret_plugin.training.run import train_hybrid
from mlret_plugin.training.wise import interpolate, snapshot
from test_training_fit import RecordingLoss, assert_hybrid, rows  # noqa: F401  (rows: a fixture)
from tiny_models import tiny_model_dir, tiny_sentence_transformer


@pytest.fixture
def home6(tmp_path, monkeypatch):
    """A fixture home with 6 articles per collection: enough to split into train / dev / test."""
    from lareqa_fixtures import seeded_home

    return seeded_home(tmp_path, monkeypatch, articles=6)


class RecordingCachedLoss(CachedMultipleNegativesRankingLoss):
    """The cached loss, recording what each call receives (the logical batch) and each mini-batch it embeds."""

    def __init__(self, model, rows, mini_batch_size):
        super().__init__(model, mini_batch_size=mini_batch_size)
        self.decoder = RecordingLoss(model, rows)  # its lookup and decoding of token ids
        self.seen, self.mini_batches = [], []

    def forward(self, features, labels=None):
        tok = self.model.tokenizer
        queries = tok.batch_decode(features[0]["input_ids"], skip_special_tokens=True)
        passages = tok.batch_decode(features[1]["input_ids"], skip_special_tokens=True)
        self.seen.append([self.decoder.lookup[("q", q)] + self.decoder.lookup[("p", p)]
                          for q, p in zip(queries, passages)])
        return super().forward(features, labels)

    def embed_minibatch_iter(self, sentence_feature, **kwargs):
        for reps, state in super().embed_minibatch_iter(sentence_feature, **kwargs):
            self.mini_batches.append(len(reps))
            yield reps, state


@pytest.mark.parametrize("alpha,kinds", [(0.5, {"X-X", "X-Y"}), (1.0, {"X-X"}), (0.0, {"X-Y"})])
def test_the_cached_loss_sees_the_samplers_whole_batch(tmp_path, rows, alpha, kinds):  # noqa: F811
    """A batch of 8 pairs embedded in mini-batches of 2: every loss call still holds the 8 pairs the sampler
    composed (one language in X-X batches, query and passage languages differing in X-Y), and embedding ran in
    mini-batches of 2."""
    model = tiny_sentence_transformer("bert", tmp_path)
    loss = RecordingCachedLoss(model, rows, mini_batch_size=2)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, max_steps=4, seed=3,
        batch_sampler=HybridBatchSampler.factory(alpha=alpha), report_to="none", save_strategy="no",
        disable_tqdm=True)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=parallel_dataset(rows), loss=loss).train()
    assert len(loss.seen) == 4
    assert_hybrid(loss.seen, 8, kinds)
    assert set(loss.mini_batches) == {2}


def _embeddings_weight(model) -> torch.Tensor:
    return model[0].auto_model.get_input_embeddings().weight


def test_frozen_word_embeddings_do_not_move_and_the_rest_trains(tmp_path, rows):  # noqa: F811
    model = tiny_sentence_transformer("bert", tmp_path)
    before_emb = _embeddings_weight(model).detach().clone()
    before_layer = model[0].auto_model.encoder.layer[0].attention.self.query.weight.detach().clone()
    train_hybrid(model, parallel_dataset(rows), tmp_path / "run", alpha=0.5, batch_size=4, max_steps=3,
                 learning_rate=1e-2, save_steps=100, show_progress=False, freeze_embeddings=True)
    assert torch.equal(_embeddings_weight(model).detach(), before_emb)
    assert not torch.equal(model[0].auto_model.encoder.layer[0].attention.self.query.weight.detach(), before_layer)


def _drift(model, reference, texts) -> float:
    a = model.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    b = reference.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    return float((1 - torch.nn.functional.cosine_similarity(a, b)).mean())


@pytest.mark.parametrize("loss", ["mnrl", "cached-mnrl"])
def test_distillation_keeps_embeddings_near_the_start(tmp_path, rows, loss):  # noqa: F811
    texts = [r["query"] for r in rows[:12]] + [r["passage"] for r in rows[:12]]
    start = tiny_sentence_transformer("bert", tmp_path / "start")
    drift = {}
    for weight in (0.0, 20.0):
        model = tiny_sentence_transformer("bert", tmp_path / f"w{weight}")
        train_hybrid(model, parallel_dataset(rows), tmp_path / f"run{weight}", alpha=0.5, batch_size=4, max_steps=8,
                     learning_rate=5e-3, save_steps=100, show_progress=False, loss=loss, mini_batch_size=2,
                     distill_weight=weight, seed=0)
        drift[weight] = _drift(model, start, texts)
    assert drift[0.0] > 0 and drift[20.0] < 0.5 * drift[0.0]


def test_wise_ft_interpolates_between_start_and_fine_tuned(tmp_path):
    model = tiny_sentence_transformer("bert", tmp_path)
    start = snapshot(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    tuned = snapshot(model)
    interpolate(model, start, 0.25)
    name = next(iter(start))
    assert torch.allclose(model.state_dict()[name], start[name] + 0.25 * (tuned[name] - start[name]))
    model.load_state_dict(tuned, strict=False)
    interpolate(model, start, 0.0)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in start.items())
    with pytest.raises(ValueError, match=r"weight=1.5"):
        interpolate(model, start, 1.5)


def test_the_article_split_is_disjoint_stable_and_holds_a_fifth_for_test(home6):
    from mlret_plugin.training.splits import article_split, collection_articles, held_out_groups

    for collection in ("mlqa-r", "xquad-r"):
        split = article_split(collection, dev=0.25, test=0.25, seed=1)
        assert split == article_split(collection, dev=0.25, test=0.25, seed=1)  # the same in every run
        parts = [set(split.train), set(split.dev), set(split.test)]
        assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:])
        assert set().union(*parts) == set(collection_articles(collection))
        groups = {name: held_out_groups(collection, set(split.part(name))) for name in ("train", "dev", "test")}
        total = sum(len(g) for g in groups.values())
        assert len(groups["test"]) >= 0.25 * total and len(groups["dev"]) >= 0.25 * total
    with pytest.raises(ValueError, match="expected shares"):
        article_split("mlqa-r", dev=0.6, test=0.5)


def test_hard_negatives_are_never_relevant_to_their_query(lareqa_home):
    from mlret_plugin.datasets import parse_dataset_id
    from mlret_plugin.datasets.ids import group_id
    from mlret_plugin.training.data import lareqa_rows

    rows = lareqa_rows("mlqa-r", hard_negatives=True, keep_doc_ids=True)
    assert rows and all(r["negative"] for r in rows)
    relevant: dict[str, set[str]] = {}
    for qrel in parse_dataset_id("mlqa-r").load().qrels_iter():
        relevant.setdefault(group_id(qrel.query_id), set()).add(qrel.doc_id)
    for r in rows:
        assert r["_negative_doc_id"] not in relevant[r["group_id"]]
        assert r["_negative_doc_id"].rsplit("-s", 1)[0] == r["_doc_id"].rsplit("-s", 1)[0]  # the same paragraph
    assert rows == lareqa_rows("mlqa-r", hard_negatives=True, keep_doc_ids=True)  # seeded: the same every time


@pytest.mark.slow  # trains and evaluates a whole run: CI, not the fast loop
def test_a_recipe_search_grid_trains_on_train_articles_and_evaluates_dev_at_each_wise_weight(home6, tmp_path):
    """As the real search runs it: evaluation in torch bf16, whose wrapper renames the weights between WiSE cells."""
    from mlret_plugin.encoding.backends import cpu_has_bf16
    from mlret_plugin.experiments.ratio import build_ratio_grid, run_ratio_grid
    from mlret_plugin.training.splits import article_split, held_out_groups

    if not cpu_has_bf16():
        pytest.skip("torch bf16 evaluation needs AVX512_BF16 / AMX")

    model = str(tiny_model_dir("bert", tmp_path))
    grid = build_ratio_grid("mlqa-r", None, [model], alphas=[0.5], max_steps=2, out=tmp_path / "search", seeds=[0],
                            baseline="untrained", batch_size=2, split="dev",
                            recipe={"loss": "cached-mnrl", "mini_batch_size": 1, "freeze_embeddings": True},
                            wise_weights=[1, 0.5], precision="bf16")
    split = article_split("mlqa-r")
    trained_groups = set(grid.train_data.with_format(None)["group_id"][:-1])  # the marker row excluded
    assert not trained_groups & held_out_groups("mlqa-r", set(split.dev + split.test))
    assert [name for name, *_ in grid.evaluations()] == ["mlqa-r dev"]
    rows = run_ratio_grid(grid, progress=False)
    summary = [r for r in rows if r["breakdown"] == "summary" and r["measure"] == "AP" and r["setting"] == "multi"]
    assert {r["model"] for r in summary} == {"st-bert", "st-bert [WiSE 0.5]"}
    assert {r["eval"] for r in summary} == {"mlqa-r dev"}
    cells = [c["params"] for c in grid_cells(tmp_path / "search")]
    assert all(p["split"]["part"] == "dev" and p["split"]["articles"] == split.dev for p in cells)
    assert {p.get("wise") for p in cells if p["alpha"] is not None} == {None, 0.5}
    assert all(p["recipe"] == {"loss": "cached-mnrl", "mini_batch_size": 1, "freeze_embeddings": True}
               for p in cells if p["alpha"] is not None)


def grid_cells(folder):
    import json

    return [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name,distill", [("mnrl", 0.0), ("cached-mnrl", 0.0), ("cached-mnrl", 1.0)])
def test_the_loss_scale_is_the_softmax_inverse_temperature(tmp_path, rows, name, distill):  # noqa: F811
    from mlret_plugin.training.losses import make_loss

    model = tiny_sentence_transformer("bert", tmp_path)
    model.eval()
    queries, passages = [r["query"] for r in rows[:4]], [r["passage"] for r in rows[:4]]
    features = [model.tokenize(queries), model.tokenize(passages)]
    with torch.no_grad():
        q, p = (torch.nn.functional.normalize(model(dict(f))["sentence_embedding"], dim=-1) for f in features)
        for scale in (5.0, 50.0):
            expected = torch.nn.functional.cross_entropy(scale * q @ p.T, torch.arange(4))
            loss = make_loss(model, name, mini_batch_size=2, distill_weight=distill, scale=scale)
            # the distillation term is 0 here: the frozen copy is the model itself
            assert torch.allclose(loss([dict(f) for f in features], None), expected, atol=1e-5)
    with pytest.raises(ValueError, match="scale=0"):
        make_loss(model, name, scale=0)


@pytest.mark.parametrize("distill", [0.0, 1.0])
def test_the_cached_loss_replays_its_mini_batches_under_the_forward_autocast(tmp_path, rows, distill):  # noqa: F811
    """The gradient replay runs inside backward(), outside the Trainer's autocast: it must re-enter it, so that
    under bf16 training the replayed forward computes in bf16 like the cached one."""
    from mlret_plugin.training.losses import make_loss

    model = tiny_sentence_transformer("bert", tmp_path)
    queries, passages = [r["query"] for r in rows[:4]], [r["passage"] for r in rows[:4]]
    features = [model.tokenize(queries), model.tokenize(passages)]
    loss = make_loss(model, "cached-mnrl", mini_batch_size=2, distill_weight=distill)
    replayed = []  # the dtype of a linear layer's output in each forward that builds a graph (the replay's)
    layer = model[0].auto_model.encoder.layer[0].attention.self.query
    layer.register_forward_hook(lambda m, i, out: replayed.append(out.dtype) if torch.is_grad_enabled() else None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss([dict(f) for f in features], None)
    value.backward()  # outside autocast, as the Trainer does
    assert replayed == [torch.bfloat16] * 4  # 2 columns x 2 mini-batches
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    replayed.clear()
    loss([dict(f) for f in features], None).backward()  # no autocast: the replay stays fp32
    assert replayed == [torch.float32] * 4


def test_mlret_train_defaults_are_the_hybrid_recipe_and_the_grid_spells_it_the_same():
    from mlret_plugin.cli.main import build_parser
    from mlret_plugin.cli.recipe import recipe_of
    from mlret_plugin.cli.train import PLAIN, fill_defaults, steps_of
    from mlret_plugin.training.recipe import HYBRID_RECIPE, NEUTRAL_RECIPE, recipe_flags

    parser = build_parser()
    train = fill_defaults(parser.parse_args(["train", "--train", "mlqa-r", "--model", "m", "--out", "o"]), images=False)
    ratio = parser.parse_args(["experiment", "ratio", "--train", "mlqa-r", "--eval", "xquad-r", "--models", "m",
                               "--out", "o", *recipe_flags()])
    for args in (train, ratio):
        knobs = {**recipe_of(args), "batch_size": args.batch_size}
        assert {k: v for k, v in knobs.items() if k in HYBRID_RECIPE} == {
            k: v for k, v in HYBRID_RECIPE.items() if k in knobs}
    assert train.lr == ratio.learning_rate == HYBRID_RECIPE["learning_rate"]
    assert train.wise_ft == HYBRID_RECIPE["wise_ft"] and ratio.wise_weights in ([HYBRID_RECIPE["wise_ft"]], None)
    assert steps_of(train) == {"epochs": 1.0, "max_steps": HYBRID_RECIPE["max_steps"]} == {
        "epochs": 1.0, "max_steps": ratio.max_steps}
    assert steps_of(parser.parse_args(["train", "--train", "x", "--model", "m", "--out", "o", "--epochs", "2"])) == {
        "epochs": 2.0, "max_steps": -1}  # --epochs replaces the recipe's step count
    plain = parser.parse_args(["experiment", "ratio", "--train", "mlqa-r", "--eval", "xquad-r", "--models", "m",
                               "--max-steps", "1", "--out", "o"])
    assert {k: v for k, v in recipe_of(plain).items() if k != "bf16"} == NEUTRAL_RECIPE  # grids keep their meaning
    # image-text rows: the recipe was chosen for text retrieval, so they keep the plain defaults (one epoch)
    images = fill_defaults(parser.parse_args(["train", "--train", "x", "--model", "m", "--out", "o"]), images=True)
    assert (images.scale, images.wise_ft, images.batch_size, images.loss) == (
        PLAIN["scale"], 1.0, 32, "mnrl") and steps_of(images, images=True) == {"epochs": 1.0, "max_steps": -1}
    given = fill_defaults(parser.parse_args(["train", "--train", "x", "--model", "m", "--out", "o", "--scale", "7"]),
                          images=True)
    assert given.scale == 7  # what the command line says always wins
    with pytest.raises(ValueError, match="unknown knob"):
        recipe_flags({"dropout": 0.1})
