"""PyTerrier dataset provider: ``pt.get_dataset("mlret:xquad-r/en")`` resolves through ir_datasets.

Importable without PyTerrier (the entry point only instantiates the class); PyTerrier is imported when
a dataset is asked for.
"""
from __future__ import annotations

from typing import Any

from mlret_plugin.datasets.subsets import dataset_ids, parse_dataset_id


class MlretDatasetProvider:
    """Registered under the ``pyterrier.dataset_provider`` entry point as ``mlret``."""

    def get_dataset(self, name: str) -> Any:
        try:
            parse_dataset_id(name)
        except ValueError as e:
            raise KeyError(str(e)) from e  # PyTerrier's contract for an unknown name
        from mlret_plugin import datasets

        datasets.register()
        return _lareqa_pt_dataset(name)

    def list_dataset_names(self) -> list[str]:
        return dataset_ids()


def _lareqa_pt_dataset(name: str) -> Any:
    from pyterrier.datasets._irds import IRDSDataset

    class LareqaPtDataset(IRDSDataset):
        """Topics default to the question text (queries also carry ``lang``)."""

        def get_topics(self, variant: str | None = None, **kwargs: Any):
            return super().get_topics(variant or "text", **kwargs)

    return LareqaPtDataset(name)
