"""One entry point for every dataset: ``load_dataset(source)`` finds the layout.

``LAYOUTS`` maps a layout name to how to recognise it and how to load it. Detection
runs in the table's order, most specific first, so a Herlev tree (which is also a
class-per-folder tree) is read as Herlev. Adding a layout is adding one entry.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xcyto.data._folder import is_class_folder_tree, is_csv_manifest, load_csv, load_folder
from xcyto.data._herlev import is_herlev, load_herlev
from xcyto.data._records import CellDataset
from xcyto.data._sipakmed import is_sipakmed, load_sipakmed
from xcyto.errors import DataError

SYNTHETIC = "synthetic"
SCHEMES = ("default", "binary")
LOADER_OPTIONS = {"progress"}


@dataclass(frozen=True)
class Layout:
    """How to recognise a dataset layout on disk and load it."""

    detect: Callable[[Path], bool]
    load: Callable[..., CellDataset]
    description: str
    schemes: tuple[str, ...] = ("default",)


LAYOUTS: dict[str, Layout] = {
    "sipakmed": Layout(is_sipakmed, load_sipakmed, "SIPaKMeD im_<Class>/[im_<Class>/]CROPPED/NNN_MM.bmp + .dat contours"),
    "herlev": Layout(is_herlev, load_herlev, "Herlev class folders (normal_*, *_dysplastic, ...) + optional -d.bmp masks",
                     schemes=("default", "binary")),
    "csv": Layout(is_csv_manifest, load_csv, "CSV manifest with columns path,label[,group]"),
    "folder": Layout(is_class_folder_tree, load_folder, "any folder of class sub-folders of images"),
}


def list_layouts() -> list[str]:
    """Names of the layouts ``load_dataset`` can read, in detection order."""
    return list(LAYOUTS)


def detect_layout(path) -> str:
    """Name of the first layout in ``LAYOUTS`` that recognises ``path``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    for name, layout in LAYOUTS.items():
        if layout.detect(path):
            return name
    raise DataError(
        f"{path}: not a dataset xcyto can read; expected a folder of class sub-folders with images, "
        f"a SIPaKMeD or Herlev folder, or a .csv manifest (path,label[,group])"
    )


def load_dataset(source, scheme: str | None = None, *, layout: str | None = None, **options) -> CellDataset:
    """Load cells from a folder, a ``.csv`` manifest, or ``"synthetic"`` (``"synthetic:n=500,size=128,seed=0"``).

    ``scheme`` picks the labels: None/"default", or "binary" (Herlev only: normal vs
    abnormal). ``layout`` skips detection. Other options go to the loader: for
    folders ``progress=``; for ``"synthetic"`` ``n=``, ``seed=``, ``size=``. The name
    ``"synthetic"`` wins over a folder of that name: write ``./synthetic`` for the folder.
    """
    scheme = _check_scheme(scheme)
    if isinstance(source, str) and source.startswith(SYNTHETIC + ":"):
        source, options = SYNTHETIC, {**parse_synthetic_spec(source), **options}
    if isinstance(source, str) and source == SYNTHETIC:
        if scheme != "default":
            raise DataError(f"label scheme {scheme!r} is not available for the synthetic dataset")
        try:
            from xcyto.data import _synthetic as synthetic  # imported only when asked for
        except ModuleNotFoundError as error:
            if error.name != "xcyto.data._synthetic":
                raise
            raise DataError("the synthetic cell generator (xcyto.data._synthetic) is not installed") from None
        return synthetic.make_dataset(**options)
    path = Path(source)
    name = layout or detect_layout(path)
    if name not in LAYOUTS:
        raise DataError(f"unknown layout {name!r}; known layouts: {', '.join(LAYOUTS)}")
    entry = LAYOUTS[name]
    if scheme not in entry.schemes:
        raise DataError(f"label scheme {scheme!r} is not available for the {name} layout "
                        f"(available: {', '.join(entry.schemes)}); 'binary' needs a Herlev dataset")
    unknown = sorted(set(options) - LOADER_OPTIONS)
    if unknown:
        raise DataError(f"option(s) {', '.join(unknown)} do not apply to the {name} layout "
                        f"(it takes: {', '.join(sorted(LOADER_OPTIONS))})")
    return entry.load(path, None if scheme == "default" else scheme, **options)


def synthetic_spec(n: int, size: int, seed: int) -> str:
    """A data source string naming exactly which synthetic cells: ``synthetic:n=250,size=64,seed=0``."""
    return f"{SYNTHETIC}:n={n},size={size},seed={seed}"


def parse_synthetic_spec(spec: str) -> dict:
    """Options of a ``synthetic:key=value,...`` source (n, size, seed)."""
    options = {}
    for item in filter(None, spec.split(":", 1)[1].split(",")):
        key, _, value = item.partition("=")
        if key not in ("n", "size", "seed") or not value.strip().isdigit():
            raise DataError(f"bad synthetic data source {spec!r}; write e.g. synthetic:n=500,size=128,seed=0")
        options[key] = int(value)
    return options


def _check_scheme(scheme: str | None) -> str:
    scheme = "default" if scheme is None else scheme
    if scheme not in SCHEMES:
        raise DataError(f"unknown label scheme {scheme!r}; use one of: {', '.join(SCHEMES)}")
    return scheme
