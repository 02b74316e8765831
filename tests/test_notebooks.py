"""Both notebooks run top to bottom (nbclient, a real kernel) on the shipped bundle."""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(path: Path, cwd: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def outputs_text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.extend(str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


@pytest.fixture(autouse=True)
def shipped_bundle():
    from xcyto.explain import default_bundle_path

    if not (default_bundle_path() / "bundle.json").is_file():
        pytest.skip("no shipped demo bundle (build it with 'make artifacts')")


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_audit.ipynb"])
def test_notebooks_are_committed_without_outputs(name):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


def test_quickstart_notebook_runs_and_draws(tmp_path):
    notebook = run_notebook(NOTEBOOKS / "01_quickstart.ipynb", tmp_path)
    images = sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
    assert images >= 3  # the explanation, the map, the "why not" figure
    assert "Explanation(predicted=" in outputs_text(notebook)


def test_audit_notebook_finds_the_planted_label_errors(tmp_path):
    notebook = run_notebook(NOTEBOOKS / "02_audit.ipynb", tmp_path)
    assert "planted errors in the top 3: True" in outputs_text(notebook)
    assert (tmp_path / "audit-demo" / "report.html").is_file()
