"""Compile every Triton kernel for sm_80 (A100) and sm_90 (H100) on this CPU machine; registers, spills, smem.

Each variant (kernel x arch x dtype x layout block x head_dim x padding/window flags) is compiled with the
configuration the launcher picks for it (``triton_kernel.kernel_config``) and triton's runtime argument
specialisation, by the ptxas in the triton wheel; ``cuobjdump`` reads registers and stack (spills). A fresh
triton cache per run, so ``seconds`` is the real compile time.

    python benchmarks/triton_aot.py --json /tmp/aot.json            # the full grid (~720 compiles)
    python benchmarks/triton_aot.py --subset                        # the heaviest tiles only
    python benchmarks/triton_aot.py --search --json /tmp/search.json  # choose triton_kernel.KERNEL_CONFIGS

Exit status 1 when a variant spills in fp16/bf16, exceeds the target's shared memory or fails to compile.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

from triton_compile import full_grid, inspect_variant, problems, search_config, search_keys, subset_grid, tool_paths


def summary(rows: list[dict]) -> list[str]:
    """Per (kernel, arch, dtype): variants, spilling variants, max stack, max registers, max shared / limit."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["kernel"], r["arch"], r["dtype"])].append(r)
    lines = ["| kernel | arch | dtype | compiled | refused | spilling | max stack (B) | max regs | max shared (B) | "
             "limit (B) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (kernel, arch, dtype), rs in sorted(groups.items()):
        ok = [r for r in rs if r["ok"]]
        lines.append(
            f"| {kernel} | sm_{arch} | {dtype} | {len(ok)}/{len(rs)} | {sum(bool(r['refused']) for r in rs)} | "
            f"{sum(r['stack'] > 0 for r in ok)} | {max((r['stack'] for r in ok), default=0)} | "
            f"{max((r['registers'] for r in ok), default=0)} | {max((r['shared'] for r in ok), default=0)} | "
            f"{rs[0]['shared_limit']} |")
    return lines


def write_json(rows: list[dict], path: str) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(rows, f, indent=1)
    os.replace(path + ".tmp", path)


def search(workers: int, json_path: str | None) -> int:
    """Compile the tile candidates of every table key; print KERNEL_CONFIGS as Python."""
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(search_config, search_keys()))
    print("KERNEL_CONFIGS = {  # (kernel, arch, element bytes, layout block, BLOCK_D) -> "
          "(BLOCK_M, BLOCK_N, num_warps, num_stages)")
    for key, config, tried in results:
        chosen = [t for t in tried if config and (t["BLOCK_M"], t["BLOCK_N"], t["num_warps"], t["num_stages"]) == config]
        figures = ", ".join(f"d{t['head_dim']}{'' if t['masked'] else ' unmasked'}: {t['registers']} regs "
                            f"{t['stack']} B stack {t['shared']} B smem" for t in chosen)
        print(f"    {key!r}: {config!r},  # {figures}" if config else f"    # {key!r}: refused (nothing fits)")
    print("}")
    if json_path:
        write_json([{"key": list(key), "config": config, "tried": tried} for key, config, tried in results], json_path)
    print(f"{sum(len(t) for _, _, t in results)} compiles in {time.perf_counter() - start:.0f} s wall")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write all rows here (a JSON list)")
    parser.add_argument("--subset", action="store_true", help="only the heaviest tiles (what the CI test compiles)")
    parser.add_argument("--masked-only", action="store_true",
                        help="only the padding+window variants (the most register-hungry half of the grid)")
    parser.add_argument("--workers", type=int, default=2, help="compile processes (default 2)")
    parser.add_argument("--search", action="store_true", help="choose the launch table from compiled candidates")
    parser.add_argument("--use-cache", action="store_true", help="reuse triton's cache (seconds are then cache hits)")
    args = parser.parse_args(argv)
    try:
        tool_paths()
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not args.use_cache:
        os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="triton_aot_cache_")
    if args.search:
        return search(max(1, min(args.workers, 2)), args.json)
    variants = subset_grid() if args.subset else full_grid()
    if args.masked_only:
        variants = [v for v in variants if v.has_kpm and v.has_window]
    start = time.perf_counter()
    variants.sort(key=lambda v: not (v.has_kpm and v.has_window))  # the most masked half first
    rows = []
    with ProcessPoolExecutor(max(1, min(args.workers, 2))) as pool:
        for row in pool.map(inspect_variant, variants, chunksize=2):
            rows.append(row)
            if args.json and len(rows) % 24 == 0:  # a partial table survives an interrupted run
                write_json(rows, args.json)
    wall = time.perf_counter() - start

    print(f"{'kernel':<5} {'arch':>4} {'dtype':<5} {'blk':>4} {'d':>4} {'kpm':>3} {'win':>3} {'tile':>8} {'w':>2} "
          f"{'st':>2} {'regs':>4} {'stack':>6} {'shared':>7} {'s':>5}  note")
    for r in rows:
        tile = f"{r['block_m']}x{r['block_n']}" if r["block_m"] else "-"
        note = "REFUSED: " + r["refused"] if r["refused"] else ("ERROR: " + r["error"][:80] if r["error"] else "")
        print(f"{r['kernel']:<5} {r['arch']:>4} {r['dtype']:<5} {r['block']:>4} {r['head_dim']:>4} "
              f"{int(r['has_kpm']):>3} {int(r['has_window']):>3} {tile:>8} {r['num_warps'] or '-':>2} "
              f"{r['num_stages'] or '-':>2} {r['registers'] or '-':>4} {r['stack'] if r['ok'] else '-':>6} "
              f"{r['shared'] if r['ok'] else '-':>7} {r['seconds'] or '-':>5}  {note}")
    print()
    print("\n".join(summary(rows)))
    if args.json:
        write_json(rows, args.json)
    found = problems(rows)
    print(f"\n{len(rows)} variants in {wall:.0f} s wall ({args.workers} workers); {len(found)} problems")
    for p in found:
        print("  " + p)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
