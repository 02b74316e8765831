"""Any class-per-folder tree (``root/<class>/<image>``) or CSV manifest of cells.

These layouts carry no source-image information unless a CSV has a ``group``
column, so each cell is its own group and a split cannot keep near-duplicates
together: the dataset says so in its warnings.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from xcyto.data._io import ProblemLog, is_image_file, read_images
from xcyto.data._records import CellDataset, CellSample
from xcyto.errors import DataError

CSV_REQUIRED_COLUMNS = ("path", "label")
CSV_OPTIONAL_COLUMNS = ("group",)
NO_GROUPS_NOTE = ("no source-image groups in this layout: each cell is its own group, so splits "
                  "cannot keep near-duplicate cells of one slide together")


def is_class_folder_tree(root: Path) -> bool:
    """Whether ``root`` holds at least one sub-folder with an image in it."""
    return root.is_dir() and any(images_under(folder) for folder in subfolders(root))


def is_csv_manifest(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".csv"


def load_folder(root: Path, scheme: str | None = None, *, progress: bool | None = None) -> CellDataset:
    """Cells from ``root/<class>/**/<image>``; classes sorted by folder name."""
    root = require_folder(root)
    _refuse_scheme(scheme, "a class-per-folder tree")
    log = ProblemLog(root.name)
    loose = [p.name for p in root.iterdir() if p.is_file() and is_image_file(p)]
    for name in loose:
        log.add("images directly in the root folder, ignored (put them in a class folder)", name)
    files_by_class = {}
    for folder in subfolders(root):
        files = images_under(folder)
        if files:
            files_by_class[folder.name] = files
        else:
            log.add("class folders without images, ignored", folder.name)
    if not files_by_class:
        raise DataError(f"{root}: no class folders with images; expected {root}/<class name>/<image>.png|jpg|bmp|tif")
    classes = sorted(files_by_class)
    entries = [(path, classes.index(name)) for name, files in files_by_class.items() for path in files]
    images = read_images([path for path, _ in entries], log, progress, f"reading {root.name}")
    samples = []
    for (path, label), image in zip(entries, images):
        if image is None:
            continue
        cell_id = path.relative_to(root).as_posix()
        samples.append(CellSample(image=image, label=label, class_name=classes[label],
                                  cell_id=cell_id, group=cell_id, path=path))
    log.note(NO_GROUPS_NOTE)
    return finish_dataset(samples, classes, log, name=root.name, root=root, layout="folder")


def load_csv(csv_path: Path, scheme: str | None = None, *, progress: bool | None = None) -> CellDataset:
    """Cells listed in a CSV with columns ``path,label[,group]``.

    Paths are relative to the CSV's folder (absolute paths work too); ``label`` is a
    class name; classes are sorted by name. Rows whose file is missing or unreadable
    are skipped with one warning naming them.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV manifest not found")
    _refuse_scheme(scheme, "a CSV manifest")
    header, rows = _read_csv_rows(csv_path)
    log = ProblemLog(csv_path.name)
    base = csv_path.parent
    entries = []
    seen = set()
    for line_number, row in rows:
        path_text, class_name = row["path"].strip(), row["label"].strip()
        if not path_text or not class_name:
            log.add("rows without a path or label, skipped", f"line {line_number}")
            continue
        path = Path(path_text) if Path(path_text).is_absolute() else base / path_text
        if not path.is_file():
            log.add("files listed but missing, skipped", path_text)
            continue
        cell_id = Path(path_text).as_posix()
        if cell_id in seen:
            log.add("rows listing a file twice, skipped", f"line {line_number}: {path_text}")
            continue
        seen.add(cell_id)
        group = (row.get("group") or "").strip() or cell_id
        entries.append((path, class_name, cell_id, group))
    classes = sorted({class_name for _, class_name, _, _ in entries})
    images = read_images([entry[0] for entry in entries], log, progress, f"reading {csv_path.name}")
    samples = [
        CellSample(image=image, label=classes.index(class_name), class_name=class_name,
                   cell_id=cell_id, group=group, path=path)
        for (path, class_name, cell_id, group), image in zip(entries, images)
        if image is not None
    ]
    if "group" not in header:
        log.note(NO_GROUPS_NOTE)
    return finish_dataset(samples, classes, log, name=csv_path.stem, root=base, layout="csv")


def _read_csv_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The lower-cased header and ``(line number, row)`` pairs, columns checked."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip().lower() for name in (reader.fieldnames or [])]
            _check_columns(header, csv_path)
            rows = []
            for row in reader:
                values = {key.strip().lower(): (value or "") for key, value in row.items() if key is not None}
                rows.append((reader.line_num, values))
            return header, rows
    except UnicodeDecodeError:
        raise DataError(f"{csv_path}: not a UTF-8 text CSV") from None
    except csv.Error as error:
        raise DataError(f"{csv_path}: malformed CSV ({error})") from None


def _check_columns(header: list[str], csv_path: Path) -> None:
    if not header:
        raise DataError(f"{csv_path}: empty CSV; expected a header line 'path,label[,group]'")
    known = CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS
    unknown = [name for name in header if name not in known]
    if unknown:
        raise DataError(f"{csv_path}: unknown column(s) {', '.join(map(repr, unknown))}; "
                        f"a cell manifest has the columns path,label[,group]")
    missing = [name for name in CSV_REQUIRED_COLUMNS if name not in header]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {', '.join(map(repr, missing))}; "
                        f"a cell manifest has the columns path,label[,group]")


def require_folder(root) -> Path:
    """``root`` as a Path, or a DataError saying it is missing or not a folder."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    return root


def subfolders(root: Path) -> list[Path]:
    """Visible sub-folders of ``root``, in natural order."""
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def images_under(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, in natural order of their relative paths."""
    files = (p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    return sorted(files, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def natural_key(text: str) -> list:
    """Sort key that puts ``2-9`` before ``2-10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", text)]


def finish_dataset(samples: list[CellSample], classes: list[str], log: ProblemLog, *, name: str,
                   root: Path, layout: str) -> CellDataset:
    """Report the problems once and wrap the samples, or fail if nothing was readable."""
    if not samples:
        details = "; ".join(log.messages()) or "no image files found"
        raise DataError(f"{root}: no readable cells ({details})")
    duplicate_ids = len(samples) - len({sample.cell_id for sample in samples})
    if duplicate_ids:
        raise DataError(f"{root}: {duplicate_ids} cells share a cell id; file names must be unique per class")
    return CellDataset(samples=samples, classes=list(classes), name=name, root=root,
                       layout=layout, warnings=log.report())


def _refuse_scheme(scheme: str | None, what: str) -> None:
    if scheme not in (None, "default"):
        raise DataError(f"label scheme {scheme!r} is not available for {what}; only Herlev has the 'binary' scheme")
