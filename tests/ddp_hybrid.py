"""Run by tests/test_training_ddp.py under ``torchrun --nproc_per_node 2`` (gloo, CPU).

Trains a tiny model with HybridBatchSampler and MNRL gathering negatives across ranks; every rank writes
what its loss saw at each step (batch pairs as (group, query lang, passage lang)) to OUT/rank{r}.json.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch.distributed as dist  # noqa: E402
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments  # noqa: E402
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss  # noqa: E402

from mlret_plugin.training import HybridBatchSampler, parallel_dataset  # noqa: E402
from tiny_models import tiny_sentence_transformer  # noqa: E402


class Recording(MultipleNegativesRankingLoss):
    def __init__(self, model, lookup):
        super().__init__(model, gather_across_devices=True)
        # The Trainer wraps self.model in DDP; keep the tokenizer from the plain model.
        self.tok, self.lookup, self.seen = model.tokenizer, lookup, []

    def forward(self, features, labels=None):
        tok = self.tok
        q = tok.batch_decode(features[0]["input_ids"], skip_special_tokens=True)
        p = tok.batch_decode(features[1]["input_ids"], skip_special_tokens=True)
        self.seen.append([[self.lookup[a][0], self.lookup[a][1], self.lookup[b][1]] for a, b in zip(q, p)])
        return super().forward(features, labels)


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    spaced = lambda g: " ".join(str(g))  # noqa: E731
    rows = [{"group_id": f"g{g}", "lang": lang, "query": f"{lang} q {spaced(g)}", "passage": f"{lang} p {spaced(g)}"}
            for g in range(44) for lang in ("de", "en", "es")]
    model = tiny_sentence_transformer("bert", out / f"model{rank}", seed=0)
    tok = model.tokenizer
    lookup = {}
    for r in rows:
        for text in (r["query"], r["passage"]):
            lookup[tok.decode(tok(text)["input_ids"], skip_special_tokens=True)] = (r["group_id"], r["lang"])
    loss = Recording(model, lookup)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "ckpt"), per_device_train_batch_size=4, num_train_epochs=2, seed=7,
        batch_sampler=HybridBatchSampler.factory(alpha=0.5), report_to="none", save_strategy="no",
        disable_tqdm=True, ddp_backend="gloo", use_cpu=True, dataloader_drop_last=False,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=parallel_dataset(rows), loss=loss)
    trainer.train()
    world = dist.get_world_size() if dist.is_initialized() else 1
    from mlret_plugin.training.run import process_rank  # the rank `mlret train` decides by (accelerate's)

    (out / f"rank{rank}.json").write_text(json.dumps({"world_size": world, "process_rank": process_rank(),
                                                      "seen": loss.seen}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
