"""GPU benchmark of the Triton block-sparse kernel against dense SDPA and the torch backend.

Needs a CUDA GPU (none was available when this was written: the numbers have never been produced).
``benchmarks/gpu_check.py`` is the one-shot check for a lent GPU (correctness in three dtypes, then speed
against SDPA and FlexAttention); this script is the quick sweep over sequence lengths.
All peers run in one process on the same inputs; times are the best of ``--repeats`` CUDA-synchronised
runs after a warm-up (which also compiles the kernels), and ratios compare peers of this run.

    python benchmarks/triton_kernel.py                         # seq 512..8192, fp16, 12 heads, d=64
    python benchmarks/triton_kernel.py --seq 4096 --dtype bfloat16
    TRITON_INTERPRET=1 python benchmarks/triton_kernel.py --smoke   # CPU plumbing check, tiny shapes
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from mlret_plugin.attention import SparsityConfig, layout_attention
from mlret_plugin.attention.triton_kernel import block_sparse_attention


def best_time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up: kernel compilation, caches
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def with_backward(fn, q, k, v):
    def run():
        for t in (q, k, v):
            t.grad = None
        fn(q, k, v).float().sum().backward()
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1")
    args = parser.parse_args(argv)

    if args.smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":
            print("--smoke runs the kernels under Triton's interpreter: set TRITON_INTERPRET=1", file=sys.stderr)
            return 2
        device, dtype = torch.device("cpu"), torch.float32
        args.seq, args.heads, args.head_dim, args.window, args.repeats = [128], 2, 32, 16, 1
    else:
        if not torch.cuda.is_available():
            print("this benchmark needs a CUDA GPU (use --smoke with TRITON_INTERPRET=1 to check it on CPU)",
                  file=sys.stderr)
            return 2
        device, dtype = torch.device("cuda"), getattr(torch, args.dtype)

    configs = {
        f"local w={args.window}": SparsityConfig(kind="local", window=args.window, num_global=1,
                                                 block=32 if args.smoke else 64),
        "block_sparse": SparsityConfig(kind="block_sparse", block=32 if args.smoke else 64, band=1, num_global=1,
                                       num_random=2, seed=0),
    }
    print(f"device={device} dtype={dtype} batch={args.batch} heads={args.heads} head_dim={args.head_dim}")
    print(f"{'seq':>6} {'pattern':<16} {'density':>7} {'pass':<8} {'triton s':>9} {'sdpa s':>9} {'torch s':>9} "
          f"{'sdpa/triton':>11} {'torch/triton':>12}")
    for L in args.seq:
        shape = (args.batch, args.heads, L, args.head_dim)
        q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        for name, config in configs.items():
            layout = config.layout(L, args.heads)
            peers = {
                "triton": lambda q, k, v: block_sparse_attention(q, k, v, layout),
                "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
                "torch": lambda q, k, v: layout_attention(q, k, v, layout),
            }
            for label, backward in (("fwd", False), ("fwd+bwd", True)):
                times = {peer: best_time(with_backward(fn, q, k, v) if backward else (lambda fn=fn: fn(q, k, v)),
                                         args.repeats, device) for peer, fn in peers.items()}
                print(f"{L:>6} {name:<16} {layout.density:>7.3f} {label:<8} {times['triton']:>9.4f} "
                      f"{times['sdpa']:>9.4f} {times['torch']:>9.4f} {times['sdpa'] / times['triton']:>11.2f} "
                      f"{times['torch'] / times['triton']:>12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
