"""The Triton block-sparse FlashAttention kernel against dense attention and the torch backend.

There is no GPU here, so the kernels run under Triton's interpreter on CPU tensors in fp32. The
interpreter must be switched on (TRITON_INTERPRET=1) before triton is first imported, and by the time
this module runs the test session has long imported triton (sentence_transformers does). So the kernel
cases run in a subprocess started with TRITON_INTERPRET=1 - this very file, run as a script with
``--worker``, one process per group of cases - and the tests here check what it measured. Nothing leaks
into the other tests' process. Input validation needs no kernel launch and is tested in-process.

References: dense softmax(Q K^T * scale) V in float64 under the layout's ``token_mask()`` and the key
padding mask (rows without any allowed key -> zeros, the kernel's documented convention), and the torch
backend (``layout_attention``) on the rows that have keys.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import traceback

from pathlib import Path

import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the --worker subprocess has no conftest
from kernel_cases import FAST_CASES, SLOW_CASES, build_layout, layout_from_blocks  # noqa: E402
from mlret_plugin.attention.layout import BlockLayout  # noqa: E402

pytestmark = pytest.mark.slow  # Triton's interpreter in a subprocess

TOL = {"float32": 1e-4, "float16": 2e-2}  # max abs error vs the float64 reference and the torch backend


# ------------------------------------------------------------------------------------------- layouts


def dense_reference(q, k, v, allowed: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T scale) V with ``allowed`` [B|1, H|1, L, L]; rows without keys -> 0. Also returns those rows."""
    s = q @ k.transpose(-1, -2) * scale
    empty = ~allowed.any(-1, keepdim=True)
    p = torch.softmax(s.masked_fill(~allowed, float("-inf")).masked_fill(empty, 0.0), dim=-1) * allowed
    return p @ v, empty.squeeze(-1)


# ---------------------------------------------------------------------------------------- the worker


def run_case(case: dict) -> dict:
    """Kernel vs float64 dense reference and vs the torch backend, output and dQ/dK/dV (in the worker)."""
    from mlret_plugin.attention import layout_attention
    from mlret_plugin.attention.triton_kernel import block_sparse_attention

    torch.manual_seed(case.get("seed", 0))
    B, H, L, D, block = case["B"], case["H"], case["L"], case["D"], case["block"]
    layout = build_layout(case["layout"], L, block, H)
    dtype = getattr(torch, case.get("dtype", "float32"))
    if case.get("transposed"):  # [B, L, H, D] viewed as [B, H, L, D], as HF attention hands it over
        q, k, v = (torch.randn(B, L, H, D, dtype=dtype).transpose(1, 2) for _ in range(3))
    else:
        q, k, v = (torch.randn(B, H, L, D, dtype=dtype) for _ in range(3))
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    lengths = case.get("lengths")
    kpm = None
    if lengths is not None:
        kpm = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    scale = case.get("scale")
    scale_used = 1.0 / math.sqrt(D) if scale is None else scale

    t0 = time.perf_counter()
    out = block_sparse_attention(q, k, v, layout, key_padding_mask=kpm, scale=scale)
    t_fwd = time.perf_counter() - t0
    d_out = torch.randn_like(out)
    t0 = time.perf_counter()
    grads = torch.autograd.grad(out, (q, k, v), d_out, retain_graph=True)
    t_bwd = time.perf_counter() - t0

    allowed = layout.token_mask()[None]
    if kpm is not None:
        allowed = allowed & kpm[:, None, None, :]
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref, empty = dense_reference(q64, k64, v64, allowed, scale_used)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), d_out.double())
    unmasked, _ = dense_reference(q64, k64, v64, torch.ones(1, 1, L, L, dtype=torch.bool), scale_used)

    # torch backend: compared on rows with keys (it fills keyless rows its own way); zero upstream
    # gradient there so those rows add nothing to dK / dV on either side.
    empty_b = empty.expand(B, H, L)
    d_out_keyed = d_out.masked_fill(empty_b[..., None], 0.0)
    grads_k = torch.autograd.grad(out, (q, k, v), d_out_keyed) if bool(empty_b.any()) else grads
    # the torch backend runs on the same inputs in fp32 (its own fp16 CPU path is not what is under test)
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    out_t = layout_attention(q32, k32, v32, layout, kpm, scale=scale)
    grads_t = torch.autograd.grad(out_t, (q32, k32, v32), d_out_keyed.float())

    def err(a, b, rows=None):
        diff = (a.double() - b.double()).abs()
        if rows is not None:
            diff = diff[rows]
        return float(diff.max()) if diff.numel() else 0.0

    keyed = ~empty_b
    return {
        "density": layout.density,
        "empty_rows": int(empty_b.sum()),
        "finite": bool(out.isfinite().all()) and all(bool(g.isfinite().all()) for g in grads + grads_k),
        "empty_rows_abs_max": float(out.detach()[empty_b].abs().max()) if bool(empty_b.any()) else 0.0,
        "dense": {"out": err(out, ref), **{f"d{n}": err(g, r) for n, g, r in zip("qkv", grads, ref_grads)}},
        "torch": {"out": err(out, out_t, keyed), **{f"d{n}": err(g, r) for n, g, r in zip("qkv", grads_k, grads_t)}},
        "vs_unmasked": err(out, unmasked),
        "seconds": {"fwd": round(t_fwd, 2), "bwd": round(t_bwd, 2)},
    }


