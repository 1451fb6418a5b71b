"""Seed the ir_datasets cache from a local copy of the LAReQA files, so loads need no network."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from mlret_plugin.atomic import atomic_path
from mlret_plugin.datasets import lareqa


def _copy_atomic(src: Path, dest: Path) -> None:
    with atomic_path(dest, fsync=True) as tmp:  # trusted once present: flushed before the rename
        shutil.copyfile(src, tmp)


def seed_cache(source_dir: Path | str) -> list[Path]:
    """Copy ``source_dir/{xquad-r,mlqa-r}/{lang}.json`` into the cache after an md5 check.

    Every file present is checked before any is copied, so a bad copy seeds nothing. Missing files are
    an error unless a whole collection is absent (seed just one collection). Returns the cached paths.
    """
    source_dir = Path(source_dir)
    config = lareqa.downloads_config()
    plan: list[tuple[Path, Path]] = []
    for collection, files in config.items():
        present = {lang: source_dir / collection / f"{lang}.json" for lang in files}
        found = {lang: path for lang, path in present.items() if path.is_file()}
        if not found:
            continue
        missing = sorted(set(files) - set(found))
        if missing:
            raise FileNotFoundError(
                f"{source_dir / collection}: missing {', '.join(f'{lang}.json' for lang in missing)} "
                f"(expected all of {', '.join(sorted(files))})"
            )
        for lang, path in found.items():
            actual = hashlib.md5(path.read_bytes()).hexdigest()
            expected = files[lang]["expected_md5"]
            if actual != expected:
                raise ValueError(f"{path}: md5 {actual}, expected {expected} (truncated or a different version)")
            plan.append((path, lareqa.cache_dir() / files[lang]["cache_path"]))
        licence = source_dir / collection / "LICENSE"
        if licence.is_file():
            plan.append((licence, lareqa.cache_dir() / collection / "LICENSE"))
    if not plan:
        raise FileNotFoundError(f"{source_dir}: no {{xquad-r,mlqa-r}}/{{lang}}.json files found")
    for src, dest in plan:
        _copy_atomic(src, dest)
    return [dest for _, dest in plan]
