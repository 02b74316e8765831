"""Griffe extension used by the API reference (mkdocs.yml loads it; nothing in xcyto imports it).

Two things static analysis of xcyto's sources cannot do on its own:

1. Lazy exports. Some packages list names in ``__all__`` (often as ``[..., *_LAZY]``) that their
   module-level ``__getattr__`` imports on first use, so that ``import xcyto`` does not pay for torch
   (``xcyto.load``, ``xcyto.train``, ``xcyto.training.train``, the transforms of ``xcyto.data``,
   the figures of ``xcyto.embedding``). For such a package, this extension imports it, reads
   its ``__all__`` as Python computes it, asks the package for each name it does not define
   itself, finds the module that defines it, and adds an alias to that definition, so the
   reference renders it like any other export. It reads nothing from the
   layout of the internal modules, so renaming them needs no change here. A name it cannot place
   is reported as a warning, which fails ``mkdocs build --strict``.

2. Docstrings written for a reader of the source. Doctest lines (``>>> ...``) become fenced
   ``pycon`` blocks (Markdown would read a leading ``>>>`` as a quotation); reST roles such as
   :class:`Bundle` become inline code; a paragraph ending in ``::`` ends in ``:``.
"""
from __future__ import annotations

import importlib
import re
import sys
import types

import griffe

logger = griffe.get_logger("griffe_xcyto")

_MISSING = object()
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`~?([^`]+)`")


class XcytoDocs(griffe.Extension):
    """Adds lazily exported names as aliases and makes docstrings render as Markdown."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        for module in _modules(pkg):
            _add_lazy_exports(module, loader)
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = markdown_docstring(obj.docstring.value)


def _modules(module: griffe.Module):
    yield module
    for member in list(module.members.values()):
        if not member.is_alias and member.is_module:
            yield from _modules(member)


def _objects(obj: griffe.Object):
    yield obj
    for member in list(obj.members.values()):
        if not member.is_alias:
            yield from _objects(member)


def _add_lazy_exports(module: griffe.Module, loader: griffe.GriffeLoader) -> None:
    exports = list(module.exports or ())
    static = all(isinstance(name, str) for name in exports)
    if static and all(name in module.members for name in exports):
        return
    try:  # `__all__` built from other names (`[..., *_LAZY]`), or names not defined statically
        runtime = importlib.import_module(module.path)
    except Exception as error:  # noqa: BLE001 (reported, and the build fails under --strict)
        logger.warning(f"{module.path}: cannot import it to read its __all__: {error}")
        return
    exports = [str(name) for name in getattr(runtime, "__all__", exports)]
    module.exports = exports
    package = module.path.split(".")[0]
    for name in exports:
        if name in module.members:
            continue
        value = getattr(runtime, name, _MISSING)
        target = _definition(value, name, package, loader) if value is not _MISSING else None
        if target is None:
            logger.warning(f"{module.path}.__all__ lists {name!r}, but no module of {package} defines it")
            continue
        module.set_member(name, griffe.Alias(name, target, parent=module))


def _definition(value, name: str, package: str, loader: griffe.GriffeLoader) -> str | None:
    """The path of the object that defines ``value``: by its ``__module__`` and ``__qualname__``
    when it has them, else the one module of ``package`` that defines ``name`` as that object."""
    module_name, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if isinstance(module_name, str) and isinstance(qualname, str) and not isinstance(value, types.ModuleType):
        path = f"{module_name}.{qualname}"
        if _defined_statically(path, loader):
            return path
    found = []
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] != package or module is None:
            continue
        if module.__dict__.get(name, _MISSING) is value and _defined_statically(f"{module_name}.{name}", loader):
            found.append(f"{module_name}.{name}")
    return found[0] if len(found) == 1 else None


def _defined_statically(path: str, loader: griffe.GriffeLoader) -> bool:
    try:
        obj = loader.modules_collection.get_member(path)
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return obj is not None and not obj.is_alias


def markdown_docstring(text: str) -> str:
    """Doctest lines fenced as ``pycon``, reST roles as inline code, ``::`` as ``:``."""
    out: list[str] = []
    block: list[str] = []

    def flush() -> None:
        if block:
            indent = min(len(line) - len(line.lstrip()) for line in block)
            if out and out[-1].strip():
                out.append("")
            out.extend(["```pycon", *(line[indent:] for line in block), "```", ""])
            block.clear()

    for line in text.splitlines():
        if line.lstrip().startswith(">>>") or (block and line.strip()):  # a prompt, or what it prints
            block.append(line.rstrip())
            continue
        flush()
        line = _ROLE.sub(r"`\1`", line)
        if line.rstrip().endswith("::") and not line.rstrip().endswith(":::"):
            line = line.rstrip()[:-1]
        out.append(line)
    flush()
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out)
