"""One-shot GPU check of the Triton block-sparse kernel: correctness first, then speed against SDPA and Flex.

For the day a GPU is lent (written on a machine without one; nothing here has run on a GPU yet). One command,
under 5 minutes on one H100/H200, with the project installed:

    python benchmarks/gpu_check.py --out gpu_check          # writes gpu_check/gpu_check.json and .md
    python benchmarks/gpu_check.py --dry-run                # no GPU: builds the whole plan on CPU, runs nothing
    TRITON_INTERPRET=1 python benchmarks/gpu_check.py --interpret --cases 2   # correctness part on CPU, tiny

(a) Correctness: output and dQ/dK/dV of the kernel against a float64 dense reference and against the torch
    path in the same dtype, fp16 / bf16 / fp32, over the shapes of the interpreter tests
    (tests/test_triton_kernel.py: seq 1-257, blocks 16-128, head_dim 16-128, padding, local / BigBird /
    random layouts with empty rows, shared and per-head layouts). A case passes when each error against the
    float64 reference is within the dtype's tolerance or within twice the torch path's own error.
(b) Speed: forward and forward+backward at seq 4k / 16k / 32k, head_dim 64 (16 heads) and 128 (12 heads),
    local (window 256, 1 global token) and BigBird (block 64, band 1, 1 global block, 2 random) layouts,
    against dense SDPA (flash backend) and FlexAttention compiled with the identical mask; median times by
    triton.testing.do_bench, ratios peer / ours, TFLOP/s counted over the layout's non-zero blocks only
    (4 * block^2 * head_dim per block pair forward, 2.5x that backward).

Anything that could not run (no CUDA, no Flex, the time budget, an error) is listed in the report and on
stdout. Exit status: 0 all run and passed, 1 a correctness failure, 2 cannot run here (e.g. no CUDA).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from mlret_plugin.attention import SparsityConfig, layout_attention
from kernel_cases import FAST_CASES, SLOW_CASES, build_layout
from mlret_plugin.attention.layout import BlockLayout

TOL = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2}  # floor of the allowed max abs error vs float64
TIMING_SEQS = (4096, 16384, 32768)
TIMING_DIMS = {64: 16, 128: 12}  # head_dim -> heads


# The interpreter tests' matrix, every case in every dtype (the tests' one fp16 case is the same shape).
CASES = list({c["id"].removesuffix("-fp16"): {k: v for k, v in c.items() if k != "dtype"} | {"id": c["id"].removesuffix("-fp16")}
              for c in FAST_CASES + SLOW_CASES}.values())


# ------------------------------------------------------------------------------------------ (a) correctness


def check_case(c: dict, dtype: torch.dtype, device: torch.device) -> dict:
    """Errors of the kernel's output and gradients vs float64 dense attention and vs the torch path."""
    from mlret_plugin.attention.triton_kernel import block_sparse_attention

    torch.manual_seed(0)
    B, H, L, D = c["B"], c["H"], c["L"], c["D"]
    layout = build_layout(c["layout"], L, c["block"], H)
    shape = (B, L, H, D) if c.get("transposed") else (B, H, L, D)
    q, k, v = (torch.randn(shape, device=device).to(dtype) for _ in range(3))
    if c.get("transposed"):  # [B, L, H, D] viewed as [B, H, L, D], as HF attention hands it over
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    kpm = None
    if c.get("lengths") is not None:
        kpm = torch.arange(L, device=device)[None, :] < torch.tensor(c["lengths"], device=device)[:, None]
    scale = c.get("scale")
    scale_used = 1.0 / math.sqrt(D) if scale is None else scale

    allowed = layout.token_mask().to(device)[None]
    if kpm is not None:
        allowed = allowed & kpm[:, None, None, :]
    empty = ~allowed.any(-1)  # [B|1, H|1, L]: rows without any key: the kernel outputs zeros there
    d_out = torch.randn(B, H, L, D, device=device).to(dtype).masked_fill(empty.expand(B, H, L)[..., None], 0.0)

    def run(fn, x):
        xs = [t.detach().clone().requires_grad_() for t in x]
        out = fn(*xs)
        return (out, *torch.autograd.grad(out, xs, d_out.to(out.dtype)))

    def reference(q, k, v):
        s = (q @ k.transpose(-1, -2)) * scale_used
        p = torch.softmax(s.masked_fill(~allowed, float("-inf")).masked_fill(empty[..., None], 0.0), -1) * allowed
        return p @ v

    ours = run(lambda q, k, v: block_sparse_attention(q, k, v, layout, key_padding_mask=kpm, scale=scale), (q, k, v))
    ref = run(reference, tuple(x.double() for x in (q, k, v)))
    # the torch path in the same dtype on CUDA; on CPU (the interpreter smoke run) in fp32, its CPU dtype
    torch_dtype = dtype if device.type == "cuda" else torch.float32
    torch_path = run(lambda q, k, v: layout_attention(q, k, v, layout, kpm, scale=scale),
                     tuple(x.to(torch_dtype) for x in (q, k, v)))
    keyed = ~empty.expand(B, H, L)

    def err(a, b, rows_only):  # torch path rows without keys are its own convention: compare keyed rows
        diff = (a.double() - b.double()).abs()
        diff = diff[keyed] if rows_only else diff
        return float(diff.max()) if diff.numel() else 0.0

    names = ("out", "dq", "dk", "dv")
    result = {"vs_float64": {}, "torch_vs_float64": {}, "vs_torch": {}, "ok": True,
              "finite": all(bool(t.isfinite().all()) for t in ours)}
    for name, a, r, t in zip(names, ours, ref, torch_path):
        rows_only = name in ("out", "dq")
        e, e_torch = err(a, r, rows_only), err(t, r, rows_only)
        result["vs_float64"][name] = e
        result["torch_vs_float64"][name] = e_torch
        result["vs_torch"][name] = err(a, t, rows_only)
        if not e <= max(TOL[str(dtype).split(".")[1]], 2 * e_torch):
            result["ok"] = False
    if empty.any():
        result["empty_rows_abs_max"] = float(ours[0].detach()[empty.expand(B, H, L)].abs().max())
        result["ok"] &= result["empty_rows_abs_max"] == 0.0
    result["ok"] &= result["finite"]
    return result


