"""The Triton kernel's verification matrix: the shapes and layouts it is checked on.

The interpreter tests (``tests/test_triton_kernel.py``) run these cases on CPU, and the one-shot GPU check
(``benchmarks/gpu_check.py``) runs the same cases compiled on CUDA, so both check one matrix. The layouts
are built here straight from block masks, not through ``patterns``: a reference that does not go through
the code it checks.
"""
from __future__ import annotations

import torch

from mlret_plugin.attention.layout import BlockLayout


def layout_from_blocks(block_mask: torch.Tensor, block: int, seq_len: int, window=None, num_global=0) -> BlockLayout:
    """A BlockLayout straight from a bool [H, n, n] block mask (independent of the patterns module)."""
    heads, n, _ = block_mask.shape
    nnz = block_mask.sum(2).to(torch.int32)
    lut = torch.full((heads, n, max(int(nnz.max()), 1)), -1, dtype=torch.int32)
    for h in range(heads):
        for i in range(n):
            ids = block_mask[h, i].nonzero().flatten()
            lut[h, i, : len(ids)] = ids.to(torch.int32)
    return BlockLayout(block, seq_len, lut, nnz, window, num_global)


def build_layout(spec: dict, seq_len: int, block: int, heads: int) -> BlockLayout:
    """Layouts by kind: full, band, local (token window + global), bigbird (band + global + random), holes."""
    n = -(-seq_len // block)
    idx = torch.arange(n)
    dist = (idx[:, None] - idx[None, :]).abs()
    kind = spec["kind"]
    if kind == "config":  # a layout from the plugin's own builders
        from mlret_plugin.attention import SparsityConfig

        return SparsityConfig(**spec["config"]).layout(seq_len, heads)
    layout_heads = heads if spec.get("per_head") else 1
    gen = torch.Generator().manual_seed(spec.get("seed", 0))
    if kind == "full":
        bm = torch.ones(1, n, n, dtype=torch.bool)
    elif kind == "band":
        bm = (dist <= spec["width"])[None]
    elif kind == "local":
        window, g = spec["window"], spec.get("global", 0)
        reach = (window + block - 1) // block  # smallest block band that covers |i - j| <= window
        bm = dist <= reach
        gb = -(-g // block)  # blocks holding global tokens
        bm[:gb, :] = True
        bm[:, :gb] = True
        return layout_from_blocks(bm[None], block, seq_len, window=window, num_global=g)
    elif kind == "bigbird":
        bm = (dist <= spec.get("band", 1))[None].repeat(layout_heads, 1, 1)
        gb = spec.get("global", 0)
        bm[:, :gb, :] = True
        bm[:, :, :gb] = True
        for h in range(layout_heads):
            for i in range(n):
                picks = torch.randperm(n, generator=gen)[: spec.get("random", 0)]
                bm[h, i, picks] = True
    elif kind == "random":  # no guaranteed diagonal; `holes` rows list nothing at all
        bm = torch.rand(layout_heads, n, n, generator=gen) < spec.get("p", 0.4)
        for i in spec.get("holes", []):
            bm[:, i, :] = False
    else:
        raise ValueError(f"unknown layout kind {kind!r}")
    return layout_from_blocks(bm, block, seq_len)


def case(id, B, H, L, D, block, layout, lengths=None, **extra) -> dict:
    return {"id": id, "B": B, "H": H, "L": L, "D": D, "block": block, "layout": layout, "lengths": lengths, **extra}


FAST_CASES = [
    case("L1-b16-full", 1, 1, 1, 16, 16, {"kind": "full"}),
    case("L1-b64-local-padded-row", 2, 2, 1, 32, 64, {"kind": "local", "window": 0}, lengths=[1, 0]),
    case("L63-b16-local-global-pad", 2, 2, 63, 32, 16, {"kind": "local", "window": 5, "global": 2}, lengths=[63, 40]),
    case("L64-b32-bigbird-perhead", 1, 3, 64, 16, 32, {"kind": "bigbird", "band": 0, "random": 1, "per_head": True,
                                                       "seed": 3}),
    case("L64-b64-full-pad", 2, 1, 64, 64, 64, {"kind": "full"}, lengths=[64, 17]),
    case("L64-b16-random-perhead-pad", 2, 3, 64, 32, 16, {"kind": "random", "p": 0.5, "per_head": True, "seed": 1},
         lengths=[50, 64]),
    case("L100-b32-bigbird-pad", 2, 2, 100, 64, 32, {"kind": "bigbird", "band": 0, "global": 1, "random": 1},
         lengths=[100, 37]),
    case("L100-b16-local", 1, 3, 100, 16, 16, {"kind": "local", "window": 7}),
    case("L100-b64-local-global-pad", 2, 2, 100, 32, 64, {"kind": "local", "window": 40, "global": 1},
         lengths=[100, 70]),
    case("L63-b16-holes-padded-blocks", 2, 1, 63, 16, 16, {"kind": "random", "p": 0.5, "holes": [1], "seed": 2},
         lengths=[63, 10]),
    case("L63-b32-local-transposed-D24-scale", 1, 2, 63, 24, 32, {"kind": "local", "window": 9}, transposed=True,
         scale=0.3),
    case("L100-b32-local-global-pad-fp16", 2, 2, 100, 32, 32, {"kind": "local", "window": 10, "global": 1},
         lengths=[100, 60], dtype="float16"),
    case("L257-b64-band", 1, 1, 257, 16, 64, {"kind": "band", "width": 1}),
    case("L257-b128-local-global-pad", 2, 1, 257, 32, 128, {"kind": "local", "window": 60, "global": 1},
         lengths=[257, 140]),
    case("L100-config-local", 2, 2, 100, 32, 32,
         {"kind": "config", "config": {"kind": "local", "block": 32, "window": 12, "num_global": 1}},
         lengths=[100, 81]),
    case("L100-config-block_sparse", 1, 2, 100, 16, 16,
         {"kind": "config", "config": {"kind": "block_sparse", "block": 16, "band": 1, "num_global": 1,
                                       "num_random": 1, "stride": 3, "per_head": True, "seed": 0}}),
]

SLOW_CASES = [
    case("L257-b16-local-global-pad", 2, 3, 257, 32, 16, {"kind": "local", "window": 20, "global": 1},
         lengths=[257, 130]),
    case("L257-b32-bigbird-perhead-pad", 2, 2, 257, 64, 32, {"kind": "bigbird", "band": 1, "global": 1, "random": 1,
                                                             "per_head": True, "seed": 5}, lengths=[257, 200]),
    case("L128-b64-D128-local", 1, 1, 128, 128, 64, {"kind": "local", "window": 30}),
]
