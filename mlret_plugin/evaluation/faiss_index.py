"""FAISS indexes of a dataset id's candidates, encoded by the plugin, for Pyserini's own ``search.faiss``.

An index folder is what Pyserini's ``FaissSearcher`` reads (``index``: a FAISS index over inner products,
``docid``: one candidate id per line, in index order) plus what the plugin adds:

- ``mlret-index.json``: the model (name, path, fingerprint), its prompts, pooling, normalisation and candidate
  mode, the index type, the query path and the exact ``search.faiss`` flags that reproduce the plugin's
  query embeddings; ``mlret pyserini search.faiss`` checks the flags it is given against it
  (``search_mismatch``);
- ``topics.json``: the dataset id's queries as Pyserini's JSON topics ``{qid: {"title": text}}``, the text
  exactly as the plugin encodes it (TSV topics would be NFC-normalised with whitespace runs collapsed);
- ``encoded-queries/``: the plugin's query embeddings (with the model's query prompt) in the format of
  Pyserini's ``--encoded-queries`` (``embedding.pkl``: a pandas frame of ``text`` and ``embedding``), keyed by
  the raw text and by its TSV form, and ``mlret-queries.json`` naming the model and prompt.

Candidates are encoded by ``DenseRetriever.encode`` (the model's passage prompt, pooling and normalisation,
``candidates`` "context" or "sentence"), through the embedding cache, so an ``mlret evaluate --model`` run and
the index share the same embeddings. Flat indexes (``IndexFlatIP``) are exact; HNSW (``IndexHNSWFlat`` with
inner product) is approximate, and its recall@k against flat on the dataset's own queries is measured at build
time and recorded.

Which query path the printed command uses: Pyserini's ``AutoQueryEncoder`` (``--encoder``) where it computes
the plugin's query embeddings: a torch fp32 model whose modules are Transformer, mean or CLS Pooling
(``include_prompt``) and optionally Normalize, a query prompt that ``--query-prefix`` can give (Pyserini
writes ``f"{prefix} {query}"``, so only a prompt ending in one space), and embeddings that agree within
``ENCODER_TOLERANCE`` on a sample of the queries, checked at build time. Otherwise the plugin's pre-encoded
queries (``--encoded-queries``), with the reason recorded and logged.

Every index is built in a staging folder and renamed into place (``mlret_plugin.staging``): an interrupted
build leaves no index behind.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import unicodedata
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from mlret_plugin.staging import publish, remove_stale, staging_path

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the folder layout or the metadata's meaning changes
KIND = "faiss"
METADATA_FILE = "mlret-index.json"  # the same name as a BM25 index's description; "kind" tells them apart
INDEX_FILE = "index"  # the names Pyserini's FaissSearcher.load_index reads
DOCID_FILE = "docid"
TOPICS_FILE = "topics.json"
ENCODED_QUERIES_DIR = "encoded-queries"
ENCODED_QUERIES_FILE = "embedding.pkl"  # the name Pyserini's QueryEncoder reads
QUERIES_METADATA_FILE = "mlret-queries.json"
INDEX_TYPES = ("flat", "hnsw")
PYSERINI_ENCODER = "pyserini-encoder"
PRE_ENCODED = "pre-encoded"
ENCODER_TOLERANCE = 1e-4  # max |difference| of one embedding component, Pyserini's encoder vs the plugin's
ENCODER_CHECK_QUERIES = 64  # queries encoded by Pyserini's encoder at build time (the longest half of them)
DEFAULT_HITS = 1000


class FaissIndexError(ValueError):
    """An index folder that cannot be built or used as asked (the message names the folder and the fix)."""


def require_faiss():
    """The ``faiss`` module; a RuntimeError naming the install command when it is missing."""
    try:
        import faiss
    except ImportError as e:
        raise RuntimeError(f"FAISS is not installed ({e}); pip install 'mlret-plugin[faiss]' (faiss-cpu)") from e
    return faiss


def default_root() -> Path:
    import ir_datasets

    return ir_datasets.util.home_path() / "mlret" / "faiss-indexes"


def check_hnsw(m: int, ef_construction: int, ef_search: int) -> dict:
    for name, value in (("hnsw_m", m), ("ef_construction", ef_construction), ("ef_search", ef_search)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return {"m": m, "ef_construction": ef_construction, "ef_search": ef_search}


# --- what the index depends on ------------------------------------------------------------------------------------

def model_description(retriever) -> dict:
    """The model facts an index records: name, fingerprint (weights, tokenizer, modules; see
    ``encoding.encoder_fingerprint``), prompts, pooling, normalisation, candidate mode, runtime."""
    from mlret_plugin.encoding import encoder_fingerprint

    model = retriever.model
    described = retriever.describe()
    return {
        "model": retriever.name,
        "model_fingerprint": encoder_fingerprint(model, normalize=retriever.normalize),
        "candidates": retriever.candidates,
        "query_prompt": retriever.query_prompt,
        "query_prompt_source": retriever.query_prompt_source,
        "passage_prompt": retriever.passage_prompt,
        "passage_prompt_source": retriever.passage_prompt_source,
        "pooling": _pooling(model),
        "normalize": retriever.normalize,
        "max_seq_length": getattr(model, "max_seq_length", None),
        "backend": described["backend"],
        "precision": described["precision"],
    }


def _pooling(model) -> dict | None:
    for module in _modules(model):
        if type(module).__name__ == "Pooling":
            config = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
            mode = config.get("pooling_mode")
            if mode is None and hasattr(module, "get_pooling_mode_str"):
                mode = module.get_pooling_mode_str()
            return {"mode": mode, "include_prompt": bool(config.get("include_prompt", True))}
    return None


def _modules(model) -> list:
    try:
        return list(model)
    except TypeError:
        return []


def docs_fingerprint(docs: list) -> str:
    """A short hash of the candidates' ids, sentences and paragraphs."""
    h = hashlib.sha256()
    for doc in docs:
        for part in (doc.doc_id, doc.text, getattr(doc, "context", "")):
            h.update(part.encode())
            h.update(b"\0")
    return h.hexdigest()[:16]


