"""The package's layers, read from the code with `ast`: imports point down, through each subpackage's front door,
and close no circle.

Every import statement counts, those inside functions too (they still run), and the names a package loads on first
use (its `_LAZY` map), except under `if TYPE_CHECKING:`, which never runs. Layers, lowest first; a module may
import its own layer and those below it:
errors, lazy < checkpoints < model < training, emoji, explain, export < vlm < vlm_vision itself < index < app.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Import name -> folder, as pyproject.toml maps them: index/ and app/ are installed as vlm_vision.index and .app.
PACKAGES = {"vlm_vision": ROOT / "vlm_vision", "vlm_vision.index": ROOT / "index", "vlm_vision.app": ROOT / "app"}
RANK = {"errors": 0, "lazy": 0, "quiet": 0, "cache": 0, "checkpoints": 1, "model": 2, "training": 3, "emoji": 3,
        "explain": 3, "export": 3, "vlm": 4, "inference": 4,
        "vlm_vision": 5, "index": 6, "app": 7}
SUBPACKAGES = ("checkpoints", "model", "training", "emoji", "vlm", "inference", "index", "app")


def module_files() -> dict[str, Path]:
    """Every module of the package by its import name (a package by its own name, for its __init__.py)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = module_files()


def layer(module: str) -> str:
    """The layer a vlm_vision module belongs to: its subpackage, a top-level module's name, or vlm_vision itself."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "vlm_vision"
    return parts[1]


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """All nodes but those under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(module: str) -> set[str]:
    """The vlm_vision modules `module` imports (a `from X import y` names X.y where y is a module, else X)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        elif _is_lazy_map(node):  # {name: submodule}, imported on first use by vlm_vision.lazy
            targets = [f"{package}.{value.value}" for value in node.value.values]
        else:
            continue
        found.update(t for t in targets if t in MODULES)
    return found - {module}


def _is_lazy_map(node: ast.AST) -> bool:
    return (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
            and any(getattr(target, "id", None) == "_LAZY" for target in node.targets))


GRAPH = {module: imports_of(module) for module in MODULES}


def test_the_walk_sees_the_package():
    assert {"vlm_vision.model.vision_transformer", "vlm_vision.index.db", "vlm_vision.app.ui"} <= set(MODULES)
    assert "vlm_vision.checkpoints" in GRAPH["vlm_vision.model.vision_transformer"]  # relative, through __init__
    assert "vlm_vision.model" in GRAPH["vlm_vision.index.build"]  # absolute
    assert "vlm_vision.model" not in GRAPH["vlm_vision.checkpoints.convert"]  # under TYPE_CHECKING only
    assert "vlm_vision.model.dual_encoder" in GRAPH["vlm_vision.model"]  # loaded on first use, through _LAZY


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = sorted(t for t in GRAPH[module] if RANK[layer(t)] > RANK[layer(module)])
    assert not upward, f"{module} ({layer(module)}) imports from a higher layer: {upward}"


def test_the_model_imports_no_training_emoji_vlm_index_or_app():
    offenders = {m: sorted(t for t in GRAPH[m] if layer(t) in ("training", "emoji", "vlm", "index", "app"))
                 for m in MODULES if layer(m) == "model"}
    assert not {m: t for m, t in offenders.items() if t}


def test_serving_code_loads_no_training_or_corpus_code():
    """What the app and the index load, directly or through others, their packages' __init__ modules included (they
    run first), holds no training or emoji-corpus module."""
    seen, todo = set(), [m for m in MODULES if layer(m) in ("index", "app")]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
            todo += [*GRAPH[module], *parents]
    assert not sorted(m for m in seen if layer(m) in ("training", "emoji") or m == "vlm_vision.vlm.train")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_other_layers_are_reached_through_their_front_door(module):
    """Across subpackages, an import names the subpackage (its __init__ lists what it offers), never its insides.
    The app and the index may also reach vlm_vision's top-level modules (errors, explain)."""
    deep = sorted(t for t in GRAPH[module]
                  if layer(t) in SUBPACKAGES and layer(t) != layer(module) and t != f"vlm_vision.{layer(t)}")
    assert not deep, f"{module} reaches past a subpackage's __init__: {deep}"


def test_no_import_circles():
    """No cycle among modules (a package's __init__ importing its own modules is not one: it runs first)."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                pytest.fail("import circle: " + " -> ".join([*path[path.index(target):], target]))
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])


def test_no_circles_between_layers():
    edges = {(layer(m), layer(t)) for m, targets in GRAPH.items() for t in targets if layer(m) != layer(t)}
    two_way = sorted((a, b) for a, b in edges if (b, a) in edges)
    assert not two_way, f"layers importing each other: {two_way}"
