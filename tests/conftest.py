"""Shared fixtures: where the real data lives (skip cleanly when it is absent).

Builders of small on-disk datasets live in ``tests/fixtures.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """Real data folder: ``$XCYTO_DATA``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("XCYTO_DATA", REPO.parent / "shared" / "data"))


def _real_folder(name: str) -> Path:
    folder = data_root() / name
    if not folder.is_dir():
        pytest.skip(f"real data {folder} not present (set XCYTO_DATA)")
    return folder


@pytest.fixture(scope="session")
def herlev_root() -> Path:
    """The 917-cell Herlev folder (224 px JPEGs in 7 class folders)."""
    return _real_folder("herlev")


@pytest.fixture(scope="session")
def herlev_masks_root() -> Path:
    """The 40 px Herlev copy with ``-d.bmp`` nucleus/cytoplasm masks."""
    return _real_folder("herlev-40px-masks")


@pytest.fixture(scope="session")
def herlev_dataset(herlev_root):
    """The real Herlev dataset, loaded once per session (do not modify its samples)."""
    from xcyto.data import load_dataset

    return load_dataset(herlev_root)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder of a small CNN trained for seconds on synthetic cells (with its bundle)."""
    from tests.tiny import make_tiny_bundle

    run_dir = tmp_path_factory.mktemp("tiny-run")
    make_tiny_bundle(run_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run):
    """The bundle of ``tiny_run`` (do not modify it: it is shared by the session)."""
    import xcyto

    return xcyto.load(tiny_run / "bundle")
