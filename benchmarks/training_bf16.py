"""bf16 training on this CPU against fp32, same seed: time per step and the loss curve, side by side.

offline-e5 (multilingual-e5-small) trained by ``mlret train``'s own function (``train_hybrid``: the
SentenceTransformerTrainer, HybridBatchSampler alpha 0.5, MultipleNegativesRankingLoss) on MLQA-R (question,
answer sentence) pairs, ``--steps`` steps of ``--batch-size`` pairs, seed 0, once in fp32 and once with the
Trainer's ``bf16=True`` (autocast to bfloat16, fp32 master weights). Prints the loss at every step of both,
the seconds per step (wall and this process's CPU time, the first step excluded) and their ratio.

    python benchmarks/training_bf16.py --steps 40 --batch-size 32
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def run(precision: str, steps: int, batch_size: int, seed: int) -> dict:
    from transformers import TrainerCallback

    import mlret_plugin
    from mlret_plugin.training import load_parallel
    from mlret_plugin.training.run import train_hybrid

    class Clock(TrainerCallback):
        def __init__(self):
            self.wall, self.cpu, self.losses = [], [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            self.wall.append(time.perf_counter() - self.start[0])
            self.cpu.append(time.process_time() - self.start[1])

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append((state.global_step, logs["loss"]))

    model = mlret_plugin.load_model("offline-e5")
    data = load_parallel("mlqa-r")
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        train_hybrid(model, data, Path(tmp), alpha=0.5, batch_size=batch_size, max_steps=steps, seed=seed,
                     save_steps=steps + 1, show_progress=False, bf16=precision == "bf16", logging_steps=1,
                     callbacks=[clock])
    return {"wall": sum(clock.wall[1:]) / (len(clock.wall) - 1), "cpu": sum(clock.cpu[1:]) / (len(clock.cpu) - 1),
            "losses": clock.losses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    results = {p: run(p, args.steps, args.batch_size, args.seed) for p in ("fp32", "bf16")}
    fp32, bf16 = results["fp32"], results["bf16"]
    print(f"\noffline-e5, MLQA-R pairs, {args.steps} steps x {args.batch_size} pairs, seed {args.seed}, "
          f"{torch.get_num_threads()} threads; seconds per step (mean, first step excluded)\n")
    print("| precision | s/step (wall) | s/step (CPU) | vs fp32 (CPU) | loss at steps 1 / 10 / 20 / last |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        losses = dict(r["losses"])
        picks = [losses.get(s) for s in (1, 10, 20, args.steps)]
        shown = " / ".join(f"{v:.4f}" if v is not None else "-" for v in picks)
        print(f"| {name} | {r['wall']:.2f} | {r['cpu']:.2f} | {fp32['cpu'] / r['cpu']:.2f}x | {shown} |")
    diffs = [abs(a - b) for (_, a), (_, b) in zip(fp32["losses"], bf16["losses"])]
    print(f"\nloss, bf16 - fp32 per step: max |Δ| {max(diffs):.4f}, mean |Δ| {sum(diffs) / len(diffs):.4f}")
    print("steps: " + ", ".join(f"{s}: {a:.3f}/{b:.3f}" for (s, a), (_, b) in zip(fp32["losses"], bf16["losses"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
