"""The README and docs/ stay true to the code they describe: links resolve, the settings table
names every setting, and the two commands are the Makefile's."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from axon.server.config import ServerSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs"
PAGES = (REPO_ROOT / "README.md", REPO_ROOT / "SECURITY.md", *sorted(DOCS.glob("*.md")))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return frozenset(github_anchor(line.lstrip("#")) for line in text.splitlines()
                     if line.startswith("#"))


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8")))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
                anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{page.name}: links that lead nowhere: {broken}"


def test_the_readme_links_every_docs_page() -> None:
    linked = {target.partition("#")[0] for target in links(REPO_ROOT / "README.md")}
    assert {f"docs/{page.name}" for page in DOCS.glob("*.md")} <= linked


def settings_table_flags() -> set[str]:
    """The flags named in the first column of docs/serving.md's settings table."""
    section = (DOCS / "serving.md").read_text(encoding="utf-8").split("## Settings", 1)[1]
    rows = [line for line in section.split("\n## ", 1)[0].splitlines()
            if line.startswith("| `")]
    return {flag for row in rows for flag in re.findall(r"`(--[a-z-]+)`", row.split(" | ")[0])}


def test_the_settings_table_names_every_setting_and_no_other() -> None:
    expected = {"--config"}
    for name, field in ServerSettings.model_fields.items():
        flag = name.replace("_", "-")
        expected.add(f"--no-{flag}" if field.default is True else f"--{flag}")
    assert settings_table_flags() == expected


def test_the_readme_gives_the_two_commands_of_the_makefile() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("run", "test"):
        assert re.search(rf"^make {target} +# ", readme, re.MULTILINE)
        assert re.search(rf"^{target}:", makefile, re.MULTILINE)
