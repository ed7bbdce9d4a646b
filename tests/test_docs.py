"""The README and docs/ stay short, linked and free of development history.

Fast checks on text only: no model is loaded.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250
HISTORY = re.compile(r"session\s*\d", re.IGNORECASE)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
RESULT_JSON = re.compile(r"bench/results/[\w.-]+\.json")


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no list of tracked files")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file (a NUL byte, or not UTF-8) or one missing from the work tree."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Link and image targets outside code, without URLs, mail addresses and in-page anchors."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    targets = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_no_tracked_text_file_names_a_development_session():
    hits = []
    for path in tracked_files():
        name = path.relative_to(ROOT).as_posix()
        if HISTORY.search(name):
            hits.append(f"{name}: file name")
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if HISTORY.search(line):
                hits.append(f"{name}:{number}: {line.strip()[:100]}")
    assert not hits, "development history belongs in git, not in the project:\n" + "\n".join(hits)


def test_readme_is_at_most_250_lines():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it to {README_MAX_LINES} and move detail to docs/"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_at_an_existing_file(page):
    broken = [target for target in relative_links(page.read_text(encoding="utf-8"))
              if target and not (page.parent / target).exists()]
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {', '.join(broken)}"


def results_pages() -> list[Path]:
    return sorted((DOCS / "results").glob("*.md"))


def test_docs_has_results_pages():
    assert results_pages(), "docs/results/ should hold one page per benchmark"


@pytest.mark.parametrize("page", results_pages(), ids=lambda p: p.name)
def test_each_results_page_names_the_stored_json_it_reports(page):
    named = sorted(set(RESULT_JSON.findall(page.read_text(encoding="utf-8"))))
    assert named, f"{page.relative_to(ROOT)} names no bench/results/*.json: say which file holds its figures"
    missing = [name for name in named if not (ROOT / name).is_file()]
    assert not missing, f"{page.relative_to(ROOT)} names missing results: {', '.join(missing)}"


def test_link_finder_skips_code_urls_and_anchors():
    text = ("[a](docs/x.md) ![b](img.png#frag) [c](https://e.org) [d](#top) `[e](no.md)`\n"
            "```\n[f](no.md)\n```\n")
    assert relative_links(text) == ["docs/x.md", "img.png"]
