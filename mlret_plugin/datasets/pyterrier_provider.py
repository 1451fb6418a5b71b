"""PyTerrier dataset provider: ``pt.get_dataset("mlret:xquad-r/en")`` resolves through ir_datasets."""
from __future__ import annotations

from typing import Any


class MlretDatasetProvider:
    """Registered under the ``pyterrier.dataset_provider`` entry point as ``mlret``."""

    def get_dataset(self, name: str) -> Any:
        import pyterrier as pt

        import mlret_plugin

        mlret_plugin.register()
        return pt.datasets.IRDSDataset(name)

    def list_dataset_names(self) -> list[str]:
        from mlret_plugin.datasets.subsets import dataset_ids

        return dataset_ids()
