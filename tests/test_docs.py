"""README.md and docs/: links resolve, README stays a short front door, and README's test command is CI's.

The checks are small functions so that each test can first prove, on a temporary tree, that it fails when it
should.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CI_RUN = ROOT / ".ci" / "run"
README_MAX_LINES = 250

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target); target may be <...> and may carry a "title".
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HTML_LINK = re.compile(r"""<a\s[^>]*href=["']([^"']+)["']""", re.IGNORECASE)


def _prose_lines(text: str):
    """(line number, line) for every line outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence = match.group(1)
                continue
            yield number, line
        elif match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                and not line.strip()[len(match.group(1)):].strip():
            fence = None


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading's text (before duplicate suffixes): lowercase, drop every character that is
    not a letter, digit, space, hyphen or underscore, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps only its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.strip().lower()
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char in " -_" or category[0] in "LN" or category in ("Mn", "Mc"):
            kept.append(char)
    return "".join(kept).replace(" ", "-")


def heading_anchors(text: str) -> set[str]:
    """Every anchor GitHub makes for the ATX headings of a Markdown text: duplicates get -1, -2, ..."""
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in _prose_lines(text):
        match = _HEADING.match(line)
        if not match:
            continue
        base = github_anchor(match.group(2))
        n = counts.get(base, 0)
        counts[base] = n + 1
        anchors.add(base if n == 0 else f"{base}-{n}")
    return anchors


def _link_targets(text: str):
    for number, line in _prose_lines(text):
        prose = _INLINE_CODE.sub("", line)
        for regex in (_INLINE_LINK, _REF_DEF, _HTML_LINK):
            for match in regex.finditer(prose):
                target = match.group(1).strip()
                if target.startswith("<") and target.endswith(">"):
                    target = target[1:-1].strip()
                yield number, target


def broken_links(files, root: Path) -> list[str]:
    """Every relative link of the Markdown ``files`` that names a missing file, or an #anchor that matches no
    heading of its target file. http(s):// and mailto: links, and links in fenced code blocks, are ignored."""
    problems = []
    anchors_cache: dict[Path, set[str]] = {}

    def anchors_of(path: Path) -> set[str]:
        if path not in anchors_cache:
            anchors_cache[path] = heading_anchors(path.read_text(encoding="utf-8"))
        return anchors_cache[path]

    for source in files:
        source = Path(source)
        for number, target in _link_targets(source.read_text(encoding="utf-8")):
            if re.match(r"^(https?://|mailto:)", target, re.IGNORECASE):
                continue
            where = f"{source.relative_to(root)}:{number}: ({target})"
            path_part, _, anchor = target.partition("#")
            if re.match(r"^[a-z][a-z0-9+.-]*:", path_part, re.IGNORECASE):
                problems.append(f"{where} unsupported link scheme")
                continue
            resolved = (source.parent / path_part).resolve() if path_part else source.resolve()
            if not resolved.exists():
                problems.append(f"{where} no such file: {resolved.relative_to(root) if resolved.is_relative_to(root) else resolved}")
                continue
            if anchor and resolved.is_file() and resolved.suffix.lower() == ".md":
                if anchor.lower() not in anchors_of(resolved):
                    problems.append(f"{where} no heading for #{anchor} in {resolved.relative_to(root)}")
    return problems


def line_count_problem(path: Path, limit: int) -> str | None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if lines > limit:
        return f"{path.name} has {lines} lines; the limit is {limit} (move details into docs/)"
    return None


def readme_test_command(readme_text: str) -> str:
    """The command in the fenced block after the "Tests" line of README's "## Two commands" section."""
    lines = readme_text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"^##\s+Two commands\s*$", line)), None)
    if start is None:
        raise AssertionError('README.md has no "## Two commands" section')
    prose = {number - 1 for number, _ in _prose_lines(readme_text)}  # a "# comment" in a code block is no heading
    end = next((i for i in range(start + 1, len(lines)) if i in prose and re.match(r"^#{1,2}\s", lines[i])),
               len(lines))
    section = lines[start + 1:end]
    intro = next((i for i, line in enumerate(section) if re.match(r"^\W*Tests\b", line)), None)
    if intro is None:
        raise AssertionError('README.md\'s "Two commands" section has no line introducing the tests ("Tests: ...")')
    opening = next((i for i in range(intro + 1, len(section)) if _FENCE.match(section[i])), None)
    if opening is None:
        raise AssertionError('README.md: no fenced code block follows the "Tests" line of "Two commands"')
    fence = _FENCE.match(section[opening]).group(1)
    closing = next((i for i in range(opening + 1, len(section)) if section[i].strip() == fence), None)
    if closing is None:
        raise AssertionError('README.md: the tests command\'s code block is not closed')
    body = [line for line in section[opening + 1:closing] if line.strip()]
    if len(body) != 1:
        raise AssertionError(f"README.md: the tests block should hold one command line, it holds {len(body)}: {body}")
    return body[0]


