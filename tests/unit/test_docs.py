"""The docs stay true to the tree: links resolve (anchors included), every ``make`` target and
``agent-guard`` command they show exists, and every guard family is documented where the
contributor checklist says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests import reviews
from webhook import cli, guards

ROOT = reviews.ROOT
PAGES = sorted(
    [
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        ROOT / "BENCHMARKS.md",
        ROOT / "certs" / "README.md",
        *(ROOT / "docs").glob("*.md"),
    ]
)
README_MAX_LINES = 200
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MAKE = re.compile(r"(?:^|`)make ([a-z][a-z0-9-]*)", re.MULTILINE)  # in code, not prose
COMMAND = re.compile(r"(?<![\w/-])agent-guard ([a-z][a-z-]*)(?: ([a-z]+))?")


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to dashes."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_links_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(ROOT)}: link to {target}: no such file"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), (
                f"{page.relative_to(ROOT)}: link to {target}: no such heading"
            )


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_make_targets_exist(page: Path) -> None:
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    for target in MAKE.findall(page.read_text()):
        assert target in targets, f"{page.relative_to(ROOT)}: `make {target}` is not a Makefile target"


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_agent_guard_commands_exist(page: Path) -> None:
    commands = {name: module for name, module, _ in cli.COMMANDS}
    kinds = {"webhook", "authz", "policy"}
    for name, kind in COMMAND.findall(page.read_text()):
        assert name in commands, f"{page.relative_to(ROOT)}: `agent-guard {name}` is not a command"
        if name == "manifests" and kind:
            assert kind in kinds, f"{page.relative_to(ROOT)}: `agent-guard manifests {kind}` is not a kind"


@pytest.mark.parametrize("family", guards.families(), ids=lambda f: f.id)
def test_every_guard_is_documented(family: guards.base.Family[Any]) -> None:
    table = (ROOT / "README.md").read_text()
    assert f"| `{family.id}` |" in table, f"README.md: the guard table has no row for {family.id}"
    assert f"`{family.id}`" in (ROOT / "docs" / "guards.md").read_text(), f"docs/guards.md: {family.id}"


def test_readme_stays_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move reference material to docs/"


def test_the_index_links_every_page() -> None:
    index = (ROOT / "docs" / "README.md").read_text()
    linked = set(LINK.findall(index))
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "README.md":
            assert page.name in linked, (
                f"docs/README.md does not link {page.name}: add a row in reading order"
            )
