"""The Triton kernels' launch table: tiles, warps and stages per kernel, GPU, element size, block, head_dim.

Launch configuration. BLOCK_M, BLOCK_N, warps and stages per kernel, GPU (sm_80, sm_90), element size,
layout block and head_dim come from ``KERNEL_CONFIGS``, a table chosen from compiled figures: every
entry was compiled for its GPU on a CPU machine by the ptxas in the triton wheel and read back with
cuobjdump (``benchmarks/triton_aot.py``): fp16 / bf16 entries
spill no register, and every entry's shared memory fits the GPU. Nothing here has run on a GPU yet
(``benchmarks/gpu_check.py`` is the one-shot check for that day).
"""
from __future__ import annotations

import warnings

import triton


class UnsupportedConfig(ValueError):
    """The launcher refuses this (arch, dtype, block, head_dim) on purpose; the message names the fix."""


TABLE_ARCHS = (80, 90)  # the GPUs the table below was compiled for: A100 (sm_80), H100 (sm_90)
SMEM_BUDGET = 200 * 1024  # shared memory per SM the table plans with: H100's 228 KB minus room for conversions

# (kernel, arch, layout block, head_dim class) -> (BLOCK_M, BLOCK_N, num_warps, num_stages) for fp16 / bf16.
# Chosen by `python benchmarks/triton_aot.py --search` from compiled figures (ptxas for sm_80 / sm_90), not
# from an estimate: the first tile candidate (most work per program first) that compiles with no spill at
# 2 stages, for head_dim 64 (class 64) or 128 and 96 (class 128), padding and window masks on and off; then 3
# stages if that still spills nothing and two programs fit one SM (min(SM, SMEM_BUDGET)). fp32 takes the same
# tile capped at 32 x 32, at most 4 warps and one stage: it fits shared memory everywhere (checked by the full
# grid). Its IEEE dots run on the FMA units and still spill at head_dim 96 / 128 (up to ~1.6 KB of stack; at a
# 64 x 64 cap up to 15 KB): fp32 on GPU is the slow, exact path, never spill-free in this kernel.
KERNEL_CONFIGS: dict[tuple[str, int, int, int], tuple[int, int, int, int]] = {
    # compiled figures (masks on) per head_dim: registers r, stack bytes, shared-memory bytes. With the masks
    # off, every entry is checked by the full grid (benchmarks/triton_aot.py); one entry changed for it.
    ("fwd", 80, 16, 64): (16, 16, 2, 3),  # d64: 72r 0 10752
    ("dkdv", 80, 16, 64): (16, 16, 2, 3),  # d64: 112r 0 12544
    ("dq", 80, 16, 64): (16, 16, 2, 3),  # d64: 86r 0 12288
    ("fwd", 80, 16, 128): (16, 16, 2, 3),  # d128: 128r 0 20992, d96: 128r 0 20992
    ("dkdv", 80, 16, 128): (16, 16, 2, 3),  # d128: 199r 0 24832, d96: 199r 0 24832
    ("dq", 80, 16, 128): (16, 16, 2, 3),  # d128: 132r 0 24576, d96: 128r 0 24576
    ("fwd", 80, 32, 64): (32, 32, 4, 3),  # d64: 96r 0 22528
    ("dkdv", 80, 32, 64): (32, 32, 4, 3),  # d64: 142r 0 23040
    ("dq", 80, 32, 64): (32, 32, 4, 3),  # d64: 96r 0 22528
    ("fwd", 80, 32, 128): (32, 32, 4, 3),  # d128: 168r 0 43008, d96: 168r 0 43008
    ("dkdv", 80, 32, 128): (32, 32, 4, 3),  # d128: 196r 0 45568, d96: 196r 0 45568
    ("dq", 80, 32, 128): (32, 32, 4, 3),  # d128: 168r 0 45056, d96: 168r 0 45056
    ("fwd", 80, 64, 64): (64, 64, 4, 3),  # d64: 181r 0 40960
    ("dkdv", 80, 64, 64): (32, 64, 4, 3),  # d64: 213r 0 31232
    ("dq", 80, 64, 64): (64, 32, 4, 3),  # d64: 196r 0 30720, d64 unmasked: 185r 0 30720 (64 x 64 spilled unmasked)
    ("fwd", 80, 64, 128): (64, 64, 4, 2),  # d128: 255r 0 57344, d96: 255r 0 57344
    ("dkdv", 80, 64, 128): (32, 32, 4, 3),  # d128: 194r 0 45568, d96: 194r 0 45568
    ("dq", 80, 64, 128): (64, 32, 4, 3),  # d128: 224r 0 61440, d96: 221r 0 61440
    ("fwd", 80, 128, 64): (128, 64, 8, 3),  # d64: 173r 0 49152
    ("dkdv", 80, 128, 64): (32, 128, 8, 3),  # d64: 214r 0 49664
    ("dq", 80, 128, 64): (128, 32, 8, 3),  # d64: 175r 0 49152
    ("fwd", 80, 128, 128): (64, 64, 4, 2),  # d128: 255r 0 57344, d96: 255r 0 57344
    ("dkdv", 80, 128, 128): (32, 32, 4, 3),  # d128: 194r 0 45568, d96: 194r 0 45568
    ("dq", 80, 128, 128): (128, 32, 8, 2),  # d128: 237r 0 86016, d96: 232r 0 86016
    ("fwd", 90, 16, 64): (16, 16, 2, 3),  # d64: 72r 0 10752
    ("dkdv", 90, 16, 64): (16, 16, 2, 3),  # d64: 114r 0 12544
    ("dq", 90, 16, 64): (16, 16, 2, 3),  # d64: 80r 0 12288
    ("fwd", 90, 16, 128): (16, 16, 2, 3),  # d128: 108r 0 20992, d96: 110r 0 20992
    ("dkdv", 90, 16, 128): (16, 16, 2, 3),  # d128: 204r 0 24832, d96: 202r 0 24832
    ("dq", 90, 16, 128): (16, 16, 2, 3),  # d128: 134r 0 24576, d96: 136r 0 24576
    ("fwd", 90, 32, 64): (32, 32, 4, 3),  # d64: 102r 0 22528
    ("dkdv", 90, 32, 64): (32, 32, 4, 3),  # d64: 146r 0 23040
    ("dq", 90, 32, 64): (32, 32, 4, 3),  # d64: 98r 0 22528
    ("fwd", 90, 32, 128): (32, 32, 4, 3),  # d128: 144r 0 43008, d96: 144r 0 43008
    ("dkdv", 90, 32, 128): (32, 32, 4, 3),  # d128: 198r 0 45568, d96: 198r 0 45568
    ("dq", 90, 32, 128): (32, 32, 4, 3),  # d128: 162r 0 45056, d96: 166r 0 45056
    ("fwd", 90, 64, 64): (64, 64, 4, 3),  # d64: 168r 0 57344
    ("dkdv", 90, 64, 64): (64, 64, 4, 3),  # d64: 235r 0 66560
    ("dq", 90, 64, 64): (64, 64, 4, 3),  # d64: 145r 0 65536
    ("fwd", 90, 64, 128): (64, 64, 4, 2),  # d128: 198r 0 81920, d96: 178r 0 81920
    ("dkdv", 90, 64, 128): (32, 64, 4, 3),  # d128: 247r 0 82432, d96: 248r 0 82432
    ("dq", 90, 64, 128): (64, 64, 4, 2),  # d128: 224r 0 98304, d96: 224r 0 98304
    ("fwd", 90, 128, 64): (128, 64, 8, 3),  # d64: 157r 0 65536
    ("dkdv", 90, 128, 64): (32, 128, 8, 3),  # d64: 145r 0 57856
    ("dq", 90, 128, 64): (128, 32, 8, 3),  # d64: 101r 0 57344
    ("fwd", 90, 128, 128): (128, 64, 8, 2),  # d128: 208r 0 98304, d96: 207r 0 98304
    ("dkdv", 90, 128, 128): (32, 128, 8, 2),  # d128: 227r 0 98560, d96: 228r 0 98560
    ("dq", 90, 128, 128): (128, 32, 8, 2),  # d128: 139r 0 98304, d96: 139r 0 98304
}
FP32_TILE_CAP = 32  # fp32 tiles: at most 32 x 32 (see the table comment)


