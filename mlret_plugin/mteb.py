"""MTEB retrieval tasks backed by the plugin's LAReQA ir_datasets entries, and an MTEB model with the plugin's prompts.

Six ``AbsTaskRetrieval`` tasks (``task_names()``), whose MTEB subsets are the plugin's dataset ids:

- ``XQuAD-R-Mono`` / ``MLQA-R-Mono``: one subset per language (``en`` is ``xquad-r/en``);
- ``XQuAD-R-Cross`` / ``MLQA-R-Cross``: one subset per ordered pair (``de-en`` is ``xquad-r/de-en``);
- ``XQuAD-R-Pool`` / ``MLQA-R-Pool``: the multilingual pool (subset ``default`` is ``xquad-r``).

``get_tasks("xquad-r/en", "mlqa-r")`` picks tasks by dataset id (restricted to that subset) or by task name.
The data come from the ir_datasets cache (seeded with ``mlret datasets seed``), never from the Hugging Face
hub. Candidates are the sentences, the plugin's ``candidates="sentence"``: MTEB encodes one text per
document, so the plugin's default (sentence, paragraph) tokenizer pair has no MTEB form.

``encoder(model)`` wraps a SentenceTransformer (or a model spec such as ``offline-e5``) for ``mteb.evaluate``
with the plugin's prompt rule (``mlret_plugin.prompts``): the model's ``query`` prompt for questions, its
``passage`` (else ``document``) prompt for candidates, or the prompts given. A SentenceTransformer passed to
``mteb.evaluate`` directly gets MTEB's rule instead (``query`` / ``document`` prompts; a ``passage`` prompt
is ignored). How MTEB's measures relate to ir_measures': docs/mteb.md.

mteb is an optional dependency (``pip install mlret-plugin[mteb]``), imported only when a task or an encoder
is built.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from mlret_plugin.datasets.subsets import COLLECTIONS, Subset, parse_dataset_id
from mlret_plugin.prompts import resolve_prompt

log = logging.getLogger(__name__)

MTEB_EXTRA_HINT = "pip install 'mlret-plugin[mteb]' (mteb==2.26.24)"
SETTINGS = ("mono", "cross", "pool")
SPLIT = "test"
# The plugin's language codes -> ISO 639-3 and script, as MTEB names languages (its own XQuAD / MLQA tasks' codes).
LANGUAGE_SCRIPTS = {
    "ar": "arb-Arab", "de": "deu-Latn", "el": "ell-Grek", "en": "eng-Latn", "es": "spa-Latn", "hi": "hin-Deva",
    "ru": "rus-Cyrl", "th": "tha-Thai", "tr": "tur-Latn", "vi": "vie-Latn", "zh": "zho-Hans",
}
_TITLES = {"xquad-r": "XQuAD-R", "mlqa-r": "MLQA-R"}
_SOURCES = {
    "xquad-r": {
        "license": "cc-by-sa-4.0",
        "sample_creation": "human-translated",
        "about": "XQuAD-R from LAReQA (Roy et al., EMNLP 2020): the 240 paragraphs and 1,190 questions of XQuAD "
                 "(professional translations of SQuAD v1.1 dev) in 11 languages, split into sentences.",
    },
    "mlqa-r": {
        "license": "cc-by-nc-4.0",
        "sample_creation": "found",
        "about": "MLQA-R from LAReQA (Roy et al., EMNLP 2020): the MLQA dev set in 7 languages split into sentences; "
                 "a question has answers only in the languages MLQA has it in. Licence CC BY-NC 4.0: non-commercial "
                 "use only.",
    },
}
_CITATION = r"""
@inproceedings{roy2020lareqa,
  archiveprefix = {arXiv},
  author = {Roy, Uma and Constant, Noah and Al-Rfou, Rami and Barua, Aditya and Phillips, Aaron and Yang, Yinfei},
  booktitle = {Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing (EMNLP)},
  eprint = {2004.05484},
  title = {{LAReQA}: Language-Agnostic Answer Retrieval from a Multilingual Pool},
  year = {2020},
}
"""


def _import_mteb():
    try:
        import mteb
    except ImportError as e:
        raise ImportError(f"mlret_plugin.mteb needs mteb: {MTEB_EXTRA_HINT} ({e})") from e
    return mteb


def task_name(collection: str, setting: str) -> str:
    """``XQuAD-R-Mono``, ``MLQA-R-Pool``, ... (``setting`` in mono, cross, pool)."""
    if collection not in _TITLES:
        raise ValueError(f"unknown collection {collection!r}; expected one of {sorted(_TITLES)}")
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")
    return f"{_TITLES[collection]}-{setting.capitalize()}"


def task_names() -> list[str]:
    """The names of every task (two collections x mono, cross, pool)."""
    return [task_name(c, s) for c in COLLECTIONS for s in SETTINGS]


def _subsets(collection: str, setting: str) -> dict[str, Subset]:
    """MTEB subset name -> the plugin's subset."""
    langs = COLLECTIONS[collection]
    if setting == "mono":
        return {lang: Subset(collection, (lang,), (lang,)) for lang in langs}
    if setting == "cross":
        return {f"{q}-{d}": Subset(collection, (q,), (d,)) for q in langs for d in langs if q != d}
    return {"default": Subset(collection, langs, langs)}


