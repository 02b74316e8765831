"""The installed environment against ``requirements.lock``, the set of versions the suite passed on.

    python tools/lock.py check           exit 1 if a package that xcyto[dev] needs here is
                                         missing from the lock or installed at another version
    python tools/lock.py write LOCK      the installed environment as the lock, with a header
    python tools/lock.py moved OLD NEW   the packages whose versions differ between two locks

``make`` runs ``check`` after every install, so a lock that lacks a new dependency (added to
pyproject.toml without ``make lock``) fails loudly instead of installing whatever is newest.
"""
from __future__ import annotations

import platform
import sys
from datetime import date
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of the ``name==version`` lines of a lock file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def needed(project: str = "xcyto", extras: tuple[str, ...] = ("dev",)) -> dict[str, str]:
    """Every distribution ``project[extras]`` needs on this machine, with its installed version
    (``""`` when it is not installed), following markers the way pip does."""
    found: dict[str, str] = {}
    pending = [(project, set(extras))]
    while pending:
        name, wanted_extras = pending.pop()
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            found[canonicalize_name(name)] = ""
            continue
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker and not any(requirement.marker.evaluate({"extra": extra})
                                              for extra in wanted_extras | {""}):
                continue
            key = canonicalize_name(requirement.name)
            if key not in found:
                found[key] = _installed_version(key)
                pending.append((requirement.name, set(requirement.extras)))
    found.pop(canonicalize_name(project), None)
    return found


def _installed_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def check(lock: Path = LOCK) -> list[str]:
    """What is wrong with this environment against ``lock``, one line each (empty: all good)."""
    pins = read_lock(lock)
    problems = []
    for name, version in sorted(needed().items()):
        if name not in pins:
            problems.append(f"{name} {version or '(not installed)'} is needed but not in {lock.name}: run `make lock`")
        elif version != pins[name]:
            problems.append(f"{name} is {version or 'not installed'}, {lock.name} says {pins[name]}")
    return problems


def write(lock: Path) -> None:
    """The installed distributions xcyto[dev] needs, pinned, behind a header saying where."""
    pins = needed()
    missing = sorted(name for name, version in pins.items() if not version)
    if missing:
        raise SystemExit(f"not installed, cannot lock: {', '.join(missing)}")
    header = [
        "# Exact versions of everything xcyto[dev] needs, as installed when the whole test suite",
        "# passed. Used as pip constraints by the Makefile; regenerate with `make lock`, never by hand.",
        f"# Locked {date.today().isoformat()} on CPython {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}.",
    ]
    body = [f"{_display_name(name)}=={version}" for name, version in sorted(pins.items())]
    temporary = lock.with_suffix(".tmp")
    temporary.write_text("\n".join(header + body) + "\n")
    temporary.replace(lock)


def _display_name(name: str) -> str:
    return metadata.distribution(name).metadata["Name"]


def moved(old: Path, new: Path) -> list[str]:
    """``name: old -> new`` for every package added, removed or re-versioned."""
    before, after = read_lock(old), read_lock(new)
    return [f"{name}: {before.get(name, '(none)')} -> {after.get(name, '(none)')}"
            for name in sorted(before.keys() | after.keys()) if before.get(name) != after.get(name)]


def main(argv: list[str]) -> int:
    command, *paths = argv or ["check"]
    if command == "check":
        problems = check(Path(paths[0]) if paths else LOCK)
        for line in problems:
            print(f"lock: {line}", file=sys.stderr)
        return 1 if problems else 0
    if command == "write" and len(paths) == 1:
        write(Path(paths[0]))
        return 0
    if command == "moved" and len(paths) == 2:
        print("\n".join(moved(Path(paths[0]), Path(paths[1]))) or "no version moved")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
