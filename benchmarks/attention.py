"""CPU benchmark of the PyTorch sparse-attention path against dense SDPA and compiled FlexAttention.

All three run in the same process on the same inputs; FlexAttention gets the *identical* mask (the
layout's token rule as a mask_mod). Times are the best of ``--repeats`` runs after a warm-up; ratios
compare peers measured in this run. Compiled Flex has no CPU backward, so fwd+bwd compares with SDPA only.

    python benchmarks/attention.py                       # seq 512..8192, window 256, 12 heads, d=64
    python benchmarks/attention.py --seq 4096 --no-flex  # quick look
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from mlret_plugin.attention import SparsityConfig, sparse_attention


def best_times(fns: dict, repeats: int) -> dict:
    """Best time of each callable; runs are interleaved so machine load hits all peers alike."""
    for fn in fns.values():
        fn()  # warm-up (compilation, caches)
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def fwd_bwd(fn, q, k, v):
    def run():
        for t in (q, k, v):
            t.grad = None
        fn(q, k, v).sum().backward()
    return run


def flex_runner(config: SparsityConfig, L: int, H: int):
    """Compiled FlexAttention with the layout's exact token mask."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    # A fresh compile cache per shape/pattern: past dynamo's recompile limit Flex silently runs eagerly (slow).
    torch._dynamo.reset()
    layout = config.layout(L, H)
    if layout.window is not None:
        w, g = layout.window, layout.num_global

        def mask_mod(b, h, qi, ki):
            return ((qi - ki).abs() <= w) | (qi < g) | (ki < g)
    else:
        blocks = layout.block_mask()  # [Hl, n, n]
        bs = layout.block
        shared = blocks.shape[0] == 1

        def mask_mod(b, h, qi, ki):
            return blocks[0 if shared else h, qi // bs, ki // bs]
    block_mask = create_block_mask(mask_mod, None, None if layout.heads == 1 else H, L, L, device="cpu")
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, block_mask=block_mask)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-flex", action="store_true", help="skip compiled FlexAttention (slow to compile)")
    parser.add_argument("--no-backward", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    patterns = {
        f"local w={args.window}": SparsityConfig("local", window=args.window),
        "bigbird b=64 band1 g1 r2": SparsityConfig("block_sparse", block=64, band=1, num_global=1, num_random=2),
    }
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, heads {args.heads}, "
          f"d {args.dim}, fp32; times in seconds (best of {args.repeats}); xN = how many times faster ours is\n")
    header = ("| seq | pattern | density | SDPA fwd | Flex fwd | ours fwd | vs SDPA | vs Flex | max err vs Flex "
              "| SDPA fwd+bwd | ours fwd+bwd | vs SDPA |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for L in args.seq:
        q, k, v = (torch.randn(args.batch, args.heads, L, args.dim, requires_grad=True) for _ in range(3))
        qd, kd, vd = q.detach(), k.detach(), v.detach()  # Flex refuses grad-requiring inputs on CPU

        def dense(q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

        for name, config in patterns.items():
            def ours(q, k, v, c=config):
                return sparse_attention(q, k, v, c, backend="torch")

            density = config.layout(L, args.heads).density
            fwd = {"sdpa": lambda: dense(qd, kd, vd), "ours": lambda: ours(qd, kd, vd)}
            err = None
            if not args.no_flex:
                flex = flex_runner(config, L, args.heads)
                fwd["flex"] = lambda: flex(qd, kd, vd)
                err = (flex(qd, kd, vd) - ours(qd, kd, vd)).abs().max().item()
            with torch.no_grad():
                t = best_times(fwd, args.repeats)
            tb = {} if args.no_backward else best_times(
                {"sdpa": fwd_bwd(dense, q, k, v), "ours": fwd_bwd(ours, q, k, v)}, args.repeats)

            def fmt(x, spec=".3f"):
                return "-" if x is None else format(x, spec)

            def ratio(a, b):
                return "-" if a is None or b is None else f"x{a / b:.2f}"

            print(f"| {L} | {name} | {density:.3f} | {fmt(t['sdpa'])} | {fmt(t.get('flex'))} | {fmt(t['ours'])} "
                  f"| {ratio(t['sdpa'], t['ours'])} | {ratio(t.get('flex'), t['ours'])} | {fmt(err, '.1e')} "
                  f"| {fmt(tb.get('sdpa'))} | {fmt(tb.get('ours'))} | {ratio(tb.get('sdpa'), tb.get('ours'))} |",
                  flush=True)


if __name__ == "__main__":
    main()
