"""Compile the Triton kernels ahead of time for a GPU this machine does not have, and read their resources.

``triton.compile`` lowers a kernel to PTX and assembles it with the ptxas shipped in the triton wheel, for
any target (sm_80 = A100, sm_90 = H100), on a CPU-only machine. Each variant is compiled exactly as the
launcher would launch it: the host code builds its ``Launch`` (constexprs, tile sizes, warps, stages)
from CPU stand-in tensors, and triton's own argument specialisation (pointer alignment, ints divisible by
16, ints equal to 1) is applied, so the cubin is the one a GPU run of that shape would get.
``cuobjdump --dump-resource-usage`` then gives registers per thread and stack bytes (non-zero stack =
register spills to local memory); the compiled metadata gives the dynamic shared memory.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import create_function_from_signature

from mlret_plugin.attention import triton_kernel as tk
from mlret_plugin.attention.layout import BlockLayout

ARCHS = (80, 90)
SHARED_LIMIT = {80: 166_912, 90: 232_448}  # max dynamic shared memory per block: A100, H100 (bytes)
KERNELS = ("fwd", "dkdv", "dq")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
HEAD_DIMS = (16, 32, 64, 96, 128)
FLAGS = ((False, False), (True, True))  # (HAS_KPM, HAS_WINDOW): the plainest and the most masked variant


@dataclass(frozen=True)
class Variant:
    kernel: str  # "fwd" | "dkdv" | "dq"
    arch: int  # 80 | 90
    dtype: str  # "fp16" | "bf16" | "fp32"
    block: int  # layout block
    head_dim: int
    has_kpm: bool = True
    has_window: bool = True


def tool_paths() -> dict[str, Path]:
    """ptxas (sm_80), ptxas-blackwell (triton's ptxas for sm_90+) and cuobjdump from the triton wheel."""
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    paths = {name: bin_dir / name for name in ("ptxas", "ptxas-blackwell", "cuobjdump")}
    missing = [str(p) for p in paths.values() if not os.access(p, os.X_OK)]
    if missing:
        raise FileNotFoundError(f"triton's CUDA tools are missing ({', '.join(missing)}); install a triton wheel "
                                "built with the NVIDIA backend")
    return paths


def full_grid() -> list[Variant]:
    return [Variant(kernel, arch, dtype, block, d, kpm, window)
            for arch in ARCHS for dtype in DTYPES for block in tk.BLOCK_SIZES for d in HEAD_DIMS
            for kpm, window in FLAGS for kernel in KERNELS]


def subset_grid() -> list[Variant]:
    """The heaviest tiles (block 128 / 64, head_dim 128 / 64) fully masked, both archs, 16-bit; plus fp32 128."""
    rows = [Variant(kernel, arch, dtype, block, d)
            for arch in ARCHS for dtype in ("fp16", "bf16") for block, d in ((128, 128), (64, 64), (128, 64))
            for kernel in KERNELS if dtype == "fp16" or (block, d) == (128, 128)]
    rows += [Variant(kernel, arch, "fp32", 128, 128) for arch in ARCHS for kernel in KERNELS]
    return rows


def _layout(block: int, seq_len: int, window: bool) -> BlockLayout:
    """A band of 3 blocks (plus a window and a global token when ``window``): what the kernels walk."""
    n = -(-seq_len // block)
    ids = torch.arange(n)
    lut = torch.stack([ids - 1, ids, ids + 1], 1)
    lut = torch.where((lut >= 0) & (lut < n), lut, torch.full_like(lut, 10**6)).sort(1).values
    nnz = (lut < n).sum(1).to(torch.int32)
    lut = torch.where(lut < n, lut, torch.full_like(lut, -1)).to(torch.int32)
    return BlockLayout(block, seq_len, lut[None].contiguous(), nnz[None].contiguous(),
                       window=block if window else None, num_global=1 if window else 0)


def variant_launch(v: Variant, config: dict | None = None) -> tk.Launch:
    """The Launch the host code builds for this variant (CPU stand-ins of a [2, 4, 4 blocks + 5, D] batch).

    The sequence length is not a multiple of 16 on purpose: triton would otherwise specialise on it.
    ``config`` overrides the launcher's table (the search below); the launcher refuses -> UnsupportedConfig.
    """
    B, H, L, D = 2, 4, 4 * v.block + 5, v.head_dim
    dtype = DTYPES[v.dtype]
    q, k, val, o, do, dq, dk, dv = (torch.zeros(B, H, L, D, dtype=dtype) for _ in range(8))
    lse, delta = torch.zeros(B * H, L), torch.zeros(B * H, L)
    layout = _layout(v.block, L, v.has_window)
    kpm = torch.ones(B, L, dtype=torch.bool) if v.has_kpm else None
    if v.kernel == "fwd":
        return tk.forward_launch(q, k, val, o, lse, layout, kpm, 0.125, v.arch, config)
    configs = None if config is None else {"dkdv": config, "dq": config}
    launches = tk.backward_launches(do, q, k, val, o, lse, delta, dq, dk, dv, layout, kpm, 0.125, v.arch, configs)
    return next(launch for launch in launches if launch.name == v.kernel)


def compile_launch(launch: tk.Launch, arch: int):
    """triton.compile of ``launch`` for ``sm_{arch}``, with triton's runtime argument specialisation."""
    fn = launch.kernel
    target = GPUTarget("cuda", arch, 32)
    backend = triton.compiler.make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*launch.args, **launch.options)
    options, signature, constexprs, attrs = fn._pack_args(backend, launch.options, bound_args, specialization,
                                                          options)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)