def worker_main() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("the worker must be started with TRITON_INTERPRET=1")
    cases = json.loads(sys.stdin.read())
    results = {}
    for case in cases:
        t0 = time.perf_counter()
        try:
            results[case["id"]] = run_case(case)
        except Exception:  # report per case; the other cases still run
            results[case["id"]] = {"error": traceback.format_exc()}
        results[case["id"]]["total_seconds"] = round(time.perf_counter() - t0, 2)
    print("RESULTS " + json.dumps(results))


def run_in_interpreter(cases: list[dict]) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker"], input=json.dumps(cases),
                          capture_output=True, text=True, env=env, timeout=1500)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"interpreter worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULTS "):])


# ------------------------------------------------------------------------------------- the matrix


@pytest.fixture(scope="module")
def fast_results() -> dict:
    return run_in_interpreter(FAST_CASES)


@pytest.fixture(scope="module")
def slow_results() -> dict:
    return run_in_interpreter(SLOW_CASES)


def check_result(c: dict, r: dict) -> None:
    assert "error" not in r, f"{c['id']} raised in the interpreter worker:\n{r.get('error')}"
    assert r["finite"], f"{c['id']}: NaN/inf in output or gradients: {r}"
    tol = TOL[c.get("dtype", "float32")]
    for ref in ("dense", "torch"):
        bad = {name: e for name, e in r[ref].items() if not e <= tol}
        assert not bad, f"{c['id']}: kernel vs {ref} reference above {tol}: {bad} (all: {r})"
    assert r["empty_rows_abs_max"] == 0.0, f"{c['id']}: rows without keys must output zeros: {r}"
    if r["density"] < 1.0 or c.get("lengths"):
        # the layout / padding must matter: a kernel ignoring it would be caught by this case
        assert r["vs_unmasked"] > 1e-3, f"{c['id']}: masked and unmasked attention agree; the case tests nothing: {r}"


@pytest.mark.parametrize("c", FAST_CASES, ids=[c["id"] for c in FAST_CASES])
def test_kernel_matches_references(c, fast_results):
    check_result(c, fast_results[c["id"]])


@pytest.mark.slow
@pytest.mark.parametrize("c", SLOW_CASES, ids=[c["id"] for c in SLOW_CASES])
def test_kernel_matches_references_long(c, slow_results):
    check_result(c, slow_results[c["id"]])


