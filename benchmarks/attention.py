"""CPU benchmark of the PyTorch sparse-attention path against dense SDPA and compiled FlexAttention.

All run in the same process on the same inputs; FlexAttention gets the *identical* mask (the layout's token
rule as a mask_mod). Times are the best of ``--repeats`` runs after a warm-up, peers interleaved (each
repeat runs every peer once) so machine load hits all alike; ratios compare peers measured in this run.
Compiled Flex has no CPU backward, so fwd+bwd compares with SDPA only. Errors: max abs difference of ours
against Flex and against dense SDPA with the pattern's token mask, both in the same dtype.

    python benchmarks/attention.py                               # seq 512..8192, fp32 and bf16
    python benchmarks/attention.py --seq 4096 --dtype fp32,bf16  # the issue's goals
    python benchmarks/attention.py --seq 4096 --no-flex          # quick look
    python benchmarks/attention.py --seq 4096 --no-flex --profile  # + where ours spends its forward time
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from mlret_plugin.attention import SparsityConfig, sparse_attention

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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

    # A fresh compile cache per shape/pattern/dtype: past dynamo's recompile limit Flex silently runs eagerly.
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


def dense_masked(q, k, v, config: SparsityConfig):
    """Dense SDPA with the pattern's token mask (the reference every path must equal)."""
    L, H = q.shape[2], q.shape[1]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=config.layout(L, H).token_mask()[None])


def kernel_share(fn, repeats: int = 3) -> tuple[float, float]:
    """(wall seconds per call, share of CPU time inside the flash-attention kernel) of ``fn`` under the profiler."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        wall = (time.perf_counter() - start) / repeats
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    kernel = sum(e.self_cpu_time_total for e in events if "flash_attention" in e.key)
    return wall, kernel / max(total, 1)


def band_kernel_floor(q, k, v, window: int, tile: int = 32):
    """One flash-kernel call over every query tile, keys as strided views of k, v zero-padded by the window
    (padding done beforehand), one shared band mask: the banded path's kernel work without edge parts, merges
    or copies, i.e. a floor for ours on this kernel."""
    B, H, L, D = q.shape
    span = tile + 2 * window
    n = L // tile
    qt = q[:, :, :n * tile].reshape(B * H, n, tile, D)
    kw, vw = (F.pad(x, (0, 0, window, window)).unfold(2, span, tile).transpose(-1, -2)[:, :, :n].reshape(
        B * H, n, span, D) for x in (k, v))
    t, s = torch.arange(tile)[:, None], torch.arange(span)[None]
    mask = torch.zeros(tile, span).masked_fill_(~((s >= t) & (s <= t + 2 * window)), -1e30)[None, None]
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return lambda: flash(qt, kw, vw, 0.0, False, attn_mask=mask)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--dtype", default="fp32,bf16", help=f"comma-separated, of {sorted(DTYPES)}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-flex", action="store_true", help="skip compiled FlexAttention (slow to compile)")
    parser.add_argument("--no-backward", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--profile", action="store_true",
                        help="after the table: share of ours' forward time in flash-kernel calls, and (local) the "
                             "kernel floor: one interior-only call on strided views against dense SDPA")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not dtypes:
        parser.error(f"--dtype: expected some of {sorted(DTYPES)}; got {args.dtype!r}")

    patterns = {
        f"local w={args.window}": SparsityConfig("local", window=args.window),
        "bigbird b=64 band1 g1 r2": SparsityConfig("block_sparse", block=64, band=1, num_global=1, num_random=2),
    }
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, heads {args.heads}, "
          f"d {args.dim}, dtypes {','.join(dtypes)}; times in seconds (best of {args.repeats}, peers interleaved); "
          "xN = how many times faster ours is; errors: max abs difference of ours in the same dtype\n")
    header = ("| seq | pattern | dtype | density | SDPA fwd | Flex fwd | ours fwd | vs SDPA | vs Flex "
              "| SDPA fwd+bwd | ours fwd+bwd | vs SDPA | err vs Flex | err vs dense masked |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    profiles = []
    for L in args.seq:
        for dname in dtypes:
            dtype = DTYPES[dname]
            gen = torch.Generator().manual_seed(L)
            base = [torch.randn(args.batch, args.heads, L, args.dim, generator=gen).to(dtype) for _ in range(3)]
            q, k, v = (t.clone().requires_grad_() for t in base)
            qd, kd, vd = base  # Flex refuses grad-requiring inputs on CPU

            def dense(q, k, v):
                return F.scaled_dot_product_attention(q, k, v)

            for name, config in patterns.items():
                def ours(q, k, v, c=config):
                    return sparse_attention(q, k, v, c, backend="torch")

                density = config.layout(L, args.heads).density
                fwd = {"sdpa": lambda: dense(qd, kd, vd), "ours": lambda: ours(qd, kd, vd)}
                with torch.no_grad():
                    out = ours(qd, kd, vd)
                    err_dense = (dense_masked(qd, kd, vd, config) - out).abs().max().item()
                err_flex = None
                if not args.no_flex:
                    try:
                        flex = flex_runner(config, L, args.heads)
                        with torch.no_grad():
                            err_flex = (flex(qd, kd, vd) - out).abs().max().item()
                        fwd["flex"] = lambda: flex(qd, kd, vd)
                    except Exception as exc:  # Flex may not compile for a dtype on this machine: say so, go on
                        print(f"<!-- compiled Flex unavailable for {dname}: {type(exc).__name__}: {exc} -->")
                with torch.no_grad():
                    t = best_times(fwd, args.repeats)
                tb = {} if args.no_backward else best_times(
                    {"sdpa": fwd_bwd(dense, q, k, v), "ours": fwd_bwd(ours, q, k, v)}, args.repeats)

                def fmt(x, spec=".3f"):
                    return "-" if x is None else format(x, spec)

                def ratio(a, b):
                    return "-" if a is None or b is None else f"x{a / b:.2f}"

                print(f"| {L} | {name} | {dname} | {density:.3f} | {fmt(t['sdpa'])} | {fmt(t.get('flex'))} "
                      f"| {fmt(t['ours'])} | {ratio(t['sdpa'], t['ours'])} | {ratio(t.get('flex'), t['ours'])} "
                      f"| {fmt(tb.get('sdpa'))} | {fmt(tb.get('ours'))} | {ratio(tb.get('sdpa'), tb.get('ours'))} "
                      f"| {fmt(err_flex, '.1e')} | {fmt(err_dense, '.1e')} |", flush=True)
                if args.profile:
                    with torch.no_grad():
                        wall, share = kernel_share(lambda: ours(qd, kd, vd))
                        line = f"ours {wall:.3f} s/call profiled, {share:.0%} of CPU time in flash-kernel calls"
                        if config.window is not None:
                            peers = {"sdpa": lambda: dense(qd, kd, vd), "ours": lambda: ours(qd, kd, vd),
                                     "floor": band_kernel_floor(qd, kd, vd, config.window)}
                            tf = best_times(peers, args.repeats)
                            line += (f"; kernel floor (one call, every tile, no edges / merge / copies) "
                                     f"{tf['floor']:.3f} s = x{tf['sdpa'] / tf['floor']:.2f} vs dense SDPA "
                                     f"(ours x{tf['sdpa'] / tf['ours']:.2f} in the same run)")
                    profiles.append(f"- {L} {name} {dname}: {line}")

    if profiles:
        print("\n" + "\n".join(profiles))


if __name__ == "__main__":
    main()
