"""Tiny random encoders for tests: a WordPiece tokenizer trained on the fly and BERT / XLM-R / ModernBERT
sentence-transformers models with random weights (hidden 48, 2 layers, 4 heads, >= 512 positions,
mean pooling). Each helper takes well under 2 s; nothing is downloaded.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

ARCHS = ("bert", "xlm-roberta", "modernbert")

# A few sentences in the LAReQA languages, enough for a small WordPiece vocabulary.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Where was the treaty signed and who signed it?",
    "The river flows through the capital city before it reaches the sea.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Wo wurde der Vertrag unterzeichnet?",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "¿Dónde se firmó el tratado y quién lo firmó?",
    "Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "Где был подписан договор?",
    "Hızlı kahverengi tilki tembel köpeğin üzerinden atlar.",
    "الثعلب البني السريع يقفز فوق الكلب الكسول.",
    "Con cáo nâu nhanh nhẹn nhảy qua con chó lười.",
    "สุนัขจิ้งจอกสีน้ำตาลกระโดดข้ามสุนัขขี้เกียจ",
    "敏捷的棕色狐狸跳过了懒狗。条约是在哪里签署的？",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 1999 2024 and punctuation , . ; : ! ? ( ) - ' \"",
]
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_tokenizer_json: str | None = None  # trained once per process


def _trained_tokenizer_json() -> str:
    global _tokenizer_json
    if _tokenizer_json is None:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=_SPECIALS, show_progress=False)
        tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        _tokenizer_json = tok.to_str()
    return _tokenizer_json


def train_tiny_tokenizer(tmp_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer (~600 tokens, BERT-style specials) trained on a small multilingual text list.

    With ``tmp_dir`` it is also saved there (``save_pretrained``)."""
    tok = Tokenizer.from_str(_trained_tokenizer_json())
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    if tmp_dir is not None:
        fast.save_pretrained(str(tmp_dir))
    return fast


def tiny_config(arch: str, tokenizer: PreTrainedTokenizerFast, hidden: int = 48, heads: int = 4, layers: int = 2):
    """A transformers config for ``arch`` sized for tests, with the tokenizer's special-token ids."""
    from transformers import BertConfig, ModernBertConfig, XLMRobertaConfig

    ids = dict(
        pad_token_id=tokenizer.pad_token_id,
        vocab_size=len(tokenizer),
    )
    # initializer_range 0.1 (not 0.02): peaked attention, so pattern changes show in the embeddings.
    common = dict(hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=layers, intermediate_size=2 * hidden,
                  initializer_range=0.1)
    if arch == "bert":
        return BertConfig(max_position_embeddings=512, **common, **ids)
    if arch == "xlm-roberta":
        # RoBERTa positions start after the padding index, so it needs a few extra slots for 512 tokens.
        return XLMRobertaConfig(max_position_embeddings=512 + tokenizer.pad_token_id + 2, **common, **ids)
    if arch == "modernbert":
        return ModernBertConfig(
            max_position_embeddings=512,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            global_attn_every_n_layers=2,
            local_attention=64,
            **common,
            **ids,
        )
    raise ValueError(f"unknown tiny arch {arch!r}; expected one of {ARCHS}")


def tiny_hf_dir(arch: str, tmp_path: str | Path, seed: int = 0, heads: int = 4) -> Path:
    """Save a random-weight HF model of ``arch`` plus the tiny tokenizer to ``tmp_path/hf-{arch}``."""
    from transformers import AutoModel

    out = Path(tmp_path) / (f"hf-{arch}" if heads == 4 else f"hf-{arch}-h{heads}")
    if (out / "config.json").is_file():
        return out
    tokenizer = train_tiny_tokenizer(out)
    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_config(arch, tokenizer, heads=heads))
    model.save_pretrained(str(out))
    return out


def tiny_sentence_transformer(arch: str = "bert", tmp_path: str | Path | None = None, seed: int = 0, heads: int = 4):
    """A SentenceTransformer (Transformer + mean Pooling) around a random tiny ``arch`` encoder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    if tmp_path is None:
        tmp_path = tempfile.mkdtemp(prefix="tiny-st-")
    transformer = Transformer(str(tiny_hf_dir(arch, tmp_path, seed, heads)), max_seq_length=512)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


def tiny_model_dir(arch: str, tmp_path: str | Path, seed: int = 0) -> Path:
    """A tiny ``arch`` model saved in sentence-transformers format at ``tmp_path/st-{arch}``."""
    out = Path(tmp_path) / f"st-{arch}"
    if not (out / "modules.json").is_file():
        tiny_sentence_transformer(arch, tmp_path, seed).save(str(out))
    return out
