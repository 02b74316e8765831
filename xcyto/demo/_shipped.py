"""What the demo serves and how: its defaults, and the shipped bundles and example cells
(:mod:`xcyto.shipped`). Light (no torch, no gradio), so the command line can read it at once."""
from __future__ import annotations

from pathlib import Path

from xcyto import shipped

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: Largest upload the server accepts (images are also refused above
#: ``xcyto.data.MAX_PIXELS`` pixels, from their header, before decoding).
MAX_FILE_SIZE = "20mb"
NEIGHBOURS = 8
BUNDLE_ENV = "XCYTO_BUNDLE"  # as xcyto.explain._api.BUNDLE_ENV (not imported: it pulls in torch)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def default_examples() -> Path | None:
    """Held-out synthetic cells written by ``artifacts/build_demo_bundle.py`` (``None``: absent)."""
    return shipped.examples_path("demo")


def shipped_bundles() -> dict[str, tuple[Path, Path | None]]:
    """``{label: (bundle folder, examples folder)}`` of the shipped bundles present, Herlev first."""
    return {shipped.SHIPPED[name][2]: (folder, shipped.examples_path(name)) for name, folder in shipped.available().items()}


def example_files(folder: Path | None) -> list[Path]:
    """The image files of ``folder``, sorted by name (none when it is missing)."""
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
