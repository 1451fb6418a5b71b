"""``--backend`` / ``--precision``: what runs a dense model's transformer (``mlret_plugin.encoding.backends``).

The commands that evaluate (``lareqa``, ``evaluate``, ``train``'s evaluation) default to ``auto``: the fastest
variant faithful to torch fp32 that runs here (docs/encoding.md has the measurements behind that list). The
commands whose output is compared with torch fp32 elsewhere (``dense-index``, whose queries Pyserini may encode
in fp32) default to torch fp32.
"""
from __future__ import annotations

import argparse

from mlret_plugin.constants import ENCODING_BACKENDS as BACKENDS, PRECISIONS
from mlret_plugin.encoding.backends import AUTO

REFERENCE = ("torch", "fp32")


def add_backend_arguments(parser: argparse.ArgumentParser, where: str = "", auto: bool = True) -> None:
    """--backend / --precision; their default is ``auto`` where ``auto``, else torch fp32."""
    backend, precision = (AUTO, AUTO) if auto else REFERENCE
    backends, precisions = ((AUTO, *BACKENDS), (AUTO, *PRECISIONS)) if auto else (BACKENDS, PRECISIONS)
    how = ("auto: the fastest variant faithful to torch fp32 that this machine runs (openvino fp32 with the openvino extra, "
           "else torch fp32; --precision bf16 picks the fastest bf16), logged") if auto else "torch fp32"
    parser.add_argument("--backend", choices=backends, default=backend,
                        help=f"what runs the dense model's transformer{where}: torch, or an export run by ONNX "
                             f"Runtime / OpenVINO (default {backend}; {how})")
    parser.add_argument("--precision", choices=precisions, default=precision,
                        help=f"fp32, bf16 (AVX512_BF16 / AMX) or int8 (onnx){where} (default {precision}); "
                             "--backend torch --precision fp32 gives the reference numbers")