def index_key(dataset_id: str, docs: list, model: dict, index_type: str, hnsw: dict | None) -> str:
    described = {"format": FORMAT, "dataset_id": dataset_id, "docs": docs_fingerprint(docs),
                 "model": {k: v for k, v in model.items() if k not in ("query_prompt_source", "passage_prompt_source")},
                 "index_type": index_type, "hnsw": hnsw if index_type == "hnsw" else None}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def default_index_dir(dataset_id: str, model_name: str, candidates: str, index_type: str, key: str,
                      root: Path | None = None) -> Path:
    from mlret_plugin.evaluation.runs import safe_name

    root = Path(root) if root is not None else default_root()
    return root / safe_name(dataset_id) / f"{safe_name(model_name)}--{candidates}--{index_type}--{key}"


# --- reading -------------------------------------------------------------------------------------------------------

def is_faiss_index(index_dir: str | Path) -> bool:
    meta = Path(index_dir) / METADATA_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("kind") == KIND
    except (OSError, ValueError):
        return False


def read_metadata(index_dir: str | Path) -> dict:
    """The ``mlret-index.json`` of a FAISS index folder; ``FaissIndexError`` naming the folder otherwise."""
    meta = Path(index_dir) / METADATA_FILE
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise FaissIndexError(f"{meta}: not a readable mlret index description ({e}); rebuild the index with "
                              "`mlret dense-index DATASET_ID --model M`") from e
    if data.get("kind") != KIND:
        raise FaissIndexError(f"{Path(index_dir)} is an mlret index of kind {data.get('kind', 'bm25')!r}, not a FAISS "
                              "index; build one with `mlret dense-index DATASET_ID --model M`")
    return data