_USAGE = re.compile(r"REG:(\d+)\s+STACK:(\d+)")


def resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread) of the one kernel in ``cubin``, by cuobjdump."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        out = subprocess.run([str(tool_paths()["cuobjdump"]), "--dump-resource-usage", str(path)],
                             capture_output=True, text=True, check=True).stdout
    match = _USAGE.search(out)
    if match is None:
        raise RuntimeError(f"cuobjdump printed no REG/STACK line:\n{out}")
    return int(match.group(1)), int(match.group(2))


def inspect_variant(v: Variant) -> dict:
    """One row: the launcher's configuration for ``v``, compiled, with registers / stack / shared memory.

    A configuration the launcher refuses on purpose is a row with ``refused`` = its error text.
    """
    row = {**asdict(v), "block_m": None, "block_n": None, "num_warps": None, "num_stages": None,
           "registers": None, "stack": None, "shared": None, "shared_limit": SHARED_LIMIT[v.arch],
           "ok": False, "seconds": None, "refused": None, "error": None}
    try:
        launch = variant_launch(v)
    except tk.UnsupportedConfig as exc:
        row["refused"] = str(exc)
        return row
    row.update(block_m=launch.options.get("BLOCK_M", v.block), block_n=launch.options.get("BLOCK_N", v.block),
               num_warps=launch.options["num_warps"], num_stages=launch.options["num_stages"])
    start = time.perf_counter()
    try:
        compiled = compile_launch(launch, v.arch)
        row["registers"], row["stack"] = resource_usage(compiled.asm["cubin"])
        row["shared"] = int(compiled.metadata.shared)
        row["ok"] = True
    except Exception as exc:  # a compiler failure is a finding of the table, not a crash of the run
        row["error"] = f"{type(exc).__name__}: {str(exc)[-2000:]}"
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def problems(rows: list[dict]) -> list[str]:
    """What a GPU run would hit: compile errors, spills in fp16/bf16, shared memory over the target's limit."""
    found = []
    for r in rows:
        name = (f"{r['kernel']} sm_{r['arch']} {r['dtype']} block {r['block']} head_dim {r['head_dim']} "
                f"kpm={r['has_kpm']} window={r['has_window']}")
        if r["refused"]:
            continue
        if not r["ok"]:
            found.append(f"{name}: does not compile: {r['error']}")
            continue
        if r["dtype"] != "fp32" and r["stack"]:
            found.append(f"{name}: spills ({r['stack']} bytes of stack at {r['registers']} registers)")
        if r["shared"] > r["shared_limit"]:
            found.append(f"{name}: {r['shared']} bytes of shared memory > the limit {r['shared_limit']}")
    return found


