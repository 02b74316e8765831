"""Missing real data or a missing Chromium: a skip with a reason on a user's machine, a failure
under ``XCYTO_REQUIRE_DATA=1`` (CI), so that CI cannot pass by skipping."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import conftest

REPO = Path(__file__).resolve().parents[1]

GENERATED = '''
import tools.demo_browser

from tests.conftest import require_chromium


def test_needs_herlev(herlev_root):
    assert herlev_root.is_dir()


def test_needs_the_masks(herlev_masks_dataset):
    assert len(herlev_masks_dataset)


def test_needs_chromium(monkeypatch, tmp_path):
    monkeypatch.setattr(tools.demo_browser, "CHROMIUM", tmp_path / "no-chromium")
    require_chromium()
'''


def _run_generated(tmp_path: Path, required: str | None) -> subprocess.CompletedProcess:
    """pytest in a subprocess on GENERATED, with tests/conftest.py as a plugin and
    ``XCYTO_DATA`` an empty folder."""
    folder = tmp_path / ("required" if required else "optional")
    folder.mkdir()
    (folder / "test_generated.py").write_text(GENERATED)
    (folder / "pytest.ini").write_text("[pytest]\n")  # not the repository's settings
    (tmp_path / "empty-data").mkdir(exist_ok=True)
    environment = {key: value for key, value in os.environ.items() if key != conftest.REQUIRE_ENV}
    environment.update(XCYTO_DATA=str(tmp_path / "empty-data"), PYTHONPATH=str(REPO))
    if required is not None:
        environment[conftest.REQUIRE_ENV] = required
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-rA",
                           "-q", f"--basetemp={folder / 'basetemp'}", str(folder / "test_generated.py")],
                          cwd=folder, env=environment, capture_output=True, text=True, timeout=120)


def test_without_the_variable_missing_data_and_chromium_skip_with_a_reason(tmp_path):
    result = _run_generated(tmp_path, required=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 skipped" in result.stdout, result.stdout
    assert f"real data {tmp_path / 'empty-data' / 'herlev'} not present (set XCYTO_DATA)" in result.stdout
    assert f"real data {tmp_path / 'empty-data' / 'herlev-40px-masks'} not present" in result.stdout
    assert "no-chromium not installed (apt-get install -y chromium)" in result.stdout


def test_under_xcyto_require_data_missing_data_and_chromium_fail(tmp_path):
    result = _run_generated(tmp_path, required="1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "skipped" not in result.stdout and "passed" not in result.stdout.splitlines()[-1], result.stdout
    # the fixtures fail at setup (errors), the test that calls require_chromium() fails
    assert "1 failed" in result.stdout and "2 errors" in result.stdout, result.stdout
    assert "XCYTO_REQUIRE_DATA=1 requires it" in result.stdout
    assert f"real data {tmp_path / 'empty-data' / 'herlev'} not present" in result.stdout
    assert "no-chromium not installed" in result.stdout


@pytest.mark.parametrize("value", [None, "", "0", "yes"])
def test_only_the_value_1_requires(value, tmp_path, monkeypatch):
    monkeypatch.setenv("XCYTO_DATA", str(tmp_path))
    if value is None:
        monkeypatch.delenv(conftest.REQUIRE_ENV, raising=False)
    else:
        monkeypatch.setenv(conftest.REQUIRE_ENV, value)
    with pytest.raises(pytest.skip.Exception, match="not present"):
        conftest._real_folder("herlev")
    monkeypatch.setenv(conftest.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="herlev not present.*XCYTO_REQUIRE_DATA=1 requires it"):
        conftest._real_folder("herlev")


def test_present_data_and_chromium_are_returned_whatever_the_variable(tmp_path, monkeypatch):
    import tools.demo_browser

    (tmp_path / "herlev").mkdir()
    (tmp_path / "chromium").write_text("")
    monkeypatch.setenv("XCYTO_DATA", str(tmp_path))
    monkeypatch.setattr(tools.demo_browser, "CHROMIUM", tmp_path / "chromium")
    for value in ("0", "1"):
        monkeypatch.setenv(conftest.REQUIRE_ENV, value)
        assert conftest._real_folder("herlev") == tmp_path / "herlev"
        assert conftest.require_chromium() == tmp_path / "chromium"
