"""The package's import graph has no cycles: every module only imports modules below it.

Imports inside functions count too: a function-level import that points back up is the
same circle, only hidden (bundle -> ensemble -> bundle, explain -> ensemble -> explain).
"""
import ast
from pathlib import Path

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
    for module in ("training/evaluate.py", "audit/run.py", "explain/members.py", "embedding/place.py",
                   "embedding/embed.py", "card.py", "demo/app.py"):
        text = (PACKAGE / module).read_text()
        assert "forward_head(" not in text and "forward_embedding(" not in text, module
