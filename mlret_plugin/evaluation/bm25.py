"""BM25 through Pyserini (Lucene) on the LAReQA subsets, one cached Lucene index per candidate language.

What is indexed: the candidate *sentence* (``LareqaDoc.text``) alone, no paragraph context. LAReQA's
candidates are sentences, and a sentence's paragraph is shared by all its sibling sentences, so adding it
would give every sentence of a paragraph nearly the same terms and BM25 could no longer tell the answer
sentence from its neighbours.

Indexes: one per (collection, candidate language, analysis, Pyserini version, fingerprint of the
candidate texts), under ``ir_datasets.util.home_path() / "mlret" / "bm25-indexes"`` (or ``cache_dir``).
The candidates of a language are the same in the mono, cross and pool subsets, so one index serves all
of them. Lucene's ``IndexWriter`` is driven directly (through jnius) because Pyserini's indexer cannot
take an arbitrary Lucene analyzer (Greek, our Thai / Vietnamese analysis); documents follow Anserini's
layout (``id`` stored + binary doc values, ``contents`` analysed), so Pyserini's ``LuceneSearcher``
searches them, and so does Pyserini's own CLI (``mlret pyserini search.lucene``) with the query flags
``mlret bm25 indexes`` lists (``--pretokenized`` topics from ``pyserini_topics`` for el / th / vi). An index is built in a temporary
folder and renamed into place: an interrupted build leaves no index behind (the temporary folder of a
killed process is removed by the next build of that index).

Searching (``engine``): by default ``"lucene"``: Lucene's ``BM25Similarity(k1, b)`` (Pyserini's defaults
0.9 / 0.4) with the query built by Anserini's ``BagOfWordsQueryGenerator``, i.e. what Pyserini's
``LuceneSearcher`` (``set_bm25``, ``set_analyzer``) runs, with the same scores (tested), but about 3x
cheaper per hit through jnius (``LuceneBM25Searcher``). ``engine="pyserini"`` runs
``LuceneSearcher.batch_search`` itself (``threads`` Java threads); the benchmark compares the two.

Queries in another language (cross-lingual subsets, the pool): a query is always analysed with the
analyzer of the index it is run against (the candidates' language). Only then are query terms and index
terms produced the same way, so the terms a lexical model can match across languages (names, numbers,
dates, shared words and loanwords) do match. For the multilingual pool, each query is run against every
candidate language's index and the hits are merged by raw BM25 score, keeping the ``depth`` best.
Comparability: the scores of different indexes share the formula and k1 / b but not the term statistics
(IDF, average length); XQuAD-R's languages are parallel (about 1,190 candidates each), so their scales are
close, MLQA-R's indexes differ in size. The merged pool ranking is therefore what "BM25 per language,
then the best scores overall" gives, not a single multilingual BM25; in practice it ranks candidates in
the query's own language first (the language bias MaxRankDist measures).

A query with no term left after analysis (e.g. stopwords only) stays in the run with no documents
(``{}``), so measures count it as a query with nothing found.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from importlib.metadata import version
from pathlib import Path
from typing import Iterable

from mlret_plugin.evaluation.analyzers import LanguageAnalysis, analysis_for
from mlret_plugin.staging import publish, remove_stale, staging_path

log = logging.getLogger(__name__)

INDEX_FORMAT = 1  # bump when the document layout below changes
METADATA_FILE = "mlret-index.json"
QUERY_CHUNK = 256  # queries per progress-bar step (and per Pyserini batch_search call)
ENGINES = ("lucene", "pyserini")


def default_cache_dir() -> Path:
    import ir_datasets

    return ir_datasets.util.home_path() / "mlret" / "bm25-indexes"


def docs_fingerprint(docs: list) -> str:
    """A short hash of the candidates' ids and texts (a changed collection gets a new index)."""
    h = hashlib.sha256()
    for doc in docs:
        h.update(doc.doc_id.encode())
        h.update(b"\0")
        h.update(doc.text.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _subset(subset):
    from mlret_plugin.datasets import Subset, parse_dataset_id

    if isinstance(subset, str):
        return parse_dataset_id(subset)
    if not isinstance(subset, Subset):
        raise TypeError(f"expected a dataset id or mlret_plugin.datasets.Subset, got {type(subset).__name__}")
    return subset


def _language_docs(collection: str, lang: str) -> list:
    from mlret_plugin.datasets import Subset

    return list(Subset(collection, (lang,), (lang,)).load().docs_iter())


def index_path(root: Path, collection: str, lang: str, docs: list) -> Path:
    """Where the index of these candidates lives under ``root`` (for the installed Pyserini and analysis),
    built or not; an incomplete folder there is an error."""
    if not docs:
        raise ValueError(f"{collection}/{lang} has no candidates to index")
    analysis = analysis_for(lang)
    name = f"{analysis.analyzer_id}--pyserini-{version('pyserini')}--v{INDEX_FORMAT}-{docs_fingerprint(docs)}"
    path = Path(root) / collection / lang / name
    if path.exists() and not (path / METADATA_FILE).is_file():
        raise RuntimeError(f"{path} exists but is not a complete mlret BM25 index (no {METADATA_FILE}); delete it")
    return path


def find_index(collection: str, lang: str, cache_dir: Path | None = None) -> Path:
    """The built index of ``collection``'s candidates in ``lang``; ``FileNotFoundError`` naming the build
    command when it has not been built (for this Pyserini version and analysis). Does not start the JVM."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = index_path(root, collection, lang, _language_docs(collection, lang))
    if not path.exists():
        raise FileNotFoundError(f"the BM25 index of {collection}/{lang} has not been built under {root} "
                                f"(pyserini {version('pyserini')}); build it with `mlret bm25 indexes "
                                f"{collection}/{lang} --build`")
    return path


def read_metadata(index: Path) -> dict:
    """The ``mlret-index.json`` of an index folder (collection, lang, analyzer, pyserini, docs, ...)."""
    meta = Path(index) / METADATA_FILE
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise RuntimeError(f"{meta}: not a readable mlret index description ({e})") from e


def list_indexes(cache_dir: Path | None = None) -> list[dict]:
    """Every complete index under the cache: its ``mlret-index.json`` fields plus ``path``, sorted by
    collection, language, path. Indexes of other Pyserini versions are listed too (their ``pyserini`` field
    says which)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    found = []
    for meta in root.glob(f"*/*/*/{METADATA_FILE}"):
        if meta.parent.name.startswith("."):  # a build in progress (temporary folder)
            continue
        found.append({**read_metadata(meta.parent), "path": meta.parent})
    return sorted(found, key=lambda f: (f.get("collection", ""), f.get("lang", ""), str(f["path"])))


def build_index(docs: Iterable, analysis: LanguageAnalysis, index_dir: Path, metadata: dict,
                total: int | None = None, show_progress_bar: bool = True) -> Path:
    """Write a Lucene index of ``docs`` (``doc_id``, ``text``) at ``index_dir``, atomically.

    The index is written into a temporary sibling folder and renamed to ``index_dir`` once complete;
    on any error (or KeyboardInterrupt) the temporary folder is removed and ``index_dir`` is not created.
    If another process finished the same index first, its index is kept.
    """
    from tqdm.auto import tqdm

    from mlret_plugin.evaluation.java import jclass

    index_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(index_dir, "BM25 index build")
    tmp = staging_path(index_dir)
    try:
        directory = jclass("org.apache.lucene.store.FSDirectory").open(jclass("java.io.File")(str(tmp)).toPath())
        config = jclass("org.apache.lucene.index.IndexWriterConfig")(analysis.lucene_analyzer())
        config.setSimilarity(jclass("org.apache.lucene.search.similarities.BM25Similarity")())
        writer = jclass("org.apache.lucene.index.IndexWriter")(directory, config)
        document_class = jclass("org.apache.lucene.document.Document")
        string_field = jclass("org.apache.lucene.document.StringField")
        text_field = jclass("org.apache.lucene.document.TextField")
        binary_dv = jclass("org.apache.lucene.document.BinaryDocValuesField")
        bytes_ref = jclass("org.apache.lucene.util.BytesRef")
        store = jclass("org.apache.lucene.document.Field$Store")
        count = 0
        try:
            for doc in tqdm(docs, total=total, desc=f"BM25 index {metadata.get('collection', '')}/{analysis.lang}",
                            unit="doc", disable=not show_progress_bar, leave=False):
                jdoc = document_class()
                # Anserini's layout: the id stored and as binary doc values (its searcher breaks score ties by id).
                jdoc.add(string_field("id", doc.doc_id, store.YES))
                jdoc.add(binary_dv("id", bytes_ref(doc.doc_id.encode("utf-8"))))
                jdoc.add(text_field("contents", analysis.prepare(doc.text), store.NO))
                writer.addDocument(jdoc)
                count += 1
            writer.forceMerge(1)  # one segment: deterministic, and the fastest to search
            writer.commit()
        finally:
            writer.close()
            directory.close()
        (tmp / METADATA_FILE).write_text(json.dumps({**metadata, "docs": count}, indent=1, ensure_ascii=False))
        publish(tmp, index_dir, lambda folder: (folder / METADATA_FILE).is_file(), "BM25 index")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index_dir


class LuceneBM25Searcher:
    """Lucene's BM25 on one index, queries built exactly as Pyserini's ``LuceneSearcher`` builds them.

    Same query (Anserini's ``BagOfWordsQueryGenerator`` over the index's analyzer), same similarity
    (Lucene's ``BM25Similarity(k1, b)``), same scores as ``LuceneSearcher.search`` up to Anserini's output
    adjustment (tested): Anserini rounds scores to 4 decimals and lowers tied scores by 1e-6 per rank (ties
    then follow doc ids); we keep Lucene's scores, so ties stay ties for ir_measures. Hits are read
    back as primitive arrays (Anserini's ``ScoredDocs``), which is about 3x cheaper through jnius than
    Pyserini's one Java object per hit. Score ties are ordered by index order, not by doc id.
    """

    def __init__(self, path: Path, analysis: LanguageAnalysis):
        from mlret_plugin.evaluation.java import jclass, start_jvm

        start_jvm()
        from jnius import cast

        directory = jclass("org.apache.lucene.store.FSDirectory").open(jclass("java.io.File")(str(path)).toPath())
        self._reader = jclass("org.apache.lucene.index.DirectoryReader").open(directory)
        # cast: jnius would otherwise pick IndexSearcher(IndexReaderContext) for a DirectoryReader.
        self._searcher = jclass("org.apache.lucene.search.IndexSearcher")(
            cast("org.apache.lucene.index.IndexReader", self._reader))
        self._analyzer = analysis.lucene_analyzer()
        self._generator = jclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
        self._scored_docs = jclass("io.anserini.search.ScoredDocs")
        self._bm25 = jclass("org.apache.lucene.search.similarities.BM25Similarity")
        self.set_bm25(0.9, 0.4)

    def set_bm25(self, k1: float, b: float) -> None:
        self._searcher.setSimilarity(self._bm25(float(k1), float(b)))

    def search(self, text: str, k: int) -> dict[str, float]:
        query = self._generator.buildQuery("contents", self._analyzer, text)
        hits = self._scored_docs.fromTopDocs(self._searcher.search(query, int(k)), self._searcher)
        return dict(zip(hits.docids, (float(s) for s in hits.scores)))

    def close(self) -> None:
        self._reader.close()


class BM25Retriever:
    """BM25 runs on LAReQA subsets through Pyserini; see the module docstring for the cross-lingual rule."""

    name: str = "bm25"

    def __init__(self, k1: float = 0.9, b: float = 0.4, cache_dir: Path | None = None, threads: int = 2,
                 show_progress_bar: bool = True, engine: str = "lucene"):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.engine = engine
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.k1, self.b = float(k1), float(b)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.threads = threads
        self.show_progress_bar = show_progress_bar
        self._searchers: dict[tuple[Path, str], object] = {}
        self._index_paths: dict[tuple[Path, str, str], Path] = {}
        # Fail fast: a missing / unusable Java is reported here, before any dataset or model work.
        from mlret_plugin.evaluation.java import lucene_searcher_class, start_jvm

        start_jvm()
        if engine == "pyserini":
            lucene_searcher_class()

    def __repr__(self) -> str:
        return f"BM25Retriever(k1={self.k1}, b={self.b})"

    # --- indexes ----------------------------------------------------------------------------------------------

    def index_dir(self, collection: str, lang: str) -> Path:
        """The Lucene index of ``collection``'s candidates in ``lang``, built on first use."""
        analysis = analysis_for(lang)  # fails before loading anything for a language without an analyzer
        root = self.cache_dir if self.cache_dir is not None else default_cache_dir()
        key = (root, collection, lang)
        if key not in self._index_paths:  # checked once per retriever: cross / pool runs reuse it
            self._index_paths[key] = self._find_or_build(root, collection, lang, analysis)
        return self._index_paths[key]

    def _find_or_build(self, root: Path, collection: str, lang: str, analysis: LanguageAnalysis) -> Path:
        docs = _language_docs(collection, lang)
        path = index_path(root, collection, lang, docs)
        if path.exists():
            return path
        fingerprint = docs_fingerprint(docs)
        pyserini_version = version("pyserini")
        metadata = {
            "collection": collection, "lang": lang, "analyzer": analysis.analyzer_id,
            "analysis": analysis.description, "pyserini": pyserini_version, "format": INDEX_FORMAT,
            "fingerprint": fingerprint, "indexed_text": "candidate sentence (LareqaDoc.text), no context",
        }
        start = time.perf_counter()
        build_index(docs, analysis, path, metadata, total=len(docs), show_progress_bar=self.show_progress_bar)
        log.info("built BM25 index %s (%d docs) in %.1fs", path, len(docs), time.perf_counter() - start)
        return path

    def _searcher(self, path: Path, analysis: LanguageAnalysis):
        searcher = self._searchers.get((path, self.engine))
        if searcher is None:
            if self.engine == "pyserini":
                from mlret_plugin.evaluation.java import lucene_searcher_class

                searcher = lucene_searcher_class()(str(path))
                searcher.set_analyzer(analysis.lucene_analyzer())
            else:
                searcher = LuceneBM25Searcher(path, analysis)
            self._searchers[(path, self.engine)] = searcher
        searcher.set_bm25(self.k1, self.b)  # k1 / b may have been changed on this retriever
        return searcher

    # --- search -------------------------------------------------------------------------------------------------

    def search_language(self, collection: str, dlang: str, queries: list[tuple[str, str]],
                        depth: int) -> dict[str, dict[str, float]]:
        """Top-``depth`` candidates in ``dlang`` for ``(query_id, text)`` pairs; every query id is a key."""
        from tqdm.auto import tqdm

        analysis = analysis_for(dlang)
        searcher = self._searcher(self.index_dir(collection, dlang), analysis)
        run: dict[str, dict[str, float]] = {qid: {} for qid, _ in queries}
        with tqdm(total=len(queries), desc=f"BM25 search {collection}/{dlang}", unit="q",
                  disable=not self.show_progress_bar, leave=False) as bar:
            for i in range(0, len(queries), QUERY_CHUNK):
                chunk = queries[i:i + QUERY_CHUNK]
                texts = [analysis.prepare(text) for _, text in chunk]
                qids = [qid for qid, _ in chunk]
                if self.engine == "pyserini":
                    hits = searcher.batch_search(texts, qids, k=depth, threads=self.threads)
                    for qid, qhits in hits.items():
                        run[qid] = {hit.docid: float(hit.score) for hit in qhits}
                else:
                    for qid, text in zip(qids, texts):
                        run[qid] = searcher.search(text, depth)
                bar.update(len(chunk))
        return run

    def run(self, subset: "mlret_plugin.datasets.Subset | str", depth: int = 1000) -> dict[str, dict[str, float]]:
        """ir_measures-style run {query_id: {doc_id: score}}; every query of the subset appears (an empty
        dict when nothing matched). ``subset``: a dataset id or a ``Subset`` (pools over chosen languages too)."""
        subset = _subset(subset)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        for lang in subset.dlangs:
            analysis_for(lang)  # every candidate language needs an analyzer before any work starts
        queries = [(q.query_id, q.text) for q in subset.load().queries_iter()]
        if len(subset.dlangs) == 1:
            return self.search_language(subset.collection, subset.dlangs[0], queries, depth)
        merged: dict[str, dict[str, float]] = {qid: {} for qid, _ in queries}
        for dlang in subset.dlangs:
            for qid, hits in self.search_language(subset.collection, dlang, queries, depth).items():
                merged[qid].update(hits)
        # The pool keeps the ``depth`` best by raw BM25 score (ties by doc id, for a deterministic cut).
        return {qid: dict(sorted(hits.items(), key=lambda x: (-x[1], x[0]))[:depth]) for qid, hits in merged.items()}

    def close(self) -> None:
        for searcher in self._searchers.values():
            searcher.close()
        self._searchers.clear()


def pyserini_topics(subset: "mlret_plugin.datasets.Subset | str",
                    pretokenized: bool = False) -> tuple[list[tuple[str, str]], list[str]]:
    """Queries of ``subset`` as ``(query_id, text)`` for Pyserini's TSV topic reader (``qid<TAB>text``), and
    the ids of queries left out because no text (or, pre-tokenised, no term) is left.

    Plain: the query NFC-normalised (as our BM25 feeds its analyzer), whitespace runs made single spaces.
    ``pretokenized``: the terms our analyzer of the candidate language produces, space-separated, for
    Pyserini's ``--pretokenized`` (whitespace analyzer), which then searches exactly our query terms. A query
    with nothing left cannot be a TSV topic line; it is left out (evaluation counts it as 0, as a query our
    BM25 finds nothing for)."""
    import unicodedata

    subset = _subset(subset)
    if pretokenized and len(subset.dlangs) != 1:
        raise ValueError(f"{subset.dataset_id} has candidates in {len(subset.dlangs)} languages, one index each; "
                         "pre-tokenised topics are analysed for one index: use a mono or cross-lingual id such as "
                         f"{subset.collection}/{subset.dlangs[0]} or {subset.collection}/{{q}}-{subset.dlangs[0]}")
    analyzer = analysis = None
    if pretokenized:
        from mlret_plugin.evaluation.java import start_jvm

        start_jvm()  # before pyserini is imported
        from pyserini.analysis import Analyzer

        analysis = analysis_for(subset.dlangs[0])
        analyzer = Analyzer(analysis.lucene_analyzer())
    topics, dropped = [], []
    for query in subset.load().queries_iter():
        if not query.query_id or any(c.isspace() for c in query.query_id):
            raise ValueError(f"{subset.dataset_id}: query id {query.query_id!r} cannot be a TSV topic / TREC run id")
        if analyzer is not None:
            text = " ".join(analyzer.analyze(analysis.prepare(query.text)))
        else:
            text = " ".join(unicodedata.normalize("NFC", query.text).split())
        if text:
            topics.append((query.query_id, text))
        else:
            dropped.append(query.query_id)
    return topics, dropped
