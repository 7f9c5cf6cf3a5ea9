"""The README's map of the code matches the tree: every package it names exists, every package
is named, and the layer diagram names every unit of `tests/test_layers.py`'s layers."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_layers import LAYERS

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "orchestrator"


def layout() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Layout"):]
    return section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section


def named_packages(block: str) -> set[str]:
    """Package paths the map names: `  name/` at the top of orchestrator/, `    name/` below
    the package above it."""
    found, parent = set(), ""
    for line in block.splitlines():
        top = re.match(r"^  ([a-z_]+)/\s", line)
        nested = re.match(r"^    ([a-z_]+)/\s", line)
        if top:
            parent = top.group(1)
            found.add(parent)
        elif nested and parent:
            found.add(f"{parent}/{nested.group(1)}")
    return found


def test_every_package_is_named_and_every_name_is_a_package() -> None:
    tree = layout().split("```")[3]  # the second code block: the map
    block = tree[:tree.index("\npipelines/")]
    packages = {str(init.parent.relative_to(PACKAGE)) for init in PACKAGE.rglob("__init__.py")
                if init.parent != PACKAGE}
    named = named_packages(block)
    assert named - packages == set(), f"named but no such package: {named - packages}"
    assert packages - named == set(), f"packages the README's Layout does not name: " \
                                      f"{packages - named}"


def test_every_module_at_the_top_is_named() -> None:
    block = layout().split("```")[3]
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    missing = sorted(m for m in modules if f"{m}.py" not in block)
    assert not missing, f"top-level modules the README's Layout does not name: {missing}"


def test_the_diagram_names_every_layer() -> None:
    diagram = layout().split("```")[1]
    units = set().union(*LAYERS) - {"__init__", "__main__"}
    missing = sorted(u for u in units if not re.search(rf"(?<![\w]){u}(?![\w])", diagram))
    assert not missing, f"layers the README's diagram leaves out: {missing}"


def test_the_reader_finds_nested_packages() -> None:
    assert named_packages("  store/  x\n    sqlite/ y\n  web/  z\n") == {
        "store", "store/sqlite", "web"}
