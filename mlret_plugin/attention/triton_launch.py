"""Host side of the Triton kernels: input checks, lookup tables on the device, and the launches.

``forward_launch`` / ``backward_launches`` build each kernel's grid, arguments and options as a ``Launch``
that runs it (``Launch.run``) or hands it to ahead-of-time compilation (``benchmarks/triton_aot.py``).
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from mlret_plugin.attention.checks import check_key_padding_mask, check_qkv
from mlret_plugin.attention.layout import BlockLayout
from mlret_plugin.attention.triton_configs import kernel_config, warn_untabled_arch
from mlret_plugin.attention.triton_kernels import _bwd_delta_kernel, _bwd_dkdv_kernel, _bwd_dq_kernel, _fwd_kernel
from mlret_plugin.constants import BLOCK_SIZES

MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 128
GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INTERPRETER_DTYPES = (torch.float32, torch.float16)  # the interpreter (numpy) has no bf16


def _is_interpreted(kernel) -> bool:
    return type(kernel).__name__ == "InterpretedFunction"


def _check_runtime(device: torch.device) -> None:
    """Errors naming the fix when the kernels cannot run on ``device`` in this process."""
    kernels_interpreted = _is_interpreted(_fwd_kernel)
    stdlib_interpreted = _is_interpreted(tl.standard.zeros)
    if kernels_interpreted != stdlib_interpreted:
        raise RuntimeError(
            "TRITON_INTERPRET changed between importing triton and importing "
            f"{__name__} (triton.language is {'interpreted' if stdlib_interpreted else 'compiled'}, these "
            f"kernels are {'interpreted' if kernels_interpreted else 'compiled'}). Set TRITON_INTERPRET=1 in "
            "the environment before the process imports anything (sentence_transformers imports triton), or "
            "not at all."
        )
    if kernels_interpreted:
        return
    if device.type == "cpu":
        raise RuntimeError(
            "the Triton kernel got CPU tensors: on CPU it runs only under Triton's interpreter (slow, for "
            "tests), which needs TRITON_INTERPRET=1 in the environment before triton is first imported. "
            "For real CPU work use backend='torch'."
        )
    if device.type != "cuda":
        raise RuntimeError(f"the Triton kernel runs on CUDA tensors; got {device.type}. Use backend='torch'.")
    try:
        triton.runtime.driver.active.get_current_target()
    except Exception as exc:  # no GPU driver usable by triton
        raise RuntimeError(
            f"Triton cannot drive this CUDA device ({exc}). Install a triton build matching the CUDA driver, "
            "or use backend='torch'."
        ) from exc


def _check_inputs(q, k, v, layout: BlockLayout, key_padding_mask, scale) -> None:
    """Clear errors for everything the kernels cannot take, before any launch."""
    check_qkv(q, k, v)
    interpreted = _is_interpreted(_fwd_kernel)
    allowed = INTERPRETER_DTYPES if interpreted else GPU_DTYPES
    if q.dtype not in allowed:
        where = "under Triton's interpreter" if interpreted else "on CUDA"
        raise TypeError(f"the Triton kernel takes {', '.join(map(str, allowed))} {where}; got {q.dtype}. "
                        "Cast q/k/v (e.g. .float()) or use backend='torch'.")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in head_dim (stride(-1) == 1); got strides {t.stride()}. "
                             f"Pass {name}.contiguous().")
    _, H, L, D = q.shape
    if not MIN_HEAD_DIM <= D <= MAX_HEAD_DIM:
        raise ValueError(f"the Triton kernel supports head_dim {MIN_HEAD_DIM}..{MAX_HEAD_DIM}; got {D}. "
                         "Use backend='torch'.")
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout must be a BlockLayout; got {type(layout).__name__}")
    if layout.seq_len != L:
        raise ValueError(f"layout is for seq_len={layout.seq_len}; q has seq_len {L}")
    if layout.block not in BLOCK_SIZES:
        raise ValueError(f"the Triton kernel takes layout blocks {BLOCK_SIZES}; got {layout.block}")
    if layout.heads not in (1, H):
        raise ValueError(f"layout has {layout.heads} heads; q has {H} (expected 1 = shared, or {H})")
    if layout.window is not None and layout.window < 0:
        raise ValueError(f"layout.window must be >= 0 or None; got {layout.window}")
    check_key_padding_mask(key_padding_mask, q)
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number or None; got {scale!r}")


# Per layout (by identity) and device: the lookup tables on the device, validated, plus the transposed
# table (query blocks listing each key block) that the dK/dV pass walks.
_TABLES: "weakref.WeakKeyDictionary[BlockLayout, dict]" = weakref.WeakKeyDictionary()


def _validate_lut(layout: BlockLayout) -> None:
    lut, nnz, n = layout.lut, layout.nnz, layout.n_blocks
    if lut.dtype != torch.int32 or nnz.dtype != torch.int32:
        raise ValueError(f"BlockLayout.lut and .nnz must be int32; got {lut.dtype}, {nnz.dtype}")
    if bool((nnz < 0).any()) or bool((nnz > lut.shape[2]).any()):
        raise ValueError(f"BlockLayout.nnz must be in [0, {lut.shape[2]}]")
    listed = torch.arange(lut.shape[2], device=lut.device) < nnz[..., None]
    ids = lut.long()
    if bool(((ids < 0) | (ids >= n))[listed].any()):
        raise ValueError(f"BlockLayout.lut lists key blocks outside [0, {n}) within nnz")
    ascending = ids[..., 1:] > ids[..., :-1]
    if bool((~ascending & listed[..., 1:]).any()):
        raise ValueError("BlockLayout.lut rows must be strictly ascending key-block ids (no repeats)")


def transposed_lut(layout: BlockLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """(lut_t int32 [H, n_blocks, max_nnz_t], nnz_t int32 [H, n_blocks]): query blocks listing each key block."""
    bm_t = layout.block_mask().transpose(1, 2)  # [H, key block, query block]
    n = layout.n_blocks
    ids = torch.arange(n).expand_as(bm_t)
    ids = torch.where(bm_t, ids, torch.full_like(ids, n)).sort(dim=2).values
    nnz_t = bm_t.sum(2).to(torch.int32)
    width = max(int(nnz_t.max()), 1)
    lut_t = ids[..., :width]
    lut_t = torch.where(lut_t >= n, torch.full_like(lut_t, -1), lut_t).to(torch.int32)
    return lut_t.contiguous(), nnz_t.contiguous()


def _tables(layout: BlockLayout, device: torch.device) -> dict:
    per_device = _TABLES.setdefault(layout, {})
    if device not in per_device:
        _validate_lut(layout)
        lut_t, nnz_t = transposed_lut(layout)
        per_device[device] = {
            "lut": layout.lut.to(device=device, dtype=torch.int32).contiguous(),
            "nnz": layout.nnz.to(device=device, dtype=torch.int32).contiguous(),
            "lut_t": lut_t.to(device),
            "nnz_t": nnz_t.to(device),
        }
    return per_device[device]


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: full-precision dots unless the user opted into TF32 for matmuls, as torch does.
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def _common(q, layout, key_padding_mask):
    B, H, L, D = q.shape
    tables = _tables(layout, q.device)
    shared = layout.heads == 1
    kpm = key_padding_mask.to(torch.int8).contiguous() if key_padding_mask is not None else None
    return {
        "B": B, "H": H, "L": L, "D": D, "tables": tables, "shared": shared, "kpm": kpm,
        "BLOCK_D": max(16, triton.next_power_of_2(D)),
        "window": -1 if layout.window is None else int(layout.window),
    }


def device_arch(device: torch.device) -> int:
    """Compute capability as 80 / 90 / ...; 90 off CUDA (the interpreter ignores warps and stages)."""
    if device.type != "cuda" or interpreted():
        return 90
    major, minor = torch.cuda.get_device_capability(device)
    warn_untabled_arch(major * 10 + minor)
    return major * 10 + minor


@dataclass(frozen=True)
class Launch:
    """One kernel launch as the host code builds it: run it, or compile it ahead of time (``benchmarks/triton_compile.py``)."""

    name: str  # "fwd", "delta", "dkdv", "dq"
    kernel: object
    grid: tuple
    args: tuple
    options: dict  # constexprs, num_warps, num_stages

    def run(self) -> None:
        self.kernel[self.grid](*self.args, **self.options)


def forward_launch(q, k, v, o, lse, layout: BlockLayout, kpm, scale: float, arch: int,
                   config: dict | None = None) -> Launch:
    """The forward kernel's launch; ``config`` (BLOCK_M, BLOCK_N, warps, stages) overrides the table's."""
    c = _common(q, layout, kpm)
    B, H, L, D, t = c["B"], c["H"], c["L"], c["D"], c["tables"]
    cfg = config or kernel_config("fwd", arch, q.element_size(), layout.block, D)
    lut, nnz = t["lut"], t["nnz"]
    args = (
        q, k, v, o, lse, lut, nnz, c["kpm"] if c["kpm"] is not None else lut,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
        0 if c["shared"] else lut.stride(0), lut.stride(1), 0 if c["shared"] else nnz.stride(0), nnz.stride(1),
        c["kpm"].stride(0) if c["kpm"] is not None else 0,
        H, L, c["window"], int(layout.num_global), scale * math.log2(math.e),
    )
    options = dict(BLOCK=layout.block, HEAD_DIM=D, BLOCK_D=c["BLOCK_D"], HAS_KPM=c["kpm"] is not None,
                   HAS_WINDOW=layout.window is not None, PRECISION=_precision(q.dtype), **cfg)
    return Launch("fwd", _fwd_kernel, (layout.n_blocks * (layout.block // cfg["BLOCK_M"]), B * H), args, options)


def backward_launches(do, q, k, v, o, lse, delta, dq, dk, dv, layout: BlockLayout, kpm, scale: float,
                      arch: int, configs: dict | None = None) -> list[Launch]:
    """The delta, dK/dV and dQ launches; ``configs`` ({"dkdv": ..., "dq": ...}) overrides the table's."""
    c = _common(q, layout, kpm)
    B, H, L, D, t = c["B"], c["H"], c["L"], c["D"], c["tables"]
    configs = configs or {name: kernel_config(name, arch, q.element_size(), layout.block, D) for name in ("dkdv", "dq")}
    delta_block = min(layout.block, 64)
    delta_launch = Launch("delta", _bwd_delta_kernel, (-(-L // delta_block), B * H),
                          (o, do, delta, *o.stride()[:3], *do.stride()[:3], H, L, D),
                          dict(BLOCK=delta_block, BLOCK_D=c["BLOCK_D"]))
    kpm_ptr = c["kpm"] if c["kpm"] is not None else t["lut"]
    kpm_sb = c["kpm"].stride(0) if c["kpm"] is not None else 0
    shared = c["shared"]
    common = dict(BLOCK=layout.block, HEAD_DIM=D, BLOCK_D=c["BLOCK_D"], HAS_KPM=c["kpm"] is not None,
                  HAS_WINDOW=layout.window is not None, PRECISION=_precision(q.dtype))
    scalars = (H, L, c["window"], int(layout.num_global), scale * math.log2(math.e), scale)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3], *dq.stride()[:3])
    lut_t, nnz_t = t["lut_t"], t["nnz_t"]
    cfg = configs["dkdv"]
    dkdv = Launch("dkdv", _bwd_dkdv_kernel, (layout.n_blocks * (layout.block // cfg["BLOCK_N"]), B * H), (
        q, k, v, do, lse, delta, dk, dv, lut_t, nnz_t, kpm_ptr, *strides,
        0 if shared else lut_t.stride(0), lut_t.stride(1), 0 if shared else nnz_t.stride(0), nnz_t.stride(1), kpm_sb,
        *scalars), {**common, **cfg})
    lut, nnz = t["lut"], t["nnz"]
    cfg = configs["dq"]
    dq_launch = Launch("dq", _bwd_dq_kernel, (layout.n_blocks * (layout.block // cfg["BLOCK_M"]), B * H), (
        q, k, v, do, lse, delta, dq, lut, nnz, kpm_ptr, *strides,
        0 if shared else lut.stride(0), lut.stride(1), 0 if shared else nnz.stride(0), nnz.stride(1), kpm_sb,
        *scalars), {**common, **cfg})
    return [delta_launch, dkdv, dq_launch]


def _forward(q, k, v, layout: BlockLayout, kpm, scale: float):
    B, H, L, D = q.shape
    o = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B * H, L), dtype=torch.float32, device=q.device)
    forward_launch(q, k, v, o, lse, layout, kpm, scale, device_arch(q.device)).run()
    return o, lse


def _backward(do, q, k, v, o, lse, layout: BlockLayout, kpm, scale: float):
    B, H, L, D = q.shape
    if do.stride(-1) != 1:
        do = do.contiguous()
    delta = torch.empty((B * H, L), dtype=torch.float32, device=q.device)
    dq = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    for launch in backward_launches(do, q, k, v, o, lse, delta, dq, dk, dv, layout, kpm, scale, device_arch(q.device)):
        launch.run()
    return dq, dk, dv


def interpreted() -> bool:
    """True when this process imported the kernels under Triton's interpreter (TRITON_INTERPRET=1)."""
    return _is_interpreted(_fwd_kernel)
