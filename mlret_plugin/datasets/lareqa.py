"""XQuAD-R and MLQA-R (LAReQA, Roy et al. 2020, arXiv 2004.05484) for ir_datasets.

Candidates are the sentences of each paragraph (the files' ``sentences`` / ``sentence_breaks``); the
relevant candidate of a question is the sentence holding its ``answer_start``. Translations of one
question share its source id, so a question is relevant to the answer sentence of every candidate
language that has that id. One ``_init()`` registers every subset: the pool, each language, each pair.
"""

import functools
import hashlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Iterator, NamedTuple

import ir_datasets
from ir_datasets.datasets.base import Dataset, YamlDocumentation
from ir_datasets.formats import BaseDocs, BaseQrels, BaseQueries, TrecQrel
from ir_datasets.indices import DEFAULT_DOCSTORE_OPTIONS, PickleLz4FullStore
from ir_datasets.util import MetadataComponent, MetadataProvider

from mlret_plugin.compat import ir_datasets_download, ir_datasets_is_registered
from mlret_plugin.datasets.ids import doc_id, group_id, lang_of, query_id  # noqa: F401  (lang_of re-exported)
from mlret_plugin.datasets.subsets import COLLECTIONS, Subset, parse_dataset_id

CACHE_NAME = "mlret/lareqa"
QREL_DEFS = {1: "The candidate sentence contains the answer (answer_start) to the question"}
SEED_HINT = "seed the cache from a local copy with `mlret datasets seed DIR` (DIR/{xquad-r,mlqa-r}/{lang}.json)"


class LareqaDoc(NamedTuple):
    doc_id: str
    text: str
    context: str
    lang: str
    title: str

    def default_text(self) -> str:
        return self.text


class LareqaQuery(NamedTuple):
    query_id: str
    text: str
    lang: str

    def default_text(self) -> str:
        return self.text


class ParsedFile(NamedTuple):
    docs: list[LareqaDoc]
    queries: list[LareqaQuery]
    answers: dict[str, str]  # source question id -> doc_id of its answer sentence


def _answer_sentence(breaks: list[list[int]], answer_start: int) -> int | None:
    # Breaks are [start, end): the last sentence starting at or before the answer holds it. An answer
    # on the separator right after a sentence (end, inclusive) still belongs to that sentence.
    best = None
    for i, (start, _end) in enumerate(breaks):
        if start <= answer_start:
            best = i
    if best is None or answer_start > breaks[best][1]:
        return None
    return best


def parse_lareqa_file(path: Path, lang: str) -> ParsedFile:
    """Parse one LAReQA JSON file (SQuAD format plus ``sentences`` / ``sentence_breaks``)."""
    try:
        data = json.loads(Path(path).read_bytes())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); the file is truncated or corrupt, seed it again") from e
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{path}: expected a SQuAD-format object with a 'data' list")
    docs: list[LareqaDoc] = []
    queries: list[LareqaQuery] = []
    answers: dict[str, str] = {}
    for a, article in enumerate(data["data"]):
        title = article.get("title", "")
        for p, para in enumerate(article.get("paragraphs", [])):
            where = f"{path}: article {a} paragraph {p}"
            sentences, breaks = para.get("sentences"), para.get("sentence_breaks")
            if not isinstance(sentences, list) or not isinstance(breaks, list) or len(sentences) != len(breaks):
                raise ValueError(f"{where}: expected 'sentences' and 'sentence_breaks' lists of equal length")
            docs += [LareqaDoc(doc_id(lang, a, p, s), text, para["context"], lang, title) for s, text in enumerate(sentences)]
            for qa in para.get("qas", []):
                if not qa.get("answers"):
                    raise ValueError(f"{where}: question {qa.get('id')!r} has no answers")
                start = qa["answers"][0]["answer_start"]
                s = _answer_sentence(breaks, start)
                if s is None:
                    raise ValueError(
                        f"{where}: question {qa['id']!r} has answer_start={start}, outside every sentence "
                        f"break {breaks}"
                    )
                if qa["id"] in answers:
                    raise ValueError(f"{where}: question id {qa['id']!r} appears twice in the file")
                answers[qa["id"]] = doc_id(lang, a, p, s)
                queries.append(LareqaQuery(query_id(lang, qa["id"]), qa["question"], lang))
    return ParsedFile(docs, queries, answers)