def correctness(cases: list[dict], dtypes: list[torch.dtype], device: torch.device) -> list[dict]:
    rows = []
    for dtype in dtypes:
        for c in cases:
            start = time.perf_counter()
            try:
                row = {"case": c["id"], "dtype": str(dtype).split(".")[1], **check_case(c, dtype, device)}
            except Exception as exc:
                row = {"case": c["id"], "dtype": str(dtype).split(".")[1], "ok": False,
                       "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            row["seconds"] = round(time.perf_counter() - start, 2)
            rows.append(row)
            worst = max(row.get("vs_float64", {}).values(), default=float("nan"))
            print(f"  {'ok  ' if row['ok'] else 'FAIL'} {row['dtype']:<8} {c['id']:<40} max err vs float64 "
                  f"{worst:.2e}  {row.get('error', '')}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ (b) speed


def timing_layouts(L: int, heads: int) -> dict[str, BlockLayout]:
    return {
        "local w=256 g=1": SparsityConfig("local", window=256, num_global=1, block=64).layout(L, heads),
        "bigbird b=64 band1 g1 r2": SparsityConfig("block_sparse", block=64, band=1, num_global=1, num_random=2,
                                                   seed=0).layout(L, heads),
    }


def plan(seqs=TIMING_SEQS, dims: dict[int, int] = TIMING_DIMS) -> list[dict]:
    """Every timing row: shape, pattern, non-zero block pairs and their FLOPs (built on CPU, no kernel run)."""
    rows = []
    for D, H in dims.items():
        for L in seqs:
            for name, layout in timing_layouts(L, H).items():
                pairs = int(layout.nnz.sum()) * (H if layout.heads == 1 else 1)  # over heads
                flops_fwd = 4 * pairs * layout.block ** 2 * D  # QK^T and PV over the non-zero blocks, batch 1
                rows.append({"seq": L, "heads": H, "head_dim": D, "pattern": name, "block": layout.block,
                             "block_density": pairs / (H * layout.n_blocks ** 2), "flops_fwd": flops_fwd,
                             "flops_fwd_bwd": 3.5 * flops_fwd, "dense_flops_fwd": 4 * H * L * L * D})
    return rows


def flex_mask(layout: BlockLayout, heads: int, device: torch.device):
    """Flex's BlockMask for exactly the layout's token rule (block list, window, global tokens)."""
    from torch.nn.attention.flex_attention import create_block_mask

    blocks = layout.block_mask().to(device)
    bs, shared, window, g = layout.block, layout.heads == 1, layout.window, layout.num_global

    def mask_mod(b, h, qi, ki):
        allowed = blocks[0 if shared else h, qi // bs, ki // bs]
        if window is not None:
            allowed = allowed & (((qi - ki).abs() <= window) | (qi < g) | (ki < g))
        return allowed
    L = layout.seq_len
    return create_block_mask(mask_mod, None, None if shared else heads, L, L, device=device)


def speed(rows: list[dict], dtype: torch.dtype, device: torch.device, budget_end: float, not_run: list[str]) -> None:
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from mlret_plugin.attention.triton_kernel import block_sparse_attention

    cuda = device.type == "cuda"
    flex = None
    if not cuda:  # the CPU smoke run (--interpret): plumbing only, one timed call, no Flex compile
        not_run.append("FlexAttention: not compiled in the CPU smoke run")
    else:
        try:
            from torch.nn.attention.flex_attention import flex_attention
            torch._dynamo.config.recompile_limit = 64  # past the limit Flex would silently run eagerly (slow)
            flex = torch.compile(flex_attention, dynamic=False)
        except Exception as exc:
            not_run.append(f"FlexAttention: {type(exc).__name__}: {exc}")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def bench(fn) -> float:
        if not cuda:
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3
        return float(triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median"))  # ms

    for row in rows:
        if time.perf_counter() > budget_end:
            not_run.append(f"timing seq {row['seq']} d{row['head_dim']} {row['pattern']}: time budget spent")
            continue
        L, H, D = row["seq"], row["heads"], row["head_dim"]
        layout = timing_layouts(L, H)[row["pattern"]]
        q, k, v = (torch.randn(1, H, L, D, device=device, dtype=dtype) for _ in range(3))
        do = torch.randn_like(q)
        peers = {"ours": lambda q, k, v: block_sparse_attention(q, k, v, layout)}

        def sdpa(q, k, v):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v)
        peers["sdpa_flash"] = sdpa
        if flex is not None:
            try:
                block_mask = flex_mask(layout, H, device)
                peers["flex"] = lambda q, k, v, m=block_mask: flex(q, k, v, block_mask=m)
            except Exception as exc:
                not_run.append(f"Flex mask seq {L} {row['pattern']}: {type(exc).__name__}: {exc}")
        for peer, fn in peers.items():
            try:
                start = time.perf_counter()
                with torch.no_grad():
                    out = fn(q, k, v)
                sync()
                row[f"{peer}_first_call_s"] = round(time.perf_counter() - start, 2)  # includes compilation
                if peer == "flex":
                    row["flex_max_abs_diff_fwd"] = float((out.float() - peers["ours"](q, k, v).float()).abs().max())
                with torch.no_grad():
                    row[f"{peer}_fwd_ms"] = bench(lambda: fn(q, k, v))
                qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))

                def fwd_bwd():
                    for x in (qg, kg, vg):
                        x.grad = None
                    fn(qg, kg, vg).backward(do)
                row[f"{peer}_fwd_bwd_ms"] = bench(fwd_bwd)
            except Exception as exc:
                not_run.append(f"{peer} seq {L} d{D} {row['pattern']}: {type(exc).__name__}: {str(exc)[:300]}")
        for peer in ("sdpa_flash", "flex"):
            for p in ("fwd", "fwd_bwd"):
                a, b = row.get(f"{peer}_{p}_ms"), row.get(f"ours_{p}_ms")
                row[f"{peer}_over_ours_{p}"] = a / b if a and b else None
        for p, flops in (("fwd", row["flops_fwd"]), ("fwd_bwd", row["flops_fwd_bwd"])):
            for peer in ("ours", "flex"):
                ms = row.get(f"{peer}_{p}_ms")
                row[f"{peer}_tflops_{p}"] = flops / (ms * 1e-3) / 1e12 if ms else None
        print(f"  seq {L:>6} d{D:<4} {row['pattern']:<26} ours fwd {row.get('ours_fwd_ms')} ms, "
              f"sdpa/ours {row.get('sdpa_flash_over_ours_fwd')}, flex/ours {row.get('flex_over_ours_fwd')}", flush=True)
        del q, k, v, do
        if cuda:
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------- the report


def fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(report: dict) -> str:
    lines = [f"# GPU check of the Triton block-sparse kernel ({report['device']})", "",
             f"torch {report['torch']}, triton {report['triton']}, timing dtype {report['timing_dtype']}, "
             f"batch 1; times are medians (ms) of triton.testing.do_bench; xN = peer time / ours.", "",
             "## Correctness (max abs error vs float64 dense attention; torch path in the same dtype beside it)", "",
             "| dtype | cases | passed | worst out | worst dQ | worst dK | worst dV |", "|---|---|---|---|---|---|---|"]
    for dtype in sorted({r["dtype"] for r in report["correctness"]}):
        rs = [r for r in report["correctness"] if r["dtype"] == dtype]
        worst = {n: max((r.get("vs_float64", {}).get(n, float("nan")) for r in rs), default=float("nan"))
                 for n in ("out", "dq", "dk", "dv")}
        worst_t = {n: max((r.get("torch_vs_float64", {}).get(n, float("nan")) for r in rs), default=float("nan"))
                   for n in ("out", "dq", "dk", "dv")}
        lines.append(f"| {dtype} | {len(rs)} | {sum(r['ok'] for r in rs)} | "
                     + " | ".join(f"{worst[n]:.1e} (torch {worst_t[n]:.1e})" for n in ("out", "dq", "dk", "dv"))
                     + " |")
    failed = [f"{r['dtype']} {r['case']}: {r.get('error') or r.get('vs_float64')}" for r in report["correctness"]
              if not r["ok"]]
    lines += [""] + [f"- FAILED {f}" for f in failed]
    if report["timing"]:
        lines += ["", "## Speed (TFLOP/s over the layout's non-zero blocks)", "",
                  "| seq | heads x d | pattern | block density | ours fwd ms | vs SDPA | vs Flex | ours TFLOP/s | "
                  "ours fwd+bwd ms | vs SDPA | vs Flex | ours TFLOP/s | Flex TFLOP/s fwd+bwd | max diff vs Flex |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in report["timing"]:
            lines.append(
                f"| {r['seq']} | {r['heads']}x{r['head_dim']} | {r['pattern']} | {r['block_density']:.3f} | "
                f"{fmt(r.get('ours_fwd_ms'), '.3f')} | x{fmt(r.get('sdpa_flash_over_ours_fwd'))} | "
                f"x{fmt(r.get('flex_over_ours_fwd'))} | {fmt(r.get('ours_tflops_fwd'), '.0f')} | "
                f"{fmt(r.get('ours_fwd_bwd_ms'), '.3f')} | x{fmt(r.get('sdpa_flash_over_ours_fwd_bwd'))} | "
                f"x{fmt(r.get('flex_over_ours_fwd_bwd'))} | {fmt(r.get('ours_tflops_fwd_bwd'), '.0f')} | "
                f"{fmt(r.get('flex_tflops_fwd_bwd'), '.0f')} | {fmt(r.get('flex_max_abs_diff_fwd'), '.1e')} |")
    if report["not_run"]:
        lines += ["", "## Not run", ""] + [f"- {x}" for x in report["not_run"]]
    return "\n".join(lines) + "\n"


def write(out_dir: Path, report: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("gpu_check.json", json.dumps(report, indent=1)), ("gpu_check.md", markdown(report))):
        tmp = out_dir / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)
    print(f"wrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check", help="output directory (default ./gpu_check)")
    parser.add_argument("--dry-run", action="store_true", help="build the plan on CPU and write it; run no kernel")
    parser.add_argument("--interpret", action="store_true",
                        help="correctness part on CPU under TRITON_INTERPRET=1 (fp32/fp16), no timing")
    parser.add_argument("--cases", type=int, default=None, help="only the first N correctness cases")
    parser.add_argument("--timing-dtype", default="bfloat16", choices=["float16", "bfloat16"])
    parser.add_argument("--budget", type=float, default=270.0, help="seconds after which timing rows are skipped")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    import triton

    cases = CASES[: args.cases] if args.cases else CASES
    report = {"device": None, "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
              "timing_dtype": args.timing_dtype, "correctness": [], "timing": [], "not_run": [], "dry_run": args.dry_run}
    if args.interpret and os.environ.get("TRITON_INTERPRET") != "1":
        print("--interpret runs the kernels under Triton's interpreter: start the process with TRITON_INTERPRET=1",
              file=sys.stderr)
        return 2
    if args.dry_run:
        report["device"] = "none (dry run)"
        for c in cases:
            layout = build_layout(c["layout"], c["L"], c["block"], c["H"])
            report["correctness"].append({"case": c["id"], "dtype": "-", "ok": True, "planned": True,
                                          "density": layout.density})
        report["timing"] = plan()
        report["not_run"].append("dry run: no kernel ran; the plan's layouts, FLOP counts and cases were built on CPU")
        print(f"plan: {len(cases)} correctness cases x fp16/bf16/fp32, {len(report['timing'])} timing rows")
        for r in report["timing"]:
            print(f"  seq {r['seq']:>6} {r['heads']}x{r['head_dim']} {r['pattern']:<26} block density "
                  f"{r['block_density']:.3f}  {r['flops_fwd'] / 1e12:.2f} TFLOP fwd")
        write(Path(args.out), report)
        return 0
    if args.interpret:
        device, dtypes = torch.device("cpu"), [torch.float32, torch.float16]
        report["device"] = "cpu (TRITON_INTERPRET=1)"
        report["not_run"].append("bfloat16: Triton's interpreter has no bf16")
        report["not_run"].append("timing at seq 4k-32k: needs a CUDA GPU (the CPU smoke run times seq 128, "
                                 "2 heads x 64, one call each: plumbing, not speed)")
    else:
        if not torch.cuda.is_available():
            print("gpu_check needs a CUDA GPU and none is visible to torch (torch.cuda.is_available() is False); "
                  "nothing was run. On CPU: --dry-run validates the plan, TRITON_INTERPRET=1 ... --interpret runs "
                  "the correctness part.", file=sys.stderr)
            return 2
        device, dtypes = torch.device("cuda"), [torch.float16, torch.bfloat16, torch.float32]
        report["device"] = f"{torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))})"
    print(f"device: {report['device']}\n(a) correctness")
    report["correctness"] = correctness(cases, dtypes, device)
    if not args.no_timing:
        print("(b) speed")
        report["timing"] = plan() if device.type == "cuda" else plan(seqs=(128,), dims={64: 2})
        dtype = getattr(torch, args.timing_dtype) if device.type == "cuda" else torch.float32
        speed(report["timing"], dtype, device, start + args.budget, report["not_run"])
    report["seconds"] = round(time.perf_counter() - start, 1)
    write(Path(args.out), report)
    for x in report["not_run"]:
        print(f"not run: {x}")
    failed = sum(not r["ok"] for r in report["correctness"])
    print(f"{len(report['correctness']) - failed}/{len(report['correctness'])} correctness checks passed; "
          f"{report['seconds']} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
