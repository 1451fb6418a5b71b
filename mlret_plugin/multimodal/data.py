"""Moved to ``mlret_plugin.training.image_data`` (kept here for one release)."""
from mlret_plugin.training.image_data import *  # noqa: F401,F403
from mlret_plugin.training.image_data import IMAGE_COLUMN, IMAGE_REQUIRED_COLUMNS  # noqa: F401
