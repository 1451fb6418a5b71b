"""A DenseRetriever whose candidates carry noisy contexts (``noise.add_noise``); queries and qrels untouched.

Query embeddings depend on the model only, so retrievers of one model at several noise levels can share
them (``shared_queries``): only the candidates are re-encoded per noise level.
"""
from __future__ import annotations

from mlret_plugin.datasets import COLLECTIONS, Subset
from mlret_plugin.evaluation.dense import DenseRetriever
from mlret_plugin.experiments.noise import NoiseSpec, NoiseStats, add_noise


def pair_overhead(tokenizer) -> int:
    """Special tokens the tokenizer adds around a (sentence, context) pair: 3 for BERT, 4 for XLM-R."""
    a, b = "a", "b"
    pair = len(tokenizer(a, b)["input_ids"])
    return pair - len(tokenizer(a, add_special_tokens=False)["input_ids"]) - len(tokenizer(b, add_special_tokens=False)["input_ids"])


class NoisyDenseRetriever(DenseRetriever):
    def __init__(self, model, noise: NoiseSpec, shared_queries: dict | None = None, **kwargs):
        candidates = kwargs.get("candidates", "context")
        if noise.level > 0 and candidates != "context":
            raise ValueError(
                f"noise {noise.label} lengthens the candidates' context, but candidates={candidates!r} encodes the "
                "sentence alone; use candidates='context' (or noise 0)"
            )
        super().__init__(model, **kwargs)
        self.noise = noise
        self.noise_stats: dict[str, NoiseStats] = {}  # language -> what the transform achieved
        if shared_queries is not None:
            self._queries = shared_queries
        self._all_docs: dict[tuple[str, str], list] = {}
        self.input_lengths: dict[str, object] = {}  # language -> Counter of candidate token lengths (density)

    def _raw_docs(self, collection: str, lang: str) -> list:
        key = (collection, lang)
        if key not in self._all_docs:
            self._all_docs[key] = list(Subset(collection, (lang,), (lang,)).load().docs_iter())
        return self._all_docs[key]

    def _lang_docs(self, collection: str, lang: str):
        key = (collection, lang)
        if key not in self._docs:
            docs = self._raw_docs(collection, lang)
            if self.noise.level > 0:
                # Mixed noise draws from every language of the collection (fixed, so a language's noisy
                # candidates are the same whatever pool they are evaluated in).
                source = [d for other in COLLECTIONS[collection] for d in self._raw_docs(collection, other)] \
                    if self.noise.mixed else docs
                docs, stats = add_noise(
                    docs, self.noise, source_docs=source, tokenizer=self.model.tokenizer,
                    max_length=self.model.max_seq_length, pair_overhead=pair_overhead(self.model.tokenizer),
                )
                self.noise_stats[lang] = stats
            if self.candidates == "context":
                inputs = [(self.passage_prompt + d.text, d.context) for d in docs]
            else:
                inputs = [self.passage_prompt + d.text for d in docs]
            from mlret_plugin.experiments.density import input_lengths

            self.input_lengths[lang] = input_lengths(self.model, inputs)
            self._docs[key] = ([d.doc_id for d in docs], self._encode(inputs, f"{collection}/{lang} candidates"))
        return self._docs[key]

    def lengths_for(self, langs) -> dict[int, int]:
        """{token length: candidates} over ``langs`` (the inputs as encoded)."""
        total: dict[int, int] = {}
        for lang in langs:
            for length, n in self.input_lengths.get(lang, {}).items():
                total[length] = total.get(length, 0) + n
        return total

    def stats_for(self, langs) -> dict:
        total = NoiseStats()
        for lang in langs:
            s = self.noise_stats.get(lang)
            if s is not None:
                total.paragraphs += s.paragraphs
                total.original_tokens += s.original_tokens
                total.distractor_tokens += s.distractor_tokens
                total.capped += s.capped
        return total.as_dict()