def _data_revision(collection: str) -> str:
    """A version of the data: a hash of the md5s the source files are checked against."""
    from mlret_plugin.datasets.lareqa import downloads_config

    md5s = {lang: entry["expected_md5"] for lang, entry in sorted(downloads_config()[collection].items())}
    return hashlib.sha256(json.dumps(md5s, sort_keys=True).encode()).hexdigest()[:16]


def _metadata(collection: str, setting: str, revision: str):
    from mteb.abstasks.task_metadata import TaskMetadata

    source = _SOURCES[collection]
    subsets = _subsets(collection, setting)
    what = {"mono": "Questions against the candidate sentences of their own language; one subset per language.",
            "cross": "Questions in one language against the candidate sentences of another; one subset per "
                     "ordered pair (query language-candidate language).",
            "pool": "LAReQA's multilingual pool: every question against the candidate sentences of every "
                    "language; relevant are the answer sentences in all languages."}[setting]
    if setting == "pool":
        eval_langs: Any = [LANGUAGE_SCRIPTS[lang] for lang in COLLECTIONS[collection]]
    else:
        eval_langs = {name: list(dict.fromkeys(LANGUAGE_SCRIPTS[lang] for lang in (*s.qlangs, *s.dlangs)))
                      for name, s in subsets.items()}  # query language, then candidate language
    ids = {"mono": f"{collection}/{{lang}}", "cross": f"{collection}/{{q}}-{{d}}", "pool": collection}[setting]
    return TaskMetadata(
        name=task_name(collection, setting),
        description=f"{source['about']} {what} Served by mlret-plugin from its ir_datasets entries ({ids}) in the "
                    "local ir_datasets cache (seed it with `mlret datasets seed DIR`); candidates are the sentences.",
        dataset={"path": f"ir_datasets:{collection}", "revision": revision},
        reference="https://github.com/google-research-datasets/lareqa",
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[SPLIT],
        eval_langs=eval_langs,
        main_score="ndcg_at_10",
        domains=["Encyclopaedic", "Written"],
        task_subtypes=["Question answering"],
        license=source["license"],
        annotations_creators="human-annotated",
        dialect=[],
        sample_creation=source["sample_creation"],
        bibtex_citation=_CITATION,
        contributed_by="mlret-plugin",
    )


def split_data(subset: Subset) -> dict:
    """MTEB's retrieval split (corpus, queries, relevant_docs, top_ranked) of one plugin subset, from ir_datasets."""
    import datasets

    dataset = subset.load()
    docs = list(dataset.docs_iter())
    queries = list(dataset.queries_iter())
    relevant: dict[str, dict[str, int]] = {}
    for qrel in dataset.qrels_iter():
        relevant.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
    return {
        "corpus": datasets.Dataset.from_dict({"id": [d.doc_id for d in docs], "text": [d.text for d in docs]}),
        "queries": datasets.Dataset.from_dict({"id": [q.query_id for q in queries], "text": [q.text for q in queries]}),
        "relevant_docs": relevant,
        "top_ranked": None,
    }


def _task_class(collection: str, setting: str) -> type:
    # Keyed by the data revision too: a changed downloads config (another version of the files) gets new metadata.
    return _task_class_for(collection, setting, _data_revision(collection))


@functools.cache
def _task_class_for(collection: str, setting: str, revision: str) -> type:
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    subsets = _subsets(collection, setting)

    def load_data(self, num_proc: int | None = None, *, timer=None, **kwargs) -> None:
        """The chosen subsets from the ir_datasets cache (no hub access)."""
        if self.data_loaded:
            return
        self.dataset = {}
        for name in self.hf_subsets:
            data = split_data(subsets[name])
            log.info("%s %s: %d queries, %d candidates", self.metadata.name, name, len(data["queries"]),
                     len(data["corpus"]))
            self.dataset[name] = {split: data for split in self.eval_splits}
        self.dataset_transform(num_proc=num_proc)
        self.data_loaded = True

    name = task_name(collection, setting).replace("-", "")
    return type(name, (AbsTaskRetrieval,), {
        "__module__": __name__,
        "__doc__": f"{task_name(collection, setting)}: MTEB retrieval over mlret-plugin's {collection} entries.",
        "metadata": _metadata(collection, setting, revision),
        "load_data": load_data,
        "plugin_subsets": subsets,
    })


