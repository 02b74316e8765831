"""requirements.lock: every direct requirement pinned, and inside pyproject.toml's range."""
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO
from tools.lock import moved, read_lock


def _direct_requirements() -> list[Requirement]:
    """Every requirement of the project and its extras; an extra that names the project itself
    (``dev`` includes ``xcyto[docs]``) stands for that extra's own requirements."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    texts = project["dependencies"] + [t for extra in project["optional-dependencies"].values() for t in extra]
    requirements = [Requirement(text) for text in texts]
    itself = [r for r in requirements if canonicalize_name(r.name) == canonicalize_name(project["name"])]
    assert all(r.extras <= project["optional-dependencies"].keys() for r in itself)
    return [r for r in requirements if r not in itself]


def test_every_direct_requirement_is_locked_inside_its_range():
    pins = read_lock(REPO / "requirements.lock")
    for requirement in _direct_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {requirement.specifier}"


def test_lock_pins_one_exact_version_per_package(tmp_path):
    lines = [line for line in (REPO / "requirements.lock").read_text().splitlines() if line and not line.startswith("#")]
    assert lines and all(line.count("==") == 1 for line in lines)
    names = [canonicalize_name(line.split("==")[0]) for line in lines]
    assert len(names) == len(set(names))
    old, new = tmp_path / "old.lock", tmp_path / "new.lock"
    old.write_text("# header\nnumpy==2.3.0\nPillow==12.0.0\nsix==1.0\n")
    new.write_text("numpy==2.4.6\npillow==12.0.0\ntqdm==4.70.1\n")
    assert moved(old, new) == ["numpy: 2.3.0 -> 2.4.6", "six: 1.0 -> (none)", "tqdm: (none) -> 4.70.1"]


def test_check_names_a_missing_pin_and_a_wrong_version(tmp_path):
    from importlib import metadata

    from tools.lock import check, needed

    installed = needed()
    assert {"numpy", "torch", "pytest"} <= installed.keys()  # runtime and dev needs, transitively
    lock = tmp_path / "requirements.lock"
    pins = {name: version for name, version in installed.items() if name != "numpy"}
    pins["pillow"] = "0.0.1"
    lock.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    problems = check(lock)
    assert len(problems) == 2
    assert problems[0].startswith(f"numpy {metadata.version('numpy')} is needed but not in requirements.lock")
    assert problems[1] == f"pillow is {metadata.version('pillow')}, requirements.lock says 0.0.1"
