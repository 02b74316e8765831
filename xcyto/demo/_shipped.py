"""What the demo serves and how: its defaults, and the bundles and example cells shipped in
``artifacts/``. Light (no torch, no gradio), so the command line can read it at once."""
from __future__ import annotations

from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: Largest upload the server accepts (images are also refused above
#: ``xcyto.data._io.MAX_PIXELS`` pixels, from their header, before decoding).
MAX_FILE_SIZE = "20mb"
NEIGHBOURS = 8
BUNDLE_ENV = "XCYTO_BUNDLE"  # as xcyto.explain._api.BUNDLE_ENV (not imported: it pulls in torch)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
REPO = Path(__file__).resolve().parents[2]


#: The bundles shipped in ``artifacts/``, in the order the demo offers them: label, bundle
#: folder, folder of held-out example cells.
SHIPPED = (("Herlev: real cells, 7 classes", "herlev-bundle", "examples-herlev"),
           ("Synthetic cells (demonstration)", "demo-bundle", "examples"))


def default_examples() -> Path:
    """Held-out synthetic cells written by ``artifacts/build_demo_bundle.py``."""
    return REPO / "artifacts" / "examples"


def shipped_bundles() -> dict[str, tuple[Path, Path]]:
    """``{label: (bundle folder, examples folder)}`` of the shipped bundles present on disk."""
    found = {}
    for label, bundle, examples in SHIPPED:
        folder = REPO / "artifacts" / bundle
        if (folder / "bundle.json").is_file():
            found[label] = (folder, REPO / "artifacts" / examples)
    return found


def example_files(folder: Path | None) -> list[Path]:
    """The image files of ``folder``, sorted by name (none when it is missing)."""
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