HEAD_DIM_CLASSES = (64, 128)  # table rows: head_dim <= 64 and 65..128 (searched at 64, and at 128 and 96)


def block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def head_dim_class(head_dim: int) -> int:
    return next((c for c in HEAD_DIM_CLASSES if head_dim <= c), head_dim)  # > 128: no row, refused


def table_arch(arch: int) -> int:
    """The table an arch uses: its own, or the nearest compiled one below it (sm_86/89 -> 80, sm_100 -> 90)."""
    return max((a for a in TABLE_ARCHS if a <= arch), default=TABLE_ARCHS[0])


def kernel_config(kernel: str, arch: int, elem_bytes: int, block: int, head_dim: int) -> dict[str, int]:
    """BLOCK_M, BLOCK_N, num_warps, num_stages for ``kernel`` ("fwd" | "dkdv" | "dq") on sm_``arch``."""
    key = (kernel, table_arch(arch), block, head_dim_class(head_dim))
    if key not in KERNEL_CONFIGS or elem_bytes not in (2, 4):
        raise UnsupportedConfig(
            f"no compiled configuration for the {kernel} kernel on sm_{arch} with {elem_bytes}-byte elements, "
            f"layout block {block}, head_dim {head_dim}: a configuration that spills or does not fit the GPU's "
            "shared memory is refused. Use a smaller layout block, fp16/bf16, or backend='torch'."
        )
    block_m, block_n, num_warps, num_stages = KERNEL_CONFIGS[key]
    if elem_bytes == 4:
        block_m, block_n = min(block_m, FP32_TILE_CAP), min(block_n, FP32_TILE_CAP)
        num_warps, num_stages = min(num_warps, 4), 1
    return {"BLOCK_M": block_m, "BLOCK_N": block_n, "num_warps": num_warps, "num_stages": num_stages}


def launch_config(block: int, head_dim: int, elem_bytes: int, backward: bool, arch: int = 90) -> dict[str, int]:
    """The configuration of the forward kernel, or of the dK/dV kernel (``backward``), on sm_``arch``."""
    return kernel_config("dkdv" if backward else "fwd", arch, elem_bytes, block, head_dim)


_WARNED_ARCHS: set[int] = set()


def warn_untabled_arch(arch: int) -> None:
    """Once per arch: a GPU the table was not compiled for runs the nearest compiled arch's configuration."""
    if arch not in TABLE_ARCHS and arch not in _WARNED_ARCHS:
        _WARNED_ARCHS.add(arch)
        warnings.warn(f"the Triton kernel's launch table was compiled for sm_80 and sm_90; this GPU is sm_{arch}, so "
                      f"it runs sm_{table_arch(arch)}'s configuration, unchecked for spills and shared memory here. "
                      f"Check it with benchmarks/triton_aot.py (GPUTarget('cuda', {arch}, 32)) or use "
                      "backend='torch'.", RuntimeWarning, stacklevel=4)