# ------------------------------------------------------------------------------- choosing the table
# `python benchmarks/triton_aot.py --search` runs this and prints triton_kernel.KERNEL_CONFIGS.

SM_SHARED = {80: 167_936, 90: 233_472}  # shared memory per SM (bytes)
TILE_CANDIDATES = {  # (BLOCK_M, BLOCK_N, num_warps), most work per program first; tiles <= the layout block
    "fwd": ((128, 64, 8), (128, 64, 4), (64, 64, 4), (64, 32, 4), (32, 32, 4), (32, 16, 2), (16, 16, 2)),
    "dkdv": ((32, 128, 8), (32, 128, 4), (64, 64, 4), (32, 64, 4), (32, 32, 4), (16, 32, 2), (16, 16, 2)),
    "dq": ((128, 32, 8), (128, 32, 4), (64, 64, 4), (64, 32, 4), (32, 32, 4), (32, 16, 2), (16, 16, 2)),
}


def _figures(kernel: str, arch: int, dtype: str, block: int, head_dim: int, config: dict, masked: bool) -> dict:
    """registers / stack / shared of one explicit configuration, HAS_KPM and HAS_WINDOW both on or both off."""
    v = Variant(kernel, arch, dtype, block, head_dim, masked, masked)
    launch = variant_launch(v, config)
    compiled = compile_launch(launch, arch)
    registers, stack = resource_usage(compiled.asm["cubin"])
    return {"registers": registers, "stack": stack, "shared": int(compiled.metadata.shared)}


def search_config(key: tuple[str, int, int, int, int]) -> tuple[tuple, tuple | None, list[dict]]:
    """(key, (BLOCK_M, BLOCK_N, num_warps, num_stages) or None, every compile tried) for one fp16 table row.

    The first tile candidate with no spill at 2 stages, for head_dim = the class (64 or 128) and, for class
    128, a masked head_dim 96, with the padding and window masks on and off (either can need more registers);
    then 3 stages if still spill-free and two programs fit one SM's shared memory (capped by
    triton_kernel.SMEM_BUDGET).
    """
    kernel, arch, elem_bytes, block, bd = key
    dims = [bd] + ([bd * 3 // 4] if bd == 128 else [])  # 96: the masked head_dim of the largest tile
    tried: list[dict] = []

    def run(bm, bn, warps, stages) -> list[dict]:
        cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages}
        out = [{"head_dim": d, "masked": m, **cfg, **_figures(kernel, arch, "fp16", block, d, cfg, m)}
               for d in dims for m in (True, False)]
        tried.extend(out)
        return out

    for bm, bn, warps in TILE_CANDIDATES[kernel]:
        if bm > block or bn > block:
            continue
        if all(f["stack"] == 0 and f["shared"] <= SHARED_LIMIT[arch] for f in run(bm, bn, warps, 2)):
            three = run(bm, bn, warps, 3)
            budget = min(SM_SHARED[arch], tk.SMEM_BUDGET) // 2  # two programs per SM
            stages = 3 if all(f["stack"] == 0 and f["shared"] <= budget for f in three) else 2
            return key, (bm, bn, warps, stages), tried
    return key, None, tried


def search_keys() -> list[tuple[str, int, int, int, int]]:
    """16-bit rows only: fp32 takes the 16-bit tile capped at 64 x 64, one stage (triton_kernel.kernel_config)."""
    return [(kernel, arch, 2, block, dims) for arch in ARCHS for block in tk.BLOCK_SIZES
            for dims in tk.HEAD_DIM_CLASSES for kernel in KERNELS]
