"""The package's shape: its import graph has no cycles, and each sub-package's ``__init__`` is
its contract.

Imports inside functions count too: a function-level import that points back up is the
same circle, only hidden (bundle -> ensemble -> bundle, explain -> ensemble -> explain); a
function-level import of another sub-package's private module is the same reach-in.
"""
import ast
import importlib
from pathlib import Path

import pytest

import xcyto

PACKAGE = Path(xcyto.__file__).parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the xcyto modules it imports anywhere in its body. ``from pkg import sub``
    of a submodule points at the submodule only (a package's __init__ runs for any of them)."""
    modules = module_names()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                targets = submodules if len(submodules) == len(node.names) else [node.module, *submodules]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_import_graph_has_no_cycles():
    graph = import_graph()
    assert "xcyto.ensemble" in graph["xcyto.loading"] and "xcyto.bundle" in graph["xcyto.ensemble"]
    assert cycles(graph) == []


def test_a_planted_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_bundles_and_ensembles_answer_through_one_interface():
    """predict, evaluate, audit and explain reach a model only through Bundle.predict_batch /
    predict_cells / predict_probabilities, which an ensemble overrides where it must."""
    from xcyto.bundle import Bundle
    from xcyto.ensemble import EnsembleBundle

    for name in ("predict_batch", "predict_cells"):
        assert getattr(EnsembleBundle, name) is getattr(Bundle, name)  # shared, not re-implemented
    assert EnsembleBundle.predict_probabilities is not Bundle.predict_probabilities  # each member's own views
    for module in ("training/_evaluate.py", "audit/_run.py", "explain/_members.py", "embedding/_place.py",
                   "embedding/_embed.py", "card.py", "demo/_app.py"):
        text = (PACKAGE / module).read_text()
        assert "forward_head(" not in text and "forward_embedding(" not in text, module


def sub_packages() -> list[str]:
    """Every package below ``xcyto`` itself: ``xcyto.data``, ``xcyto.data.health``, ..."""
    return sorted(".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")
                  if p.parent != PACKAGE)


def reach_ins(module: str, source: str) -> list[str]:
    """The imports in ``source`` (module ``module``) of a private part of a package ``module``
    is not inside: ``from xcyto.explain._plain import x`` or ``from xcyto.explain import _plain``
    outside ``xcyto.explain``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            if parts[0] != "xcyto":
                continue
            private = next((i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")), None)
            if private is None or private == len(parts) - 1 and isinstance(node, ast.ImportFrom) and not (
                    PACKAGE.parent.joinpath(*parts).with_suffix(".py").exists() or PACKAGE.parent.joinpath(*parts).is_dir()):
                continue  # a private *name* of a public module is that module's own business
            owner = ".".join(parts[:private])
            if not (module == owner or module.startswith(owner + ".")):
                found.append(f"{module}:{node.lineno} imports {target}")
    return found


def test_modules_of_sub_packages_are_private():
    """A sub-package's ``__init__`` is its API; every other module in it is internal and says so."""
    public = [f"{package}.{path.stem}" for package in sub_packages()
              for path in PACKAGE.parent.joinpath(*package.split(".")).glob("*.py")
              if not path.stem.startswith("_")]
    assert public == []


def test_code_outside_a_sub_package_imports_only_its_init():
    found = [hit for name, path in module_names().items() for hit in reach_ins(name, path.read_text())]
    assert found == []


def test_a_reach_in_is_found_even_inside_a_function():
    source = "from xcyto.explain import explain\ndef f():\n    from xcyto.explain._plain import gallery_for\n"
    assert reach_ins("xcyto.audit._run", source) == ["xcyto.audit._run:3 imports xcyto.explain._plain.gallery_for"]
    assert reach_ins("xcyto.explain._api", source) == []  # inside its own package
    assert reach_ins("xcyto.demo._app", "from xcyto.morphology import _learned") == [
        "xcyto.demo._app:1 imports xcyto.morphology._learned"]


@pytest.mark.parametrize("package", sub_packages())
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_one_name_one_meaning():
    """A name two packages export is the same object in both (no two unrelated ``Calibration``)."""
    seen: dict[str, tuple[str, object]] = {}
    clashes = []
    for package in ["xcyto", *sub_packages(), "xcyto.bundle", "xcyto.ensemble", "xcyto.calibration", "xcyto.card"]:
        module = importlib.import_module(package)
        names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for name in names:
            value = getattr(module, name)
            if not (isinstance(value, type) or callable(value)) or isinstance(value, type(importlib)):
                continue
            if name == "main":  # each command line's entry point (``xcyto``, ``demo/app.py``)
                continue
            if name in seen and seen[name][1] is not value:
                clashes.append(f"{name}: {seen[name][0]} and {package}")
            seen.setdefault(name, (package, value))
    assert clashes == []
