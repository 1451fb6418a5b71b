"""Moved to ``mlret_plugin.training.images`` (kept here for one release)."""
from mlret_plugin.training.images import *  # noqa: F401,F403
