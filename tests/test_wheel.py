"""The wheel is the library whole: built from the sources, installed outside the repository, it
explains a cell with the learned segmenter and finds the shipped bundles only where told."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

OUTSIDE = """
import json, sys
from pathlib import Path
import numpy as np
import xcyto
from xcyto.errors import BundleError
from xcyto.morphology import preferred_segmenter

site, bundle = Path(sys.argv[1]), sys.argv[2]
report = {"xcyto": xcyto.__file__, "segmenter": preferred_segmenter()}
image = np.full((64, 64, 3), 200, np.uint8)
yy, xx = np.mgrid[:64, :64]
image[(yy - 32) ** 2 + (xx - 32) ** 2 < 22 ** 2] = (170, 140, 190)   # cytoplasm
image[(yy - 32) ** 2 + (xx - 32) ** 2 < 8 ** 2] = (60, 30, 110)      # nucleus
e = xcyto.explain(image, bundle=bundle, methods="gradcam", neighbours=0)
report["measured_with"] = e.morphology.settings["segmenter"] if e.morphology is not None else None
report["nucleus_area"] = e.morphology.features.get("nucleus_area") if e.morphology is not None else None
try:
    xcyto.load("herlev")
    report["herlev"] = "loaded"
except BundleError as error:
    report["herlev"] = str(error)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, list[str]]:
    """The wheel built from a copy of the sources (the repository stays clean), installed with
    ``pip --target`` into a folder of its own; its file list."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO / "xcyto", source / "xcyto", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(source)],
                   check=True, capture_output=True, text=True, timeout=300)
    wheel = next((root / "dist").glob("xcyto-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(root / "site"), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    return root / "site", names


def test_the_wheel_carries_what_the_library_reads_at_run_time(installed):
    _, names = installed
    sources = sorted(str(p.relative_to(REPO)) for p in (REPO / "xcyto").rglob("*.py"))
    assert sorted(n for n in names if n.endswith(".py")) == sources
    for needed in ("xcyto/morphology/weights/segmenter.safetensors", "xcyto/morphology/weights/segmenter.json",
                   *(str(p.relative_to(REPO)) for p in (REPO / "xcyto" / "audit" / "templates").glob("*.j2"))):
        assert needed in names
    assert not [n for n in names if n.startswith(("artifacts/", "tests/")) or "bundle" in Path(n).name and n.endswith(".safetensors")]


def run_outside(site: Path, bundle: Path, tmp_path: Path, **env) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("XCYTO_")}
    environment.update(PYTHONPATH=str(site), **env)
    completed = subprocess.run([sys.executable, "-c", OUTSIDE, str(site), str(bundle)], cwd=tmp_path, env=environment,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_installed_elsewhere_it_explains_with_the_learned_segmenter(installed, tiny_run, tmp_path):
    site, _ = installed
    report = run_outside(site, tiny_run / "bundle", tmp_path)
    assert Path(report["xcyto"]).is_relative_to(site)  # the installed copy, not the repository
    assert report["segmenter"] == "learned" and report["measured_with"] == "learned"
    assert report["nucleus_area"] > 0
    assert "XCYTO_BUNDLES" in report["herlev"] and "is not on this machine" in report["herlev"]


def test_the_shipped_bundles_are_found_through_the_environment(installed, tiny_run, tmp_path):
    site, _ = installed
    if not (REPO / "artifacts" / "herlev-bundle" / "bundle.json").is_file():
        pytest.fail("artifacts/herlev-bundle is missing from the repository (make artifacts)")
    report = run_outside(site, tiny_run / "bundle", tmp_path, XCYTO_BUNDLES=str(REPO / "artifacts"))
    assert report["herlev"] == "loaded"
