"""LAReQA datasets (XQuAD-R, MLQA-R) for ir_datasets: the pool, each language, each pair."""
from mlret_plugin.datasets.ids import article_of, group_id, lang_of, paragraph_of, parse_doc_id
from mlret_plugin.datasets.lareqa import LareqaDoc, LareqaQuery, build_subset, load_subset
from mlret_plugin.datasets.subsets import COLLECTIONS, Subset, dataset_ids, parse_dataset_id, pool

__all__ = [
    "COLLECTIONS", "LareqaDoc", "LareqaQuery", "Subset", "article_of", "build_subset", "dataset_ids", "group_id",
    "lang_of", "load_subset", "paragraph_of", "parse_dataset_id", "parse_doc_id", "pool", "register",
]


def register() -> None:
    """Register every dataset id with ir_datasets (idempotent)."""
    from mlret_plugin.datasets.lareqa import _init

    _init()