def read_index(index_dir: str | Path):
    """(the FAISS index, the candidate ids in index order, the metadata) of an index folder."""
    faiss = require_faiss()

    index_dir = Path(index_dir)
    meta = read_metadata(index_dir)
    index = faiss.read_index(str(index_dir / INDEX_FILE))
    doc_ids = (index_dir / DOCID_FILE).read_text(encoding="utf-8").splitlines()
    if index.ntotal != len(doc_ids):
        raise FaissIndexError(f"{index_dir}: {index.ntotal} vectors but {len(doc_ids)} doc ids; rebuild the index")
    return index, doc_ids, meta


def read_encoded_queries(folder: str | Path) -> dict[str, np.ndarray]:
    """text -> embedding, read as Pyserini's ``QueryEncoder`` reads ``--encoded-queries``."""
    import pandas as pd

    frame = pd.read_pickle(Path(folder) / ENCODED_QUERIES_FILE)
    return dict(zip(frame["text"].tolist(), frame["embedding"].tolist()))


# --- the command that searches it ----------------------------------------------------------------------------------

def query_flags(index_dir: str | Path, meta: dict, pre_encoded: bool = False, hits: int = DEFAULT_HITS) -> list[str]:
    """The ``search.faiss`` flags that give the plugin's query embeddings for this index (Pyserini's query encoder
    and its options where it gives them, else or with ``pre_encoded`` the pre-encoded queries; for HNSW
    ``--ef-search``, at least ``hits``: FAISS's HNSW does not widen efSearch to k, and recall@k falls below it)."""
    if meta["query_path"] == PYSERINI_ENCODER and not pre_encoded:
        flags = list(meta["pyserini_encoder_flags"])
    else:
        flags = ["--encoded-queries", str(Path(index_dir) / ENCODED_QUERIES_DIR)]
    if meta["index_type"] == "hnsw":
        flags += ["--ef-search", str(max(meta["hnsw"]["ef_search"], hits))]
    return flags


def search_command(index_dir: str | Path, meta: dict, output: str | Path, hits: int = DEFAULT_HITS,
                   pre_encoded: bool = False) -> list[str]:
    """``mlret pyserini search.faiss ...`` (as argv) that writes the run of this index's dataset id to ``output``."""
    index_dir = Path(index_dir)
    return ["mlret", "pyserini", "search.faiss", "--index", str(index_dir), "--topics", str(index_dir / TOPICS_FILE),
            *query_flags(index_dir, meta, pre_encoded, hits), "--hits", str(hits), "--output", str(output)]


# --- Pyserini's query encoder: can it give the plugin's query embeddings? --------------------------------------

