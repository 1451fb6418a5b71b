"""HybridBatchSampler cost per batch vs one training step of the tiny test model, measured in the same run.

    python benchmarks/sampler.py [--groups 5000] [--langs 7] [--batch-size 32]

Prints the sampler's time per batch (planning the keys), the dataset's time to compose the pairs of a
batch (the transform), one SentenceTransformerTrainer step on the tiny BERT (hidden 48, 2 layers) with
MultipleNegativesRankingLoss, and the ratios. The target is below 1% for the sampler.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=5000)
    parser.add_argument("--langs", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from mlret_plugin.training import HybridBatchSampler, parallel_dataset
    from tiny_models import tiny_sentence_transformer

    langs = ["ar", "de", "en", "es", "hi", "vi", "zh", "el", "ru", "th", "tr"][: args.langs]
    spaced = lambda g: " ".join(str(g))  # noqa: E731
    rows = [{"group_id": f"g{g}", "lang": lang, "query": f"{lang} which fact is {spaced(g)} ?",
             "passage": f"{lang} the fact number {spaced(g)} is stated here ."}
            for g in range(args.groups) for lang in langs if (g + langs.index(lang)) % 3]  # MLQA-like gaps
    ds = parallel_dataset(rows)
    sampler = HybridBatchSampler(ds, batch_size=args.batch_size, drop_last=True, seed=0, alpha=0.5)

    start = time.perf_counter()
    epochs, batches = 0, []
    while time.perf_counter() - start < 2.0:
        sampler.set_epoch(epochs)
        batches += list(sampler)
        epochs += 1
    per_batch_sampler = (time.perf_counter() - start) / len(batches)

    start = time.perf_counter()
    for keys in batches[:500]:
        ds.__getitems__(keys)
    per_batch_compose = (time.perf_counter() - start) / min(500, len(batches))

    model = tiny_sentence_transformer("bert", tempfile.mkdtemp(prefix="bench-sampler-"))
    targs = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-sampler-out-"), per_device_train_batch_size=args.batch_size,
        max_steps=args.steps + 2, batch_sampler=HybridBatchSampler.factory(alpha=0.5), report_to="none",
        save_strategy="no", disable_tqdm=True, logging_steps=10 ** 6, use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=ds,
                                         loss=MultipleNegativesRankingLoss(model))
    step_times: list[float] = []

    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)

    trainer.add_callback(StepTimer())
    trainer.train()
    per_step = sorted(step_times[2:])[len(step_times[2:]) // 2]  # median, warm-up steps dropped

    print(f"data: {len(rows)} rows, {args.groups} groups, {len(langs)} languages; batch {args.batch_size} pairs")
    print(f"sampler plan per batch:     {per_batch_sampler * 1e3:8.3f} ms ({len(batches)} batches)")
    print(f"pair composition per batch: {per_batch_compose * 1e3:8.3f} ms")
    print(f"tiny-model training step:   {per_step * 1e3:8.3f} ms (median of {len(step_times) - 2})")
    print(f"sampler / step:             {per_batch_sampler / per_step:8.3%}  (target < 1%)")
    print(f"composition / step:         {per_batch_compose / per_step:8.3%}")


if __name__ == "__main__":
    main()
