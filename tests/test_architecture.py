"""The package's floors (docs/architecture.md), enforced with import-linter's layers contract (pyproject.toml).

A floor imports only floors below it, lazy imports inside functions included; the contract runs here so a
broken floor fails the suite (and CI). The second test shows the same check failing on a package that breaks
its floors, so the first cannot pass vacuously.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")


def lint_imports(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    # A subprocess: import-linter imports the package it checks, with its own sys.path.
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                           f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True))"],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_floors():
    result = lint_imports(ROOT / "pyproject.toml", ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "floors import only downward KEPT" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    pkg = tmp_path / "floors_demo"
    for floor in ("cli", "library"):
        (pkg / floor).mkdir(parents=True)
        (pkg / floor / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "main.py").write_text("from floors_demo.library import core\n")
    (pkg / "library" / "core.py").write_text(textwrap.dedent("""
        def helper():
            from floors_demo.cli import main  # a lazy upward import counts too
            return main
    """))
    config = tmp_path / "pyproject.toml"
    config.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_package = "floors_demo"

        [[tool.importlinter.contracts]]
        name = "demo floors"
        type = "layers"
        containers = ["floors_demo"]
        layers = ["cli", "library"]
    """))
    result = lint_imports(config, tmp_path)
    assert result.returncode != 0 and "demo floors BROKEN" in result.stdout
    assert "floors_demo.library.core -> floors_demo.cli.main" in result.stdout