def ci_problem(command: str, ci_text: str) -> str | None:
    if command not in ci_text.splitlines():
        return f"README's tests command is not a line of .ci/run:\n  {command}"
    return None


def _markdown_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# -- the checks on this repository -----------------------------------------------------------------------------

def test_links_resolve():
    files = _markdown_files(ROOT)
    assert DOCS.is_dir() and len(files) > 1, "docs/ holds no Markdown pages"
    problems = broken_links(files, ROOT)
    assert not problems, f"{len(problems)} broken link(s):\n" + "\n".join(problems)


def test_readme_is_short():
    problem = line_count_problem(README, README_MAX_LINES)
    assert problem is None, problem


def test_readme_test_command_is_what_ci_runs():
    command = readme_test_command(README.read_text(encoding="utf-8"))
    assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -q torch==2.13.0"), command
    problem = ci_problem(command, CI_RUN.read_text(encoding="utf-8"))
    assert problem is None, problem


# -- the checks can fail ---------------------------------------------------------------------------------------

def test_anchor_rule():
    assert github_anchor("The paper's claim, in direction (arXiv 2408.10536, Table 1)") == \
        "the-papers-claim-in-direction-arxiv-240810536-table-1"
    assert github_anchor("Offline multilingual model: `offline-e5`") == "offline-multilingual-model-offline-e5"
    assert github_anchor("C. Model size x alpha (offline-e5)") == "c-model-size-x-alpha-offline-e5"
    assert github_anchor("snake_case  two spaces") == "snake_case--two-spaces"
    assert github_anchor("Straße ändern") == "straße-ändern"
    text = "# Setup\n## Setup\n```\n# Setup\n```\n### Setup\n"
    assert heading_anchors(text) == {"setup", "setup-1", "setup-2"}


def test_link_checker_finds_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## Two words\n\n## Two words\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "# Title\n\n"
        "[ok](docs/page.md) [ok anchor](docs/page.md#two-words) [ok dup](docs/page.md#two-words-1)\n"
        "[ok here](#title) [web](https://example.org/missing.md) [mail](mailto:a@b.c) `[code](nowhere.md)`\n"
        "[missing file](docs/missing.md)\n"
        "[bad anchor](docs/page.md#three-words)\n"
        "[bad here](#no-such-heading)\n"
        "```\n[in a fence](fenced-missing.md)\n```\n",
        encoding="utf-8",
    )
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n[up](../README.md#nope) [fine](page.md)\n",
                                                encoding="utf-8")
    problems = broken_links(_markdown_files(tmp_path), tmp_path)
    assert len(problems) == 4, problems
    joined = "\n".join(problems)
    for expected in ("README.md:5: (docs/missing.md)", "README.md:6: (docs/page.md#three-words)",
                     "README.md:7: (#no-such-heading)", "docs/other.md:3: (../README.md#nope)"):
        assert expected in joined, joined
    assert "fenced-missing" not in joined and "nowhere" not in joined and "example.org" not in joined


def test_line_limit_can_fail(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("line\n" * README_MAX_LINES, encoding="utf-8")
    assert line_count_problem(path, README_MAX_LINES) is None
    path.write_text("line\n" * (README_MAX_LINES + 1), encoding="utf-8")
    assert "251 lines" in line_count_problem(path, README_MAX_LINES)


def test_ci_command_check_can_fail():
    readme = README.read_text(encoding="utf-8")
    command = readme_test_command(readme)
    assert ci_problem(command, f"#!/bin/sh\n{command}\n") is None
    assert ci_problem(command, f"#!/bin/sh\n{command} -x\n") is not None
    assert ci_problem(command + " -k slow", CI_RUN.read_text(encoding="utf-8")) is not None
    without_tests_line = re.sub(r"(?m)^Tests\b.*$", "Checks:", readme)
    with pytest.raises(AssertionError, match="no line introducing the tests"):
        readme_test_command(without_tests_line)
    with pytest.raises(AssertionError, match="Two commands"):
        readme_test_command(readme.replace("## Two commands", "## Commands"))
    with pytest.raises(AssertionError, match="no fenced code block"):
        readme_test_command("## Two commands\n\nTests: run them\n\nnothing here\n")
