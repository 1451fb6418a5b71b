"""Every private (underscore) API of another library that the plugin uses, reached only through here.

Private names can change in any release. Each one below is looked up when it is used; a missing one is an
error that names the library, its installed version and what to do, never a silent change of behaviour.
``tests/test_compat.py`` checks every symbol against the installed versions, and ``pyproject.toml`` bounds
these libraries from above (ir_datasets < 0.7, sentence-transformers < 7, transformers < 6).

Why each is used:
- ir_datasets ``util.download._DownloadConfig``: fetch and md5-check a file declared the way the built-in
  datasets declare theirs (``downloads.json``), so the plugin's files use ir_datasets' own downloader.
- ir_datasets ``registry._registered``: skip ids that another copy of the plugin registered already
  (``registry.register`` raises for a second registration and has no public "is registered").
- sentence-transformers ``SentenceTransformer._load_with_module_classes``: load a saved plugin model with
  only the plugin's module class allowed in, instead of ``trust_remote_code=True`` for everything.
- sentence-transformers ``FitMixin._get_scheduler``: ``model.fit``'s own learning-rate schedules, so the
  hybrid ``fit`` schedules exactly as the stock one.
- sentence-transformers ``SentenceTransformer._input_length``: the length sentence-transformers sorts
  inputs by, so the multi-process pool batches as ``encode`` does.
- transformers ``PreTrainedModel._can_set_attn_implementation`` and ``PretrainedConfig._attn_implementation``:
  whether a model routes attention through the AttentionInterface, and which implementation is active.
"""
from __future__ import annotations

from importlib.metadata import version
from typing import Any, Callable


class PrivateApiError(RuntimeError):
    """A private API the plugin relies on is missing from the installed library."""


def _missing(library: str, symbol: str, why: str) -> PrivateApiError:
    return PrivateApiError(
        f"{library} {version(library)} has no {symbol}, which mlret-plugin uses to {why}. Install a version "
        "within the bounds of mlret-plugin's pyproject.toml (pip install -e . re-resolves them), or report it.")


def _attribute(owner: Any, name: str, library: str, symbol: str, why: str) -> Any:
    value = getattr(owner, name, None)
    if value is None:
        raise _missing(library, symbol, why)
    return value


# --- ir_datasets ------------------------------------------------------------------------------------------------

def ir_datasets_download(contents: dict, key: str, cache_dir: Any) -> dict:
    """ir_datasets' downloads for ``contents[key]`` ({name: Download}), cached under ``cache_dir``."""
    from ir_datasets.util import download

    config = _attribute(download, "_DownloadConfig", "ir_datasets", "ir_datasets.util.download._DownloadConfig",
                        "download and md5-check the LAReQA files like ir_datasets' own datasets")
    return config(contents=contents).context(key, cache_dir)


def ir_datasets_is_registered(dataset_id: str) -> bool:
    """True when ``dataset_id`` is in ir_datasets' registry already."""
    import ir_datasets

    registered = _attribute(ir_datasets.registry, "_registered", "ir_datasets", "registry._registered",
                            "skip ids another copy of the plugin registered")
    return dataset_id in registered


# --- sentence-transformers -----------------------------------------------------------------------------------------

def st_load_with_module_classes(path: str, module_classes: dict[str, type], **kwargs: Any):
    """``SentenceTransformer`` from ``path`` with only ``module_classes`` allowed beyond the library's own."""
    from sentence_transformers import SentenceTransformer

    load = _attribute(SentenceTransformer, "_load_with_module_classes", "sentence-transformers",
                      "SentenceTransformer._load_with_module_classes",
                      "load a saved plugin model without trust_remote_code (or load it with "
                      "SentenceTransformer(path, trust_remote_code=True))")
    return load(path, module_classes, **kwargs)


def st_scheduler(optimizer, scheduler: str, warmup_steps: int, t_total: int):
    """``model.fit``'s learning-rate scheduler named ``scheduler``."""
    from sentence_transformers.sentence_transformer.fit_mixin import FitMixin

    get = _attribute(FitMixin, "_get_scheduler", "sentence-transformers", "FitMixin._get_scheduler",
                     "build model.fit's learning-rate schedule for hybrid fit")
    return get(optimizer, scheduler=scheduler, warmup_steps=warmup_steps, t_total=t_total)


def st_input_length(model) -> Callable[[Any], int]:
    """The length ``model.encode`` sorts its inputs by."""
    return _attribute(model, "_input_length", "sentence-transformers", "SentenceTransformer._input_length",
                      "sort inputs by length for the multi-process pool as encode does")


# --- transformers --------------------------------------------------------------------------------------------------

def hf_can_set_attn_implementation(model_class: type) -> bool:
    """Whether the transformers model class routes attention through the AttentionInterface."""
    check = _attribute(model_class, "_can_set_attn_implementation", "transformers",
                       "PreTrainedModel._can_set_attn_implementation",
                       "tell whether a model's attention can be swapped")
    return bool(check())


def hf_attn_implementation(config) -> str | None:
    """The attention implementation a transformers config selects (e.g. 'sdpa', 'eager', 'mlret_sparse')."""
    if not hasattr(config, "_attn_implementation"):
        raise _missing("transformers", "PretrainedConfig._attn_implementation",
                       "read which attention implementation a model runs")
    return config._attn_implementation


__all__ = ["PrivateApiError", "hf_attn_implementation", "hf_can_set_attn_implementation", "ir_datasets_download",
           "ir_datasets_is_registered", "st_input_length", "st_load_with_module_classes", "st_scheduler"]
