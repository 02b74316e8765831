"""Shared fixtures: where the real data lives, the session's tiny trained bundle.

Real data (``$XCYTO_DATA``, else ``../shared/data``) and the system Chromium of the browser
tests may be missing on a user's machine: the tests that need them then skip, with a reason.
CI has both and sets ``XCYTO_REQUIRE_DATA=1``: there a missing one FAILS the tests instead,
so a broken CI machine cannot pass the suite by skipping.

Builders of small on-disk datasets live in ``tests/fixtures.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Set to 1 (CI does) to make missing real data or a missing Chromium a failure, not a skip.
REQUIRE_ENV = "XCYTO_REQUIRE_DATA"


def data_root() -> Path:
    """Real data folder: ``$XCYTO_DATA``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("XCYTO_DATA", REPO.parent / "shared" / "data"))


def required() -> bool:
    """Whether missing real data or tools fail the tests (``XCYTO_REQUIRE_DATA=1``, as in CI)."""
    return os.environ.get(REQUIRE_ENV, "").strip() == "1"


def missing(reason: str):
    """Skip with ``reason``; fail with it when ``XCYTO_REQUIRE_DATA=1``."""
    if required():
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires it", pytrace=False)
    pytest.skip(reason)


def _real_folder(name: str) -> Path:
    folder = data_root() / name
    if not folder.is_dir():
        missing(f"real data {folder} not present (set XCYTO_DATA)")
    return folder


def require_chromium() -> Path:
    """The system Chromium the browser tests drive: skip without it, fail under ``XCYTO_REQUIRE_DATA=1``."""
    from tools.demo_browser import CHROMIUM

    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    return CHROMIUM


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
def herlev_masks_dataset(herlev_masks_root):
    """The 40 px Herlev copy with its masks, loaded once per session (do not modify it)."""
    import warnings

    from xcyto.data import DataWarning, load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # "groups are unknown": the copy is renamed
        return load_dataset(herlev_masks_root)


@pytest.fixture(scope="session")
def herlev_with_masks(herlev_dataset, herlev_masks_dataset):
    """The Herlev cells that pair with a 40 px copy's cell, carrying its masks (``transfer_masks``),
    made once per session (do not modify it)."""
    from xcyto.data import transfer_masks

    return transfer_masks(herlev_dataset, herlev_masks_dataset)


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


# -- session fixtures for plain helper functions -------------------------------------------------
_SESSION: dict = {}


@pytest.fixture(scope="session", autouse=True)
def _session_request(request):
    """Keeps the session's fixture request, so that helpers called outside a fixture signature
    (``tests/test_explain_support.py``) reuse the session fixtures instead of building their own."""
    _SESSION["request"] = request
    yield
    _SESSION.clear()


def session_fixture(name: str):
    """The value of the session-scoped fixture ``name`` (made on first use, shared afterwards)."""
    if "request" not in _SESSION:
        raise RuntimeError(f"session fixture {name!r} asked for outside a pytest session")
    return _SESSION["request"].getfixturevalue(name)
