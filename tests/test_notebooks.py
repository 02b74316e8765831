"""Both notebooks run top to bottom (nbclient, a real kernel) on the shipped bundle."""
from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(path: Path, cwd: Path):
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
    """The notebooks run on the demo bundle the repository ships: it must be there."""
    from xcyto.explain import default_bundle_path

    path = default_bundle_path()
    assert (path / "bundle.json").is_file(), f"no shipped demo bundle at {path} (build it with 'make artifacts')"


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_audit.ipynb"])
def test_notebooks_are_committed_without_outputs(name):
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
