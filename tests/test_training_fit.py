"""The loss itself sees hybrid batches, through the SentenceTransformerTrainer and through ``model.fit``.

A recording loss decodes the token ids it receives back to the (group, language) of every text, so the
test checks what training really used, not what the sampler planned.
"""
from __future__ import annotations

import pytest
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from mlret_plugin.training import HybridBatchSampler, parallel_dataset
from mlret_plugin.training.fit import HybridDataLoader, enable_hybrid_fit, hybrid_fit
from tiny_models import tiny_sentence_transformer


class RecordingLoss(MultipleNegativesRankingLoss):
    """MNRL that records [(query group, query lang, passage group, passage lang), ...] per batch it is given."""

    def __init__(self, model, rows: list[dict]):
        super().__init__(model)
        tok = model.tokenizer
        roundtrip = lambda text: tok.decode(tok(text)["input_ids"], skip_special_tokens=True)  # noqa: E731
        self.lookup = {}
        for r in rows:
            for side, text in (("q", r["query"]), ("p", r["passage"])):
                key = (side, roundtrip(text))
                assert key not in self.lookup, f"texts must stay distinct after tokenization: {key}"
                self.lookup[key] = (r["group_id"], r["lang"])
        self.seen: list[list[tuple[str, str, str, str]]] = []

    def forward(self, features, labels=None):
        tok = self.model.tokenizer
        queries = tok.batch_decode(features[0]["input_ids"], skip_special_tokens=True)
        passages = tok.batch_decode(features[1]["input_ids"], skip_special_tokens=True)
        self.seen.append([self.lookup[("q", q)] + self.lookup[("p", p)] for q, p in zip(queries, passages)])
        return super().forward(features, labels)


def assert_hybrid(seen: list[list[tuple]], batch_size: int, kinds: set[str]):
    found = set()
    for batch in seen:
        assert len(batch) == batch_size
        groups = [qg for qg, _, _, _ in batch]
        assert len(set(groups)) == len(groups), f"duplicate group in a batch the loss saw: {groups}"
        assert all(qg == pg for qg, _, pg, _ in batch)
        langs = {ql for _, ql, _, _ in batch} | {pl for _, _, _, pl in batch}
        if all(ql == pl for _, ql, _, pl in batch):
            assert len(langs) == 1, f"a monolingual batch mixes languages: {batch}"
            found.add("X-X")
        else:
            assert all(ql != pl for _, ql, _, pl in batch), f"a batch mixes X-X and X-Y pairs: {batch}"
            found.add("X-Y")
    assert found == kinds


@pytest.fixture(scope="module")
def rows():
    # Digits spaced out: the tiny WordPiece vocabulary knows single digits, not every number.
    spaced = lambda g: " ".join(str(g))  # noqa: E731
    return [
        {"group_id": f"g{g}", "lang": lang, "query": f"{lang} q {spaced(g)}", "passage": f"{lang} p {spaced(g)}"}
        for g in range(24) for lang in ("de", "en", "es")
    ]


@pytest.fixture
def model(tmp_path):
    return tiny_sentence_transformer("bert", tmp_path)


@pytest.mark.parametrize("alpha,kinds", [(0.5, {"X-X", "X-Y"}), (1.0, {"X-X"}), (0.0, {"X-Y"})])
def test_trainer_loss_sees_hybrid_batches(model, rows, tmp_path, alpha, kinds):
    loss = RecordingLoss(model, rows)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_train_epochs=2, seed=1,
        batch_sampler=HybridBatchSampler.factory(alpha=alpha), report_to="none", save_strategy="no",
        disable_tqdm=True, dataloader_drop_last=True,
    )
    SentenceTransformerTrainer(model=model, args=args, train_dataset=parallel_dataset(rows), loss=loss).train()
    assert len(loss.seen) == 12  # 24 groups / 4 per batch x 2 epochs
    assert_hybrid(loss.seen, 4, kinds)
    epoch0, epoch1 = loss.seen[:6], loss.seen[6:]
    assert epoch0 != epoch1, "set_epoch must reshuffle"


def test_model_fit_honours_hybrid_loader(model, rows, tmp_path):
    loss = RecordingLoss(model, rows)
    loader = HybridDataLoader(parallel_dataset(rows), batch_size=4, alpha=0.5, seed=2, drop_last=True)
    enable_hybrid_fit(model)
    model.fit([(loader, loss)], epochs=2, warmup_steps=1, show_progress_bar=False,
              checkpoint_path=str(tmp_path / "ckpt"), checkpoint_save_steps=100)
    assert len(loss.seen) == 12
    assert_hybrid(loss.seen, 4, {"X-X", "X-Y"})
    # The plan of the same sampler settings is exactly what the loss saw, epoch by epoch.
    planned = []
    for epoch in range(2):
        sampler = HybridBatchSampler(loader.dataset, batch_size=4, drop_last=True, seed=2, alpha=0.5)
        sampler.set_epoch(epoch)
        planned += [kind for kind, _ in sampler.batches()]
    seen_kinds = ["X-X" if all(ql == pl for _, ql, _, pl in b) else "X-Y" for b in loss.seen]
    assert seen_kinds == planned


def test_fit_without_hybrid_loader_uses_stock_fit(model, rows, tmp_path, monkeypatch):
    calls = []
    from sentence_transformers.sentence_transformer.fit_mixin import FitMixin

    monkeypatch.setattr(FitMixin, "fit", lambda self, objectives, **kw: calls.append(len(objectives)))
    hybrid_fit(model, [(object(), None)])
    assert calls == [1]


def test_fit_rejects_a_hybrid_loader_mixed_with_others(model, rows):
    loader = HybridDataLoader(parallel_dataset(rows), batch_size=4)
    with pytest.raises(ValueError, match="supports one objective"):
        hybrid_fit(model, [(loader, None), (loader, None)])


def test_hybrid_loader_iterates_pairs(rows):
    loader = HybridDataLoader(parallel_dataset(rows), batch_size=4, alpha=0.0, seed=0)
    batch = next(iter(loader))
    assert set(batch) == {"anchor", "positive"} and len(batch["anchor"]) == 4
    assert all(a.split()[0] != p.split()[0] for a, p in zip(batch["anchor"], batch["positive"]))


def test_fit_of_a_model_from_load_model_sees_hybrid_batches(rows, tmp_path):
    from tiny_models import tiny_model_dir

    import mlret_plugin

    model = mlret_plugin.load_model(str(tiny_model_dir("bert", tmp_path)), "local", window=4)
    loss = RecordingLoss(model, rows)
    loader = HybridDataLoader(parallel_dataset(rows), batch_size=4, alpha=0.0, seed=3, drop_last=True)
    model.fit([(loader, loss)], epochs=1, warmup_steps=1, show_progress_bar=False)
    assert len(loss.seen) == 6
    assert_hybrid(loss.seen, 4, {"X-Y"})
