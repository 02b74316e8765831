"""The bundles xcyto ships, found by name: ``xcyto.load("herlev")``.

They are too large for the wheel (about 24 MB each), so they live in a folder of their own:
``$XCYTO_BUNDLES`` when set, else ``artifacts/`` of the repository when xcyto runs from a
clone. Light (no torch), so the command line and the demo's ``--help`` can read it at once.
"""
from __future__ import annotations

import os
from pathlib import Path

from xcyto.errors import BundleError

BUNDLES_ENV = "XCYTO_BUNDLES"
#: name -> (folder of the bundle, folder of its held-out example cells, what it is)
SHIPPED = {
    "herlev": ("herlev-bundle", "examples-herlev", "Herlev: real cells, 7 classes"),
    "demo": ("demo-bundle", "examples", "Synthetic cells (demonstration)"),
}
WHERE = ("the bundles come with the xcyto repository (artifacts/herlev-bundle, artifacts/demo-bundle; "
         "rebuilt by 'make artifacts'): clone it, or set XCYTO_BUNDLES to a folder that holds them")


def bundles_folder() -> Path | None:
    """``$XCYTO_BUNDLES``, else the clone's ``artifacts/`` (``None`` for an installed wheel)."""
    if os.environ.get(BUNDLES_ENV):
        return Path(os.environ[BUNDLES_ENV])
    clone = Path(__file__).resolve().parents[1] / "artifacts"
    return clone if (clone / "build_herlev_bundle.py").is_file() else None


def shipped_path(name: str) -> Path:
    """The folder of the shipped bundle ``name`` (``"herlev"``, ``"demo"``); a clear
    :class:`~xcyto.errors.BundleError` saying where to get it when it is not on this machine."""
    if name not in SHIPPED:
        raise BundleError(f"no shipped bundle named {name!r} (shipped: {', '.join(SHIPPED)}); "
                          "or give the path of a bundle folder")
    folder = bundles_folder()
    path = folder / SHIPPED[name][0] if folder is not None else None
    if path is None or not (path / "bundle.json").is_file():
        looked = f"looked in {folder}; " if folder is not None else ""
        raise BundleError(f"the shipped bundle {name!r} is not on this machine ({looked}{WHERE})")
    return path


def bundle_path(spec: str | os.PathLike) -> Path:
    """A path as is; a shipped name (``"herlev"``) that is not a folder here: its folder."""
    if isinstance(spec, str) and spec in SHIPPED and not Path(spec).exists():
        return shipped_path(spec)
    return Path(spec)


def examples_path(name: str) -> Path | None:
    """The held-out example cells of the shipped bundle ``name`` (``None`` when absent)."""
    folder = bundles_folder()
    path = folder / SHIPPED[name][1] if folder is not None and name in SHIPPED else None
    return path if path is not None and path.is_dir() else None


def available() -> dict[str, Path]:
    """``{name: folder}`` of the shipped bundles present, Herlev first."""
    found = {}
    for name in SHIPPED:
        try:
            found[name] = shipped_path(name)
        except BundleError:
            continue
    return found
