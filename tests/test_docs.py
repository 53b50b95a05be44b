"""The documentation site builds with `mkdocs build --strict` (when mkdocs is installed:
it is in the test extra, so CI checks it)."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "index.html").exists()
    api = (tmp_path / "api" / "index.html").read_text()
    assert "assert_allclose_certified" in api and "LayerPrecision" in api


def _code_blocks(text: str, lang: str | None = None) -> list[str]:
    """The fenced code blocks of a Markdown text (of one language, if given)."""
    blocks, cur, fence_lang = [], None, None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("```"):
            if cur is None:
                cur, fence_lang = [], s[3:].strip()
            else:
                if lang is None or fence_lang == lang:
                    blocks.append("\n".join(cur))
                cur = None
        elif cur is not None:
            cur.append(line)
    return blocks


def test_readme_ten_lines_are_quickstart():
    """The README's "Ten lines" are examples/quickstart.py's (which getting-started includes
    and tests/test_examples.py runs), so the README cannot drift from running code."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Ten lines", 1)[1]
    shown = _code_blocks(section, "python")[0]
    src = (ROOT / "examples" / "quickstart.py").read_text()
    ten = src.split("# --8<-- [start:ten-lines]\n", 1)[1].split("# --8<-- [end:ten-lines]", 1)[0]

    def norm(code):
        return [" ".join(ln.split()) for ln in code.strip().splitlines()]

    assert norm(shown) == norm(ten)


def test_ci_runs_the_readme_test_command():
    """`.ci/run` runs exactly the README's test command (install and pytest line)."""
    readme = (ROOT / "README.md").read_text()
    shown = [b.strip() for b in _code_blocks(readme, "bash") if "pytest" in b]
    assert len(shown) == 1, shown
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if "pytest" in ln and not ln.lstrip().startswith("#")]
    assert ci == [shown[0]]


def _shown_commands() -> list[tuple[str, list[str]]]:
    """Every `jaxerr ...` command line in the README's and docs' bash blocks."""
    import shlex

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    cmds = []
    for page in pages:
        for block in _code_blocks(page.read_text(), "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("jaxerr "):
                    cmds.append((page.name, shlex.split(line)[1:]))
    return cmds


def test_documented_commands_parse():
    """Each `jaxerr` command the docs show parses with today's CLI (flags, choices) and names
    files that exist, so renamed flags or moved examples fail here, not for a new user."""
    from jaxerr import cli, demo

    cmds = _shown_commands()
    assert len(cmds) >= 8
    parser = cli.build_parser()
    for page, argv in cmds:
        if argv[0] == "demo":
            demo._parser().parse_args(argv[1:])
            continue
        ns = parser.parse_args(argv)
        path = ns.function.rsplit(":", 1)[0]
        if path.endswith(".py") and not path.startswith("model"):  # model.py: a placeholder
            assert (ROOT / path).exists(), (page, argv)
        for spec in ns.input:
            if not spec.endswith(".npy"):
                cli.parse_input(spec)
