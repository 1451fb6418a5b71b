"""Moved: model specs to ``mlret_plugin.models.specs``, loading to ``mlret_plugin.load_model``.

This module keeps the old names for one release.
"""
from __future__ import annotations

from mlret_plugin.model import load_model  # noqa: F401
from mlret_plugin.models.specs import (DEFAULT_ALIAS, DEFAULT_MODEL, OFFLINE_ALIAS, OFFLINE_E5_ALIAS,  # noqa: F401
                                       hub_reachable, model_name, resolve_default_model, resolve_model_spec)
