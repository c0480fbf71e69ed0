"""The architecture holds: layers import only downwards, no cycles, attacks stands alone, README agrees."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts" / "check_layers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module
    spec.loader.exec_module(module)
    return module


check_layers = _checker()


def test_the_package_keeps_its_layers():
    assert check_layers.check(ROOT) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


BASE = {
    "flexaudit/__init__.py": "",
    "flexaudit/errors.py": "",
    "flexaudit/data/__init__.py": "",
    "flexaudit/moe/__init__.py": "",
    "flexaudit/moe/model.py": "from flexaudit.errors import X\n",
    "attacks/__init__.py": "import torch\n",
}


@pytest.mark.parametrize("files, expected", [
    ({"flexaudit/data/load.py": "def f():\n    from flexaudit.moe.model import Model\n"},
     "flexaudit.data.load (data) imports flexaudit.moe.model (moe), a layer above its own"),
    ({"flexaudit/moe/a.py": "from flexaudit.moe import b\n", "flexaudit/moe/b.py": "from flexaudit.moe.a import x\n"},
     "import cycle: flexaudit.moe.a -> flexaudit.moe.b -> flexaudit.moe.a"),
    ({"attacks/errors.py": "from flexaudit.errors import InputError\n"},
     "attacks imports flexaudit.errors"),
    ({"flexaudit/extras.py": ""}, "module flexaudit.extras is in no layer"),
])
def test_the_checker_finds_each_kind_of_problem(tmp_path, files, expected):
    root = _tree(tmp_path, {**BASE, **files})
    problems = check_layers.check(root)
    assert any(expected in p for p in problems), problems


def test_the_checker_resolves_reexports_and_ignores_type_only_imports(tmp_path):
    root = _tree(tmp_path, {
        **BASE,
        # data's package re-exports a name; importing it through the package is an import of the defining module
        "flexaudit/data/__init__.py": "from flexaudit.data.docs import Document\n",
        "flexaudit/data/docs.py": "",
        "flexaudit/moe/expert.py": ("from typing import TYPE_CHECKING\nfrom flexaudit.data import Document\n"
                                    "if TYPE_CHECKING:\n    from flexaudit.privacy.dp import Options\n"),
    })
    assert check_layers.check(root) == []


def _readme_layers() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [re.findall(r"`([^`]+)`", row.split("|")[1]) for row in rows]


def test_the_readme_lists_every_folder_and_module_in_layer_order():
    rows = _readme_layers()
    named = {name for row in rows for name in row}
    package = ROOT / "flexaudit"
    actual = {f"{p.name}/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    actual |= {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    assert named - {"attacks/"} == actual
    # top to bottom in the README is the checker's LAYERS from the top down
    ranks = []
    for row in rows:
        if row == ["attacks/"]:
            continue
        layer = {check_layers.layer_of("flexaudit." + name.removesuffix("/").removesuffix(".py"))[0] for name in row}
        assert len(layer) == 1, row
        ranks.append(layer.pop())
    assert ranks == sorted(ranks, reverse=True) and len(set(ranks)) == len(check_layers.LAYERS)
