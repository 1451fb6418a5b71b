"""Dataset ids of the LAReQA collections and what they select.

A subset is a collection plus the languages its queries and candidates come from:
``xquad-r`` (pool: every language against every language), ``xquad-r/de`` (monolingual),
``xquad-r/de-en`` (German questions, English candidates). ``Subset`` also names pools over a
chosen set of languages (``mlret lareqa --langs``), which are not registered ids.
"""
from __future__ import annotations

from typing import NamedTuple

COLLECTIONS: dict[str, tuple[str, ...]] = {
    "xquad-r": ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"),
    "mlqa-r": ("ar", "de", "en", "es", "hi", "vi", "zh"),
}


class Subset(NamedTuple):
    collection: str
    qlangs: tuple[str, ...]
    dlangs: tuple[str, ...]

    @property
    def setting(self) -> str:
        """'mono', 'cross' or 'multi' (LAReQA's names)."""
        if len(self.qlangs) == 1 and len(self.dlangs) == 1:
            return "mono" if self.qlangs == self.dlangs else "cross"
        return "multi"

    @property
    def dataset_id(self) -> str:
        """The registered ir_datasets id, or ``collection[l1,l2,...]`` for a pool over chosen languages."""
        if self.setting == "mono":
            return f"{self.collection}/{self.qlangs[0]}"
        if self.setting == "cross":
            return f"{self.collection}/{self.qlangs[0]}-{self.dlangs[0]}"
        if self.qlangs == self.dlangs == COLLECTIONS[self.collection]:
            return self.collection
        return f"{self.collection}[{','.join(self.qlangs)}]"

    def load(self):
        """The ir_datasets Dataset (registered ids through ``ir_datasets.load``; other pools built on the fly)."""
        from mlret_plugin.datasets.lareqa import load_subset

        return load_subset(self)


def check_langs(collection: str, langs: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validate languages of a collection, keeping the collection's order."""
    if collection not in COLLECTIONS:
        raise ValueError(f"unknown collection {collection!r}; expected one of {sorted(COLLECTIONS)}")
    known = COLLECTIONS[collection]
    unknown = [lang for lang in langs if lang not in known]
    if unknown:
        raise ValueError(f"{collection} has no language(s) {unknown}; it has {', '.join(known)}")
    if not langs:
        raise ValueError(f"no languages given for {collection}")
    return tuple(lang for lang in known if lang in langs)


def pool(collection: str, langs: list[str] | tuple[str, ...] | None = None) -> Subset:
    """The multilingual pool of a collection, over all or the given languages."""
    chosen = check_langs(collection, langs if langs is not None else COLLECTIONS.get(collection, ()))
    return Subset(collection, chosen, chosen)


def parse_dataset_id(dataset_id: str) -> Subset:
    """``xquad-r``, ``xquad-r/de``, ``xquad-r/de-en`` -> Subset; a clear ValueError otherwise."""
    collection, _, rest = dataset_id.partition("/")
    if collection not in COLLECTIONS:
        raise ValueError(f"{dataset_id!r} is not an mlret dataset id; collections are {sorted(COLLECTIONS)}")
    known = COLLECTIONS[collection]
    if not rest:
        return Subset(collection, known, known)
    qlang, sep, dlang = rest.partition("-")
    if not sep:
        dlang = qlang
    for lang in (qlang, dlang):
        if lang not in known:
            raise ValueError(
                f"{dataset_id!r}: {collection} has no language {lang!r}; expected one of {', '.join(known)}"
            )
    if sep and qlang == dlang:
        raise ValueError(f"{dataset_id!r}: a cross-lingual pair needs two languages; use {collection}/{qlang}")
    return Subset(collection, (qlang,), (dlang,))


def dataset_ids(collection: str | None = None) -> list[str]:
    """Every registered id: pools, monolingual, cross-lingual pairs (172 in all)."""
    ids = []
    for name, langs in COLLECTIONS.items():
        if collection not in (None, name):
            continue
        ids.append(name)
        ids += [f"{name}/{lang}" for lang in langs]
        ids += [f"{name}/{q}-{d}" for q in langs for d in langs if q != d]
    return ids