def get_tasks(*specs: str) -> list:
    """MTEB tasks by task name (``XQuAD-R-Mono``) or by the plugin's dataset id (``xquad-r/en``, ``xquad-r/de-en``,
    ``xquad-r``: the task restricted to that subset); no argument: every task."""
    _import_mteb()
    if not specs:
        return [_task_class(c, s)() for c in COLLECTIONS for s in SETTINGS]
    by_name = {task_name(c, s): (c, s) for c in COLLECTIONS for s in SETTINGS}
    tasks = []
    for spec in specs:
        if spec in by_name:
            tasks.append(_task_class(*by_name[spec])())
            continue
        try:
            subset = parse_dataset_id(spec)
        except ValueError as e:
            raise ValueError(f"{spec!r} is neither an mlret MTEB task ({', '.join(by_name)}) nor a dataset id ({e})") \
                from None
        setting = "pool" if subset.setting == "multi" else subset.setting
        name = next(n for n, s in _subsets(subset.collection, setting).items() if s == subset)
        tasks.append(_task_class(subset.collection, setting)().filter_languages(None, hf_subsets=[name]))
    return tasks


def get_task(spec: str):
    """One task (see ``get_tasks``)."""
    return get_tasks(spec)[0]


@functools.cache
def _encoder_class() -> type:
    from mteb.models import SentenceTransformerEncoderWrapper

    class PluginPromptEncoder(SentenceTransformerEncoderWrapper):
        """mteb's SentenceTransformer wrapper with fixed query / document prompts.

        ``SentenceTransformerEncoderWrapper.__init__`` is not called: given prompts, it writes them into
        ``model.prompts`` (changing the caller's model) and warns about prompt names mteb does not know (e.g.
        "passage"). The attributes set here are the ones its ``encode`` and ``similarity`` read (mteb 2.26.24,
        pinned by the extra; tests/test_mteb.py checks the prompts reach the model)."""

        def __init__(self, model, query_prompt: str, passage_prompt: str, meta) -> None:
            self.model = model
            self.mteb_model_meta = meta
            # mteb passes the prompt text to encode_query / encode_document; "" means none there too.
            self.model_prompts = {"query": query_prompt, "document": passage_prompt}
            self.fps = self.max_frames = self.num_frames = self.target_sampling_rate = self.max_samples = None

    return PluginPromptEncoder


def encoder(model, query_prompt: str | None = None, passage_prompt: str | None = None, name: str | None = None):
    """``model`` (a SentenceTransformer, or a spec for ``mlret_plugin.load_model``: a path, hub id or alias such as
    ``offline-e5``) as an MTEB encoder with the plugin's prompts.

    ``query_prompt`` / ``passage_prompt``: None = the model's own (``query``; ``passage``, else ``document``), a
    string (also "") overrides, as in ``DenseRetriever``. ``name`` (``org/model``, MTEB's result folder) defaults to
    ``mlret/{model name}``; the revision is a hash of the weights, tokenizer, modules and prompts, so results of
    a changed model or other prompts never reuse cached ones.
    """
    _import_mteb()
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    from mlret_plugin.encoding import encoder_fingerprint

    if isinstance(model, (str, Path)):
        from mlret_plugin.model import load_model
        from mlret_plugin.models.specs import model_name, resolve_model_spec

        resolved = resolve_model_spec(model)
        if resolved is None:
            raise ValueError(f"model {str(model)!r}: no dense model is available (see the warning above)")
        model, short = load_model(resolved), model_name(resolved)
    else:
        card = getattr(model, "model_card_data", None)
        short = Path(str(getattr(card, "model_name", None) or getattr(card, "base_model", None) or "model")).name
    if name is not None and "/" not in name:
        raise ValueError(f"name={name!r}: MTEB model names are 'organisation/model', e.g. 'mlret/{name}'")
    query, query_source = resolve_prompt(model, query_prompt, "query")
    passage, passage_source = resolve_prompt(model, passage_prompt, "passage")
    log.info("MTEB encoder: query prompt %r (%s), passage prompt %r (%s)", query, query_source, passage,
             passage_source)
    similarity = getattr(model, "similarity_fn_name", None)
    meta = ModelMeta.create_empty(overwrites=dict(
        name=name or f"mlret/{short}",
        revision=encoder_fingerprint(model, query_prompt=query, passage_prompt=passage, use="mteb")[:16],
        max_tokens=getattr(model, "max_seq_length", None),
        embed_dim=model.get_embedding_dimension(),
        similarity_fn_name=ScoringFunction.from_str(similarity) if similarity else None,
        framework=["Sentence Transformers", "PyTorch"],
    ))
    return _encoder_class()(model, query, passage, meta)


__all__ = ["LANGUAGE_SCRIPTS", "SETTINGS", "encoder", "get_task", "get_tasks", "split_data", "task_name", "task_names"]
