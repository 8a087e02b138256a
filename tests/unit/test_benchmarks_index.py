"""benchmarks/README.md and run_all.py agree on what runs: every script is in one of run_all's two lists,
README names each list's scripts where it describes run_all, and every script has its own entry."""
from __future__ import annotations

import ast
import re

from tests.helpers import REPO

BENCH = REPO / "benchmarks"


def lists() -> dict[str, tuple[str, ...]]:
    tree = ast.parse((BENCH / "run_all.py").read_text())
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("SCRIPTS", "ON_REQUEST")}


def test_every_script_is_run_by_run_all_or_listed_as_on_request():
    scripts = {p.name for p in BENCH.glob("*.py")} - {"common.py", "run_all.py"}
    found = lists()
    run, on_request = set(found["SCRIPTS"]), set(found["ON_REQUEST"])
    assert not run & on_request
    assert run | on_request == scripts, f"unlisted: {sorted(scripts - run - on_request)}; " \
                                        f"missing: {sorted((run | on_request) - scripts)}"


def test_readme_says_what_run_all_runs_and_documents_every_script():
    readme = (BENCH / "README.md").read_text()
    paragraph = readme.split("**`run_all.py`**", 1)[1].split("\n\n", 1)[0]
    found = lists()
    runs_text, rest = paragraph.split("The others", 1)
    assert set(re.findall(r"`(\w+\.py)`", runs_text)) == set(found["SCRIPTS"])
    assert set(re.findall(r"`(\w+\.py)`", rest)) == set(found["ON_REQUEST"])
    for name in (*found["SCRIPTS"], *found["ON_REQUEST"]):
        assert f"**`{name}`**" in readme, f"benchmarks/README.md has no entry for {name}"
