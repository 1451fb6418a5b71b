"""A tiny random BERT sentence-transformers model built in-process (no hub), for evaluation tests."""
from __future__ import annotations

from pathlib import Path


def tiny_bert_sentence_transformer(folder: Path, normalize: bool = True):
    """A 2-layer 32-dim BERT with a word-level vocabulary of the fixture tokens, saved to ``folder``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "fact", "which", "is", "number", "stated", "here", "."]
    words += [f"k{a}{p}{s}" for a in range(3) for p in range(3) for s in range(4)]
    words += [str(i) for i in range(40)] + ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh", "?"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformer = Transformer(str(folder), max_seq_length=64)
    modules = [transformer, Pooling(32, "mean")] + ([Normalize()] if normalize else [])
    return SentenceTransformer(modules=modules, device="cpu")