def pyserini_encoder_flags(retriever, model_path: str | None) -> tuple[list[str] | None, str]:
    """(the ``search.faiss`` flags whose ``AutoQueryEncoder`` encodes queries as the plugin does, "") when the
    model's structure allows it, else (None, why not). The numbers are checked by ``check_pyserini_encoder``."""
    from sentence_transformers.sentence_transformer.modules import Transformer

    model = retriever.model
    if model_path is None:
        return None, "no model folder or hub id was given for Pyserini's --encoder to load"
    if (retriever.describe()["backend"], retriever.describe()["precision"]) != ("torch", "fp32"):
        return None, "the model runs on another backend / precision than torch fp32, which Pyserini's encoder runs"
    modules = _modules(model)
    names = [type(m).__name__ for m in modules]
    if not modules or not isinstance(modules[0], Transformer) or any(
            n not in ("Pooling", "Normalize") for n in names[1:]) or names.count("Pooling") != 1:
        return None, (f"its modules are {names}; Pyserini's AutoQueryEncoder is a transformer with mean or CLS pooling "
                      "and an optional L2 norm")
    attention = (modules[0].get_config_dict().get("attention") or {}) if hasattr(modules[0], "get_config_dict") else {}
    if attention.get("kind", "dense") != "dense":
        return None, f"it runs the sparse attention pattern {attention.get('kind')!r}, which Pyserini's AutoModel does not"
    if Path(model_path).is_dir() and not (Path(model_path) / "config.json").is_file():
        return None, f"{model_path} has its transformer in a subfolder; Pyserini's AutoModel loads the folder itself"
    pooling = _pooling(model)
    if pooling["mode"] not in ("mean", "cls"):
        return None, f"it pools with {pooling['mode']!r}; Pyserini's AutoQueryEncoder pools with mean or CLS only"
    prompt = retriever.query_prompt
    flags = ["--encoder", str(model_path), "--encoder-class", "auto", "--pooling", pooling["mode"]]
    normalized = retriever.normalize or "Normalize" in names
    if normalized:
        flags.append("--l2-norm")
    elif "dse" in str(model_path).lower():
        return None, "Pyserini L2-normalises the queries of any encoder whose name holds 'dse', and this model's are not"
    if prompt:
        prefix = prompt[:-1]
        if not prompt.endswith(" ") or not prefix or prefix != prefix.rstrip() or prefix.startswith("-"):
            return None, (f"the query prompt {prompt!r} cannot be given to Pyserini: --query-prefix P encodes "
                          f"f'{{P}} {{query}}', so only a prompt ending in one space (e.g. 'query: ') fits")
        flags += ["--query-prefix", prefix]
    return flags, ""