def _md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def _shipped_downloads() -> dict:
    return json.loads(pkgutil.get_data("mlret_plugin", "datasets/downloads.json"))


def downloads_config() -> dict:
    """The source files (url, expected_md5, cache_path) per collection and language."""
    return _shipped_downloads()


def cache_dir() -> Path:
    return ir_datasets.util.home_path() / CACHE_NAME


class LareqaSource:
    """One source file: fetched by ir_datasets' downloader into the cache, md5-checked, parsed once.

    The cache location and expected md5 are read at use, not at registration, so a changed
    IR_DATASETS_HOME takes effect in a running process.
    """

    def __init__(self, collection: str, lang: str):
        self.collection, self.lang = collection, lang

    def _entry(self) -> dict:
        return downloads_config()[self.collection][self.lang]

    def path(self) -> Path:
        download = ir_datasets_download(downloads_config(), self.collection, cache_dir())[self.lang]
        cached = Path(download.path(force=False))
        if not cached.exists():
            try:
                download.path()
            except Exception as e:  # offline, HTTP error, md5 mismatch on download
                raise FileNotFoundError(
                    f"{self.collection}/{self.lang}: {cached} is not in the cache and could not be downloaded "
                    f"({e}); {SEED_HINT}"
                ) from e
        return cached

    def parsed(self) -> ParsedFile:
        path = self.path()
        stat = path.stat()
        return _parse_checked(str(path), stat.st_mtime_ns, stat.st_size, self.lang, self._entry()["expected_md5"])


@functools.lru_cache(maxsize=64)
def _parse_checked(path: str, _mtime_ns: int, _size: int, lang: str, expected_md5: str) -> ParsedFile:
    # mtime and size are part of the cache key: a file replaced in the cache is parsed again.
    actual = _md5(Path(path))
    if actual != expected_md5:
        raise ValueError(
            f"{path}: md5 {actual}, expected {expected_md5} (truncated or a different version); "
            f"delete it and {SEED_HINT}"
        )
    return parse_lareqa_file(Path(path), lang)


def _sources(collection: str) -> dict[str, LareqaSource]:
    return {lang: LareqaSource(collection, lang) for lang in COLLECTIONS[collection]}


class LareqaDocs(BaseDocs):
    def __init__(self, subset: Subset, sources: dict[str, LareqaSource]):
        super().__init__()
        self._subset, self._sources = subset, [sources[lang] for lang in subset.dlangs]

    @ir_datasets.util.use_docstore
    def docs_iter(self) -> Iterator[LareqaDoc]:
        for source in self._sources:
            yield from source.parsed().docs

    def docs_cls(self):
        return LareqaDoc

    def docs_store(self, field: str = "doc_id", options=DEFAULT_DOCSTORE_OPTIONS):
        langs = "-".join(self._subset.dlangs)
        return PickleLz4FullStore(
            path=f"{cache_dir() / self._subset.collection / 'docstore' / langs}.pklz4",
            init_iter_fn=self.docs_iter,
            data_cls=LareqaDoc,
            lookup_field=field,
            index_fields=["doc_id"],
            count_hint=self.docs_count,
            options=options,
        )

    def docs_count(self) -> int:
        return sum(len(source.parsed().docs) for source in self._sources)

    def docs_namespace(self) -> str:
        return f"mlret/{self._subset.collection}"

    def docs_lang(self) -> str | None:
        return self._subset.dlangs[0] if len(self._subset.dlangs) == 1 else None


class _Judged:
    """The queries of a subset that have a relevant candidate, and their qrels."""

    def __init__(self, subset: Subset, sources: dict[str, LareqaSource]):
        self._subset, self._sources = subset, sources

    def pairs(self) -> Iterator[tuple[LareqaQuery, list[str]]]:
        answers = [self._sources[d].parsed().answers for d in self._subset.dlangs]
        for qlang in self._subset.qlangs:
            for query in self._sources[qlang].parsed().queries:
                gid = group_id(query.query_id)
                relevant = [a[gid] for a in answers if gid in a]
                if relevant:  # MLQA-R: a question has an answer only in some languages
                    yield query, relevant