def test_keyless_rows_are_exercised(fast_results):
    """The padding / hole cases really produce rows with no key (so the zeros convention is tested)."""
    assert fast_results["L1-b64-local-padded-row"]["empty_rows"] == 2  # batch 1's only row, both heads
    assert fast_results["L63-b16-holes-padded-blocks"]["empty_rows"] > 16


# ------------------------------------------------------------------------------- in-process checks

from mlret_plugin.attention import triton_kernel as tk  # noqa: E402  (imports triton without the interpreter)


def _qkv(B=1, H=2, L=40, D=32, dtype=torch.float32):
    return tuple(torch.randn(B, H, L, D, dtype=dtype) for _ in range(3))


def _band(L=40, block=16, heads=1):
    return build_layout({"kind": "band", "width": 1}, L, block, heads) if heads == 1 else \
        layout_from_blocks(torch.ones(heads, -(-L // block), -(-L // block), dtype=torch.bool), block, L)


@pytest.mark.parametrize("make, error, words", [
    (lambda: (*_qkv(D=8), _band()), ValueError, "head_dim 16..128"),
    (lambda: (*_qkv(D=160), _band()), ValueError, "head_dim 16..128"),
    (lambda: (*_qkv(dtype=torch.float64), _band()), TypeError, "float64"),
    (lambda: (_qkv()[0], _qkv(L=41)[1], _qkv()[2], _band()), ValueError, "same shape"),
    (lambda: (_qkv()[0], _qkv()[1].half(), _qkv()[2], _band()), ValueError, "same dtype"),
    (lambda: (_qkv()[0], torch.randn(1, 2, 32, 40).transpose(-1, -2), _qkv()[2], _band()), ValueError,
     "k.contiguous()"),
    (lambda: (torch.randn(2, 40, 32), *_qkv()[1:], _band()), ValueError, "4-D"),
    (lambda: (*_qkv(), _band(L=41)), ValueError, "seq_len=41"),
    (lambda: (*_qkv(H=2), _band(heads=3)), ValueError, "3 heads"),
    (lambda: (*_qkv(), "not a layout"), TypeError, "BlockLayout"),
])
def test_bad_input_is_rejected_with_the_fix(make, error, words):
    q, k, v, layout = make()
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        tk.block_sparse_attention(q, k, v, layout)


def test_bad_padding_mask_and_scale_are_rejected():
    q, k, v = _qkv()
    layout = _band()
    with pytest.raises(ValueError, match="bool tensor"):
        tk.block_sparse_attention(q, k, v, layout, key_padding_mask=torch.ones(1, 40))
    with pytest.raises(ValueError, match=r"\[batch, seq\] = \(1, 40\)"):
        tk.block_sparse_attention(q, k, v, layout, key_padding_mask=torch.ones(1, 39, dtype=torch.bool))
    with pytest.raises(ValueError, match="scale"):
        tk.block_sparse_attention(q, k, v, layout, scale=-1.0)


def test_unsupported_block_and_broken_lut_are_rejected():
    q, k, v = _qkv(L=40)
    bm = torch.ones(1, 5, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="layout blocks"):
        tk.block_sparse_attention(q, k, v, layout_from_blocks(bm, 8, 40))
    good = _band()
    lut = good.lut.clone()
    lut[0, 1, :2] = lut[0, 1, :2].flip(0)  # descending
    with pytest.raises(ValueError, match="ascending"):
        tk.block_sparse_attention(q, k, v, BlockLayout(16, 40, lut, good.nnz))
    lut = good.lut.clone()
    lut[0, 0, 0] = 7  # out of range for 3 blocks
    with pytest.raises(ValueError, match="outside"):
        tk.block_sparse_attention(q, k, v, BlockLayout(16, 40, lut, good.nnz))


@pytest.mark.skipif(tk.interpreted(), reason="this process runs triton's interpreter (TRITON_INTERPRET=1)")
def test_cpu_tensors_without_the_interpreter_name_the_fix():
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1.*backend='torch'"):
        tk.block_sparse_attention(q, k, v, _band())


def test_transposed_lut_lists_the_query_blocks_of_each_key_block():
    layout = build_layout({"kind": "bigbird", "band": 1, "global": 1, "random": 1, "per_head": True, "seed": 4},
                          100, 16, 3)
    lut_t, nnz_t = tk.transposed_lut(layout)
    bm = layout.block_mask()
    for h in range(3):
        for kb in range(layout.n_blocks):
            listed = lut_t[h, kb, : nnz_t[h, kb]].tolist()
            assert listed == bm[h, :, kb].nonzero().flatten().tolist()
            assert (lut_t[h, kb, nnz_t[h, kb]:] == -1).all()


def test_launch_config_fits_h100_shared_memory():
    for block in tk.BLOCK_SIZES:
        for d in (16, 64, 128):
            for elem in (2, 4):
                for backward in (False, True):
                    cfg = tk.launch_config(block, d, elem, backward)
                    tile = block * d * elem
                    used = tile * (2 if backward else 1) + cfg["num_stages"] * 2 * tile
                    assert cfg["num_stages"] == 1 or used <= tk.SMEM_BUDGET, (block, d, elem, backward, cfg)
                    assert cfg["num_warps"] in (2, 4, 8)
    assert tk.launch_config(64, 64, 2, False)["num_stages"] == 3  # the common fp16 case pipelines fully
    assert tk.launch_config(128, 128, 4, True)["num_stages"] == 1  # fp32 128x128 tiles: no room to pipeline
    assert tk.launch_config(128, 128, 2, False)["num_stages"] == 2


def test_devices_the_kernel_cannot_drive_name_the_fix():
    if tk.interpreted():
        pytest.skip("this process runs triton's interpreter, which takes any device")
    with pytest.raises(RuntimeError, match="runs on CUDA tensors; got meta.*backend='torch'"):
        tk._check_runtime(torch.device("meta"))
    if not torch.cuda.is_available():  # this machine: triton has no GPU driver
        with pytest.raises(RuntimeError, match="Triton cannot drive this CUDA device.*backend='torch'"):
            tk._check_runtime(torch.device("cuda"))


# ------------------------------------------------------------------- tiles smaller than the layout block
# The launch table decouples the kernels' query / key tiles from the layout block (a 128-token block walked
# as 64-key sub-tiles, ...). Whatever the table picks, these cases force every split on, in the interpreter.

SPLIT_TILES = {  # layout block -> kernel -> (BLOCK_M, BLOCK_N)
    32: {"fwd": (16, 16), "dkdv": (16, 32), "dq": (32, 16)},
    64: {"fwd": (16, 32), "dkdv": (32, 16), "dq": (32, 16)},
    128: {"fwd": (64, 32), "dkdv": (32, 64), "dq": (16, 128)},
}
SPLIT_CASES = [c for c in FAST_CASES if c["id"] in (
    "L1-b64-local-padded-row", "L100-b64-local-global-pad", "L257-b128-local-global-pad",
    "L100-b32-local-global-pad-fp16")]

SPLIT_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from mlret_plugin.attention import triton_kernel as tk
split = {split!r}
for key in list(tk.KERNEL_CONFIGS):
    kernel, arch, block, dims = key
    if block in split:
        bm, bn = split[block][kernel]
        tk.KERNEL_CONFIGS[key] = (bm, bn, 4, 2)
import test_triton_kernel as t
cases = json.loads(sys.stdin.read())
print("RESULTS " + json.dumps({{c["id"]: t.run_case(c) for c in cases}}))
"""


def test_kernel_matches_references_with_tiles_smaller_than_the_block():
    code = SPLIT_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)),
                               split={b: {k: list(v) for k, v in d.items()} for b, d in SPLIT_TILES.items()})
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(SPLIT_CASES), capture_output=True, text=True,
                          env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=1500)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    results = json.loads(lines[-1][len("RESULTS "):])
    assert len(SPLIT_CASES) == 4
    for c in SPLIT_CASES:
        check_result(c, results[c["id"]])


if __name__ == "__main__" and "--worker" in sys.argv:
    worker_main()
