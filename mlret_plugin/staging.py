"""Staging folders: a folder that becomes ``target`` is built next to it under a hidden name that carries the
building process's pid (``.{name}.tmp-{pid}-{random}``), then renamed into place. A process killed mid-build
(kill -9, power loss) cannot clean up after itself; the next build of the same target removes the staging
folders whose process is gone, and leaves those of live processes (a concurrent build) alone.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


def staging_path(target: Path) -> Path:
    """A fresh, not yet created path next to ``target`` for this process to build it in."""
    target = Path(target)
    return target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(target: Path, what: str = "build") -> list[Path]:
    """Delete the staging folders of ``target`` left by processes that no longer run; returns them."""
    target = Path(target)
    removed = []
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 2)[1])
        except (IndexError, ValueError):
            continue
        if not pid_alive(pid):
            log.info("removing %s, left by an interrupted %s", tmp, what)
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def publish(built: Path, target: Path, finished: Callable[[Path], bool], what: str) -> bool:
    """Rename ``built`` into place as ``target``; True when it landed. When the rename fails because another
    process already put a finished ``target`` there (``finished(target)``), that one is kept, ``built`` is
    deleted and False returned; any other failure raises."""
    try:
        os.rename(built, target)
        return True
    except OSError:
        if not finished(Path(target)):
            raise
    log.info("%s %s was built concurrently; using that one", what, target)
    shutil.rmtree(built, ignore_errors=True)
    return False


__all__ = ["pid_alive", "publish", "remove_stale", "staging_path"]