def check_pyserini_encoder(model_path: str, flags: list[str], texts: list[str], embeddings: np.ndarray,
                           sample: int = ENCODER_CHECK_QUERIES) -> tuple[float, int]:
    """Encode a sample of ``texts`` (raw query texts, no prompt) with Pyserini's ``AutoQueryEncoder`` built from
    ``flags`` and compare with the plugin's ``embeddings`` (same rows): (max |difference|, queries checked). The
    sample holds the longest texts (truncation shows there) and evenly spaced others."""
    import torch

    encoder = _pyserini_auto_encoder(model_path, flags)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    chosen = order[: sample // 2]
    rest = [i for i in range(len(texts)) if i not in set(chosen)]
    step = max(1, len(rest) // max(1, sample - len(chosen)))
    chosen += rest[::step][: sample - len(chosen)]
    worst = 0.0
    with torch.no_grad():
        for i in chosen:
            theirs = np.asarray(encoder.encode(texts[i]), dtype=np.float32).reshape(-1)
            if theirs.shape != embeddings[i].shape:
                return float("inf"), len(chosen)
            worst = max(worst, float(np.abs(theirs - embeddings[i]).max()))
    return worst, len(chosen)


def _pyserini_auto_encoder(model_path: str, flags: list[str]):
    """Pyserini's AutoQueryEncoder with the options ``search.faiss`` gives it for these flags."""
    from mlret_plugin.evaluation.java import start_jvm

    start_jvm()  # pyserini's modules may reach Anserini's classes on import
    from pyserini.encode import AutoQueryEncoder

    pooling = flags[flags.index("--pooling") + 1]
    prefix = flags[flags.index("--query-prefix") + 1] if "--query-prefix" in flags else None
    return AutoQueryEncoder(encoder_dir=model_path, tokenizer_name=None, device="cpu", pooling=pooling,
                            l2_norm="--l2-norm" in flags, prefix=prefix)


# --- building -------------------------------------------------------------------------------------------------------

def _tsv_form(text: str) -> str:
    """The text as ``mlret datasets topics`` writes a TSV topic (NFC, whitespace runs made single spaces)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def write_encoded_queries(folder: Path, texts: list[str], embeddings: np.ndarray, described: dict) -> Path:
    """Pyserini's ``--encoded-queries`` folder: ``embedding.pkl`` (text, embedding) keyed by each raw text and by
    its TSV form, and ``mlret-queries.json``."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    keys, rows = [], []
    seen = set()
    for text, row in zip(texts, embeddings):
        for key in (text, _tsv_form(text)):
            if key not in seen:
                seen.add(key)
                keys.append(key)
                rows.append(np.ascontiguousarray(row, dtype=np.float32))
    pd.DataFrame({"text": keys, "embedding": rows}).to_pickle(folder / ENCODED_QUERIES_FILE)
    (folder / QUERIES_METADATA_FILE).write_text(json.dumps(described, indent=1, ensure_ascii=False))
    return folder


def _faiss_index(docs: np.ndarray, index_type: str, hnsw: dict | None):
    faiss = require_faiss()

    dim = docs.shape[1]
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = hnsw["ef_construction"]
    index.add(docs)
    if index_type == "hnsw":
        index.hnsw.efSearch = hnsw["ef_search"]
    return index


def recall_against_flat(index, docs: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Mean over queries of |top-k of ``index`` ∩ exact top-k| / |exact top-k| (k capped at the candidates)."""
    faiss = require_faiss()

    k = min(k, docs.shape[0])
    if k == 0 or len(queries) == 0:
        return 1.0
    exact = faiss.IndexFlatIP(docs.shape[1])
    exact.add(docs)
    _, truth = exact.search(queries, k)
    _, found = index.search(queries, k)
    return float(np.mean([len(set(t) & set(f[f >= 0])) / k for t, f in zip(truth, found)]))


def build_faiss_index(retriever, dataset_id: str, *, model_path: str | None = None, out: str | Path | None = None,
                      root: str | Path | None = None, index_type: str = "flat", hnsw: dict | None = None,
                      hits: int = DEFAULT_HITS) -> tuple[Path, dict, bool]:
    """Build (or find) the FAISS index of ``dataset_id``'s candidates encoded by ``retriever`` (a
    ``DenseRetriever``); returns (index folder, its metadata, whether it was built now).

    ``out``: the index folder itself (default: a folder named by dataset id, model, candidates, index type and a
    key under ``root``, default ``default_root()``); an existing folder is reused when it holds this very index,
    else an error. ``index_type`` "flat" (exact) or "hnsw" (``hnsw``: ``check_hnsw(m, ef_construction,
    ef_search)``). ``model_path``: the folder or hub id Pyserini's ``--encoder`` would load (None: pre-encoded
    queries only). The index records whether Pyserini's encoder gives the plugin's query embeddings (checked on a
    sample of the queries; ``query_path``); the pre-encoded queries are written either way. ``hits``: the k of
    the HNSW recall check."""
    from mlret_plugin.datasets import parse_dataset_id

    require_faiss()
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type={index_type!r}; expected one of {INDEX_TYPES}")
    if isinstance(hits, bool) or not isinstance(hits, int) or hits < 1:
        raise ValueError(f"hits must be an integer >= 1; got {hits!r}")
    hnsw = check_hnsw(**(hnsw or {"m": 32, "ef_construction": 200, "ef_search": hits})) if index_type == "hnsw" else None
    subset = parse_dataset_id(dataset_id)
    dataset = subset.load()
    docs = list(dataset.docs_iter())
    queries = list(dataset.queries_iter())
    if not docs:
        raise FaissIndexError(f"{dataset_id} has no candidates to index")
    bad = [d.doc_id for d in docs if not d.doc_id or any(c.isspace() for c in d.doc_id)]
    bad += [q.query_id for q in queries if not q.query_id or any(c.isspace() for c in q.query_id)]
    if bad:
        raise FaissIndexError(f"{dataset_id}: ids {bad[:3]} hold whitespace, which Pyserini's docid file and TREC runs "
                              "cannot carry")
    model = model_description(retriever)
    key = index_key(subset.dataset_id, docs, model, index_type, hnsw)
    target = Path(out) if out is not None else default_index_dir(subset.dataset_id, retriever.name,
                                                                 retriever.candidates, index_type, key, root)
    if "bpr" in str(target / ENCODED_QUERIES_DIR):
        raise FaissIndexError(f"{target}: Pyserini's search.faiss reads --encoded-queries whose path holds 'bpr' as BPR "
                              "queries; choose an index folder without 'bpr' in its path")
    if target.exists():
        meta = read_metadata(target) if (target / METADATA_FILE).is_file() else None
        if meta is None or meta.get("key") != key:
            wanted = _summary({**model, "dataset_id": subset.dataset_id, "index_type": index_type})
            what = ("is not an mlret FAISS index" if meta is None
                    else f"holds another index ({_summary(meta)}), not this one ({wanted})")
            raise FaissIndexError(f"{target} exists and {what}; delete it or choose another folder")
        log.info("FAISS index %s exists (same dataset, model, prompts, candidates and index type); reusing it", target)
        return target, meta, False
    return target, _build(retriever, subset, queries, docs, model, key, target, index_type, hnsw, model_path,
                          hits), True


def _summary(meta: dict) -> str:
    prompts = f", prompts {meta.get('query_prompt')!r} / {meta.get('passage_prompt')!r}" if (
        meta.get("query_prompt") or meta.get("passage_prompt")) else ""
    return (f"{meta.get('dataset_id')}, {meta.get('model')}, candidates {meta.get('candidates')}, "
            f"{meta.get('index_type')}{prompts}")


def _build(retriever, subset, queries, docs, model, key, target: Path, index_type, hnsw, model_path, hits) -> dict:
    faiss = require_faiss()

    start = time.perf_counter()
    encoded = retriever.encode(subset)
    encode_s = time.perf_counter() - start
    doc_emb = np.ascontiguousarray(encoded.docs.numpy(), dtype=np.float32)
    query_emb = np.ascontiguousarray(encoded.queries.numpy(), dtype=np.float32)
    text_of = {q.query_id: q.text for q in queries}
    texts = [text_of[qid] for qid in encoded.query_ids]

    check = None
    t0 = time.perf_counter()
    flags, reason = pyserini_encoder_flags(retriever, model_path)
    if flags is not None:
        try:
            worst, checked = check_pyserini_encoder(model_path, flags, texts, query_emb)
        except Exception as e:  # noqa: BLE001 - any failure to load or run it means: not this path (recorded, logged)
            reason = f"Pyserini's AutoQueryEncoder could not encode with {model_path} ({type(e).__name__}: {e})"
        else:
            check = {"queries": checked, "max_abs_diff": worst, "tolerance": ENCODER_TOLERANCE}
            if not worst <= ENCODER_TOLERANCE:
                reason = (f"Pyserini's AutoQueryEncoder differs from the plugin's query embeddings by up to {worst:.3g} "
                          f"(tolerance {ENCODER_TOLERANCE:g}) on {checked} queries")
        if reason:
            flags = None
    check_s = time.perf_counter() - t0
    path = PYSERINI_ENCODER if flags is not None else PRE_ENCODED
    if path == PRE_ENCODED:
        log.warning("query path: the plugin's pre-encoded queries (--encoded-queries), because %s", reason)
    else:
        log.info("query path: Pyserini's own query encoder (%s); it matched the plugin's query embeddings within "
                 "%.2g on %d queries", " ".join(flags), check["max_abs_diff"], check["queries"])

    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target, "FAISS index build")
    tmp = staging_path(target)
    try:
        tmp.mkdir()
        t0 = time.perf_counter()
        index = _faiss_index(doc_emb, index_type, hnsw)
        build_s = time.perf_counter() - t0
        if index_type == "hnsw":
            t0 = time.perf_counter()
            hnsw = {**hnsw, "recall_vs_flat": recall_against_flat(index, doc_emb, query_emb, hits),
                    "recall_k": min(hits, len(docs)), "recall_seconds": round(time.perf_counter() - t0, 3)}
            log.info("HNSW recall@%d against flat on %s's %d queries: %.4f", hnsw["recall_k"], subset.dataset_id,
                     len(query_emb), hnsw["recall_vs_flat"])
        faiss.write_index(index, str(tmp / INDEX_FILE))
        (tmp / DOCID_FILE).write_text("".join(f"{d}\n" for d in encoded.doc_ids), encoding="utf-8")
        topics = {qid: {"title": text} for qid, text in zip(encoded.query_ids, texts)}
        (tmp / TOPICS_FILE).write_text(json.dumps(topics, ensure_ascii=False, indent=0), encoding="utf-8")
        write_encoded_queries(tmp / ENCODED_QUERIES_DIR, texts, query_emb, {
            "dataset_id": subset.dataset_id, "model": model["model"], "model_fingerprint": model["model_fingerprint"],
            "query_prompt": model["query_prompt"], "normalize": model["normalize"], "queries": len(texts),
            "dimension": int(query_emb.shape[1])})
        meta = {
            "kind": KIND, "format": FORMAT, "key": key, "dataset_id": subset.dataset_id,
            "collection": subset.collection, "query_langs": list(subset.qlangs), "candidate_langs": list(subset.dlangs),
            "docs": len(encoded.doc_ids), "queries": len(texts), "dimension": int(doc_emb.shape[1]),
            **model, "model_path": model_path, "index_type": index_type, "metric": "inner_product",
            "hnsw": hnsw, "query_path": path, "query_path_reason": reason, "pyserini_encoder_flags": flags,
            "pyserini_encoder_check": check, "topics": TOPICS_FILE, "encoded_queries": ENCODED_QUERIES_DIR,
            "seconds": {"encode": round(encode_s, 3), "encoder_check": round(check_s, 3), "index": round(build_s, 3)},
            "versions": {"faiss": faiss.__version__, "pyserini": _version("pyserini")},
        }
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False))
        if not publish(tmp, target, lambda folder: (folder / METADATA_FILE).is_file(), "FAISS index"):
            return read_metadata(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built FAISS index %s (%s, %d candidates) in %.1fs (encoding %.1fs)", target, index_type,
             len(encoded.doc_ids), time.perf_counter() - start, encode_s)
    return meta


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


# --- searching with Pyserini's CLI: do its query flags match the index? --------------------------------------------

def search_mismatch(index_dir: str | Path, *, encoder: str | None = None, encoder_class: str | None = None,
                    pooling: str = "cls", l2_norm: bool = False, query_prefix: str | None = None,
                    tokenizer: str | None = None, encoded_queries: str | None = None,
                    pca_model: str | None = None, ef_search: int | None = None,
                    hits: int = DEFAULT_HITS) -> str | None:
    """For Pyserini ``search.faiss`` options on an mlret FAISS index: a message naming what does not match and the
    flags that do, or None when the query embeddings will be the plugin's (or Pyserini has no queries to encode
    and reports that itself). ``encoder_class``: the class Pyserini ends up with ('auto' when none is named and
    the encoder's name holds no class keyword). ``ef_search`` (None: the index's) below ``hits`` on an HNSW
    index is a problem too: recall@hits then falls."""
    index_dir = Path(index_dir)
    meta = read_metadata(index_dir)
    problems = []
    if meta["index_type"] == "hnsw":
        effective = ef_search if ef_search is not None else meta["hnsw"]["ef_search"]
        if effective < hits:
            problems.append(f"HNSW's efSearch {effective} is below --hits {hits}, and FAISS does not widen it, so fewer "
                            "of the exact top hits are found (recall@1000 0.26 at efSearch 16 on xquad-r/zh)")
    if pca_model:
        problems.append(f"--pca-model {pca_model} projects the queries, which the candidates were not")
    if encoder:
        recorded = meta.get("pyserini_encoder_flags")
        if not recorded:
            problems.append(f"--encoder {encoder}: Pyserini's query encoder cannot give this index's query embeddings "
                            f"({meta.get('query_path_reason')})")
        else:
            want = _flag_values(recorded)
            if not _same_model(encoder, want["--encoder"]):
                problems.append(f"--encoder {encoder} is another model than the index's {want['--encoder']}")
            if encoder_class != "auto":
                problems.append(f"Pyserini picks its {encoder_class!r} query encoder (--encoder-class "
                                f"{encoder_class or 'inferred from the name'}), not 'auto'")
            if pooling != want["--pooling"]:
                problems.append(f"--pooling {pooling} is not the model's {want['--pooling']} pooling")
            effective_norm = l2_norm or "dse" in encoder.lower()
            if effective_norm != ("--l2-norm" in recorded):
                problems.append("--l2-norm is " + ("missing" if "--l2-norm" in recorded else "not the model's"))
            if (query_prefix or None) != want.get("--query-prefix"):
                given = f"--query-prefix {query_prefix!r}" if query_prefix else "no --query-prefix"
                problems.append(f"the query prompt: {given} gives {_prompt_given(query_prefix)!r} before each query, "
                                f"the index's queries take {meta['query_prompt']!r}")
            if tokenizer and not _same_model(tokenizer, want["--encoder"]):
                problems.append(f"--tokenizer {tokenizer} is not the model's tokenizer")
    elif encoded_queries:
        folder = Path(encoded_queries)
        described = folder / QUERIES_METADATA_FILE
        if not described.is_file():
            problems.append(f"--encoded-queries {encoded_queries} were not encoded by mlret with this index's model, so "
                            "nothing says they are in its embedding space")
        else:
            theirs = json.loads(described.read_text())
            if theirs.get("model_fingerprint") != meta["model_fingerprint"]:
                problems.append(f"--encoded-queries {encoded_queries} were encoded by another model "
                                f"({theirs.get('model')}) than the index's ({meta['model']})")
            elif theirs.get("query_prompt") != meta["query_prompt"]:
                problems.append(f"--encoded-queries {encoded_queries} were encoded with the query prompt "
                                f"{theirs.get('query_prompt')!r}, the index's queries take {meta['query_prompt']!r}")
    if not problems:
        return None
    return (f"{index_dir} is mlret's FAISS index of {meta['dataset_id']} ({meta['model']}, candidates "
            f"{meta['candidates']}, query prompt {meta['query_prompt']!r}, pooling {(meta.get('pooling') or {}).get('mode')}"
            f"{', L2-normalised' if meta['normalize'] else ''}); {'; '.join(problems)}, so the run will not be mlret's "
            f"dense retrieval. Fix: use {' '.join(_quote(f) for f in query_flags(index_dir, meta, hits=hits))}"
            + (f" (or --encoded-queries {index_dir / ENCODED_QUERIES_DIR})" if meta["query_path"] == PYSERINI_ENCODER
               else "") + ".")


def _flag_values(flags: list[str]) -> dict:
    out, i = {}, 0
    while i < len(flags):
        if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            out[flags[i]] = flags[i + 1]
            i += 2
        else:
            out[flags[i]] = True
            i += 1
    return out


def _same_model(given: str, recorded: str) -> bool:
    if given == recorded:
        return True
    return Path(given).exists() and Path(recorded).exists() and Path(given).resolve() == Path(recorded).resolve()


def _prompt_given(prefix: str | None) -> str:
    return f"{prefix} " if prefix else ""


def _quote(flag: str) -> str:
    import shlex

    return shlex.quote(flag)


__all__ = ["DEFAULT_HITS", "ENCODED_QUERIES_DIR", "FaissIndexError", "INDEX_TYPES", "METADATA_FILE", "PRE_ENCODED",
           "PYSERINI_ENCODER", "TOPICS_FILE", "build_faiss_index", "check_hnsw",
           "check_pyserini_encoder", "default_root", "is_faiss_index", "model_description", "pyserini_encoder_flags",
           "query_flags", "read_encoded_queries", "read_index", "read_metadata", "recall_against_flat",
           "require_faiss", "search_command", "search_mismatch", "write_encoded_queries"]
