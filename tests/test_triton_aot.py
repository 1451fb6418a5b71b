"""The Triton kernels compiled for real GPUs (sm_80 A100, sm_90 H100) on this CPU machine: no spills, shared fits.

Compiles the heaviest tiles the launcher picks (layout block 128, head_dim 128 / 96, padding and window masks
on; plus the one configuration that spilled with the masks off) with the ptxas shipped in the triton wheel, and reads registers / stack / shared memory
(mlret_plugin.attention.triton_aot). The full grid is `python benchmarks/triton_aot.py`.
"""
from __future__ import annotations

import pytest

from mlret_plugin.attention import triton_kernel as tk

pytestmark = pytest.mark.slow  # ptxas compiles for sm_80 / sm_90

aot = pytest.importorskip("triton_compile")  # benchmarks/, a development tool

# The heaviest configurations: largest tiles, fully masked, both archs; fp32 only needs to fit.
SUBSET = [aot.Variant(kernel, arch, dtype, block, d)
          for arch in aot.ARCHS for kernel in aot.KERNELS
          for dtype, block, d in (("fp16", 128, 128), ("bf16", 128, 96), ("fp32", 128, 128))]
SUBSET.append(aot.Variant("dq", 80, "fp16", 64, 64, has_kpm=False, has_window=False))  # spilled at 64 x 64 tiles


@pytest.fixture(scope="module")
def compiled_rows() -> list[dict]:
    try:
        aot.tool_paths()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return [aot.inspect_variant(v) for v in SUBSET]


def test_heaviest_kernels_compile_without_spills_and_fit_shared_memory(compiled_rows):
    assert aot.problems(compiled_rows) == []
    for r in compiled_rows:
        assert r["ok"] and not r["refused"], r
        assert r["shared"] <= aot.SHARED_LIMIT[r["arch"]], r
        if r["dtype"] != "fp32":
            assert r["stack"] == 0 and r["registers"] <= 255, r


def test_rows_carry_the_launchers_configuration(compiled_rows):
    for r in compiled_rows:
        cfg = tk.kernel_config(r["kernel"], r["arch"], 4 if r["dtype"] == "fp32" else 2, r["block"], r["head_dim"])
        assert (r["block_m"], r["block_n"], r["num_warps"], r["num_stages"]) == (
            cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["num_warps"], cfg["num_stages"])
        assert {"kernel", "arch", "dtype", "block", "head_dim", "registers", "stack", "shared", "ok", "seconds",
                "refused"} <= set(r)


def test_problems_flags_spills_overflowing_shared_memory_and_compile_errors():
    base = {"kernel": "fwd", "arch": 90, "dtype": "fp16", "block": 128, "head_dim": 128, "has_kpm": True,
            "has_window": True, "ok": True, "refused": None, "error": None, "registers": 255, "stack": 0,
            "shared": 1000, "shared_limit": aot.SHARED_LIMIT[90]}
    assert aot.problems([base]) == []
    assert "spills (64 bytes" in aot.problems([{**base, "stack": 64}])[0]
    assert aot.problems([{**base, "dtype": "fp32", "stack": 64}]) == []  # fp32 may spill; it must fit
    assert "> the limit 232448" in aot.problems([{**base, "shared": 300_000}])[0]
    assert "does not compile" in aot.problems([{**base, "ok": False, "error": "ptxas died"}])[0]
    assert aot.problems([{**base, "ok": False, "refused": "no config"}]) == []  # a refusal is on purpose


def test_launch_table_covers_every_16bit_shape_on_both_archs():
    for arch in (80, 86, 89, 90, 100):
        for block in tk.BLOCK_SIZES:
            for d in range(tk.MIN_HEAD_DIM, tk.MAX_HEAD_DIM + 1, 8):
                for kernel in ("fwd", "dkdv", "dq"):
                    cfg = tk.kernel_config(kernel, arch, 2, block, d)
                    assert cfg["BLOCK_M"] <= block and cfg["BLOCK_N"] <= block and block % cfg["BLOCK_M"] == 0
                    assert block % cfg["BLOCK_N"] == 0 and cfg["num_warps"] in (2, 4, 8)


def test_a_shape_without_a_compiled_configuration_is_refused_with_the_fix():
    with pytest.raises(tk.UnsupportedConfig, match="block 256.*backend='torch'"):
        tk.kernel_config("fwd", 90, 2, 256, 64)
    assert tk.table_arch(86) == 80 and tk.table_arch(100) == 90 and tk.table_arch(75) == 80