class LareqaQueries(BaseQueries):
    def __init__(self, subset: Subset, judged: _Judged):
        super().__init__()
        self._subset, self._judged = subset, judged

    def queries_iter(self) -> Iterator[LareqaQuery]:
        for query, _ in self._judged.pairs():
            yield query

    def queries_cls(self):
        return LareqaQuery

    def queries_namespace(self) -> str:
        return f"mlret/{self._subset.collection}"

    def queries_lang(self) -> str | None:
        return self._subset.qlangs[0] if len(self._subset.qlangs) == 1 else None


class LareqaQrels(BaseQrels):
    def __init__(self, judged: _Judged):
        self._judged = judged

    def qrels_iter(self) -> Iterator[TrecQrel]:
        for query, relevant in self._judged.pairs():
            for did in relevant:
                yield TrecQrel(query.query_id, did, 1, "0")

    def qrels_cls(self):
        return TrecQrel

    def qrels_defs(self) -> dict[int, str]:
        return QREL_DEFS


class _PackageYamlDocumentation(YamlDocumentation):
    """YamlDocumentation reading this package's YAML (ir_datasets' own reads only ir_datasets)."""

    def get_key(self, key):
        if not self._contents:
            yaml = ir_datasets.lazy_libs.yaml()
            self._contents = yaml.load(pkgutil.get_data("mlret_plugin", self._file), Loader=yaml.BaseLoader)
        return self._contents.get(key)


_metadata = MetadataProvider(lambda: json.loads(pkgutil.get_data("mlret_plugin", "datasets/metadata.json")))
_documentation = _PackageYamlDocumentation("datasets/lareqa.yaml")


def build_subset(subset: Subset, sources: dict[str, LareqaSource] | None = None) -> Dataset:
    """An ir_datasets Dataset for any subset (registered or not)."""
    sources = sources or _sources(subset.collection)
    judged = _Judged(subset, sources)
    parts = [LareqaDocs(subset, sources), LareqaQueries(subset, judged), LareqaQrels(judged)]
    doc_key = subset.collection if subset.setting == "multi" else f"{subset.collection}/{subset.setting}"
    dataset = Dataset(*parts, _documentation(doc_key))
    return Dataset(MetadataComponent(subset.dataset_id, dataset, _metadata), dataset)


def load_subset(subset: Subset) -> Dataset:
    """Registered ids through ``ir_datasets.load`` (registering them first); pools over chosen languages
    built on the fly."""
    _init()
    try:
        registered = parse_dataset_id(subset.dataset_id) == subset
    except ValueError:
        registered = False
    return ir_datasets.load(subset.dataset_id) if registered else build_subset(subset)


def own_language_answers(dataset: Dataset) -> dict[str, str]:
    """query_id -> the relevant candidate in the query's own language (its answer sentence)."""
    return {q.query_id: q.doc_id for q in dataset.qrels_iter()
            if q.relevance > 0 and lang_of(q.doc_id) == lang_of(q.query_id)}


class UnknownDatasetId(KeyError):
    """An ``xquad-r/...`` or ``mlqa-r/...`` id that is not one of the plugin's (a KeyError, as ir_datasets
    raises for unknown ids, whose message says what was expected)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _unknown_id(dataset_id: str, groups: tuple) -> Dataset:
    """Registry pattern for unregistered ids under the plugin's prefixes: every valid id is registered,
    so this only turns ir_datasets' bare ``KeyError: 'xquad-r/xx'`` into one naming the fix."""
    try:
        parse_dataset_id(dataset_id)
    except ValueError as e:
        raise UnknownDatasetId(f"{e} (ids: `mlret datasets list`)") from None
    raise UnknownDatasetId(f"{dataset_id!r} is a valid mlret id but is not registered; call mlret_plugin.register()")


_registered = False


def _init() -> None:
    """Register every subset of both collections with ir_datasets (idempotent)."""
    global _registered
    if _registered:
        return
    from mlret_plugin.datasets.subsets import dataset_ids

    registry = ir_datasets.registry
    sources = {collection: _sources(collection) for collection in COLLECTIONS}
    for dataset_id in dataset_ids():
        if ir_datasets_is_registered(dataset_id):  # another copy of the plugin registered it already
            continue
        subset = parse_dataset_id(dataset_id)
        registry.register(dataset_id, build_subset(subset, sources[subset.collection]))
    registry.register_pattern(rf"^({'|'.join(map(re.escape, COLLECTIONS))})/(.*)$", _unknown_id)
    _registered = True
