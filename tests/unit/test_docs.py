"""README (one screen) and docs/ (the rest) document what the Makefile and the package really have."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import REPO

README = (REPO / "README.md").read_text()
MAKEFILE = (REPO / "Makefile").read_text()
PAGES = sorted((REPO / "docs").glob("*.md"))
SCREEN_LINES, SCREEN_BYTES = 45, 3000
STAGES = ["data", "modeling", "search", "train", "evaluate", "registry", "serving", "explain", "infra"]  # pipeline order
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, flags=re.M))


def documents() -> dict[Path, str]:
    return {REPO / "README.md": README, **{p: p.read_text() for p in PAGES}}


def anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens (code blocks are not headings)."""
    found, fence = set(), False
    for line in text.splitlines():
        fence ^= line.startswith("```")
        if not fence and (m := re.match(r"#{1,6} (.+)", line)):
            found.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return found


def broken_links(path: Path, text: str) -> list[str]:
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if dest == REPO / "docs" / "cli.md" and not dest.exists() and not generator_of_cli_md():
            continue  # h1's generator writes it from the parser; once that code exists, the link must resolve
        if not dest.exists():
            broken.append(f"{path.name}: {target} (no {dest.relative_to(REPO)})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            broken.append(f"{path.name}: {target} (no heading #{anchor} in {dest.name})")
    return broken


def generator_of_cli_md() -> bool:
    return "docs/cli.md" in MAKEFILE or any("docs/cli.md" in p.read_text() for p in (REPO / "pipeline").rglob("*.py"))


def first_screen() -> str:
    """README up to its first link into docs/: what a newcomer reads before leaving the page."""
    return README[:README.index("(docs/")]


def test_every_make_command_in_the_docs_exists():
    used = {t for text in documents().values() for t in re.findall(r"\bmake ([a-z][a-z-]*)", text)}
    assert used <= make_targets(), f"the docs use missing targets: {sorted(used - make_targets())}"
    assert {"demo", "test", "test-fast", "search", "retrain-best", "promote", "predict", "serve", "evaluate", "ui",
            "data", "pretrain", "postgres", "server", "bench"} <= used


def test_quick_start_is_the_two_bootstrapping_commands():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \S+)", quick, flags=re.M)
    assert commands == ["make demo", "make test"], commands
    assert "$(VENV)/.installed" in MAKEFILE.split("\ndemo:", 1)[1].splitlines()[0]
    assert "$(VENV)/.installed" in MAKEFILE.split("\ntest:", 1)[1].splitlines()[0]


def test_readme_is_one_screen_before_its_first_link_to_docs():
    screen = first_screen()
    assert len(screen.splitlines()) <= SCREEN_LINES and len(screen.encode()) <= SCREEN_BYTES, \
        f"{len(screen.splitlines())} lines, {len(screen.encode())} bytes before the first docs/ link"
    # the control: that screen holds the quick start and the stage map, not just an early link
    assert "## Quick start" in screen and "make demo" in screen and "make test" in screen
    assert all(f"`{stage}/`" in screen for stage in STAGES)


def test_stage_map_lists_every_stage_in_pipeline_order_with_its_make_target():
    stages = {p.name for p in (REPO / "pipeline").iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert stages == set(STAGES), f"the stage map here and pipeline/ disagree: {sorted(stages ^ set(STAGES))}"
    rows = [line for line in first_screen().splitlines()
            if re.match(r"\| `[a-z]+/` \|", line) and not line.startswith("| `pipeline/`")]
    assert [re.match(r"\| `([a-z]+)/`", r).group(1) for r in rows] == STAGES
    for row in rows:
        targets = re.findall(r"`make ([a-z-]+)", row)
        assert targets and set(targets) <= make_targets(), row


@pytest.mark.parametrize("path", [REPO / "README.md", *PAGES], ids=lambda p: p.name)
def test_every_link_resolves(path):
    assert not broken_links(path, path.read_text())


def test_a_broken_link_is_seen():
    """The control: the link check above can fail, for a missing page and for a missing heading."""
    page = REPO / "docs" / "walkthrough.md"
    assert broken_links(page, "[x](nowhere.md) [y](results.md#no-such-heading) [z](#the-data)") == [
        "walkthrough.md: nowhere.md (no docs/nowhere.md)",
        "walkthrough.md: results.md#no-such-heading (no heading #no-such-heading in results.md)"]
    assert anchors("## Speed against the seeds' way (benchmarks/)\n```\n# not a heading\n```") == {
        "speed-against-the-seeds-way-benchmarks"}


def test_every_page_in_docs_is_linked_from_the_readme():
    linked = {Path(t).name for t in LINK.findall(README) if t.startswith("docs/")}
    assert {p.name for p in PAGES} <= linked | {"cli.md"}, sorted({p.name for p in PAGES} - linked)
    assert "cli.md" in linked
