"""``--backend`` / ``--precision``: what runs a dense model's transformer (``mlret_plugin.encoding.backends``)."""
from __future__ import annotations

import argparse

from mlret_plugin.constants import ENCODING_BACKENDS as BACKENDS, PRECISIONS

# The main job's default, chosen as the fastest variant that is faithful to torch fp32 (docs/encoding.md).
DEFAULT_BACKEND = "torch"
DEFAULT_PRECISION = "fp32"


def add_backend_arguments(parser: argparse.ArgumentParser, backends: tuple[str, ...] = BACKENDS,
                          precisions: tuple[str, ...] = PRECISIONS, where: str = "") -> None:
    parser.add_argument("--backend", choices=backends, default=DEFAULT_BACKEND,
                        help=f"what runs the dense model's transformer{where}: torch, or an export run by ONNX "
                             f"Runtime / OpenVINO (default {DEFAULT_BACKEND})")
    parser.add_argument("--precision", choices=precisions, default=DEFAULT_PRECISION,
                        help=f"fp32, bf16 (AVX512_BF16 / AMX) or int8 (onnx){where} (default {DEFAULT_PRECISION}); "
                             "--backend torch --precision fp32 gives the reference numbers")
