"""The recipe-search table is remade from finished runs without losing the doc's written findings."""
import importlib.util
import json
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "recipe_search.py"


def _tool():
    spec = importlib.util.spec_from_file_location("recipe_search", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_lists_finished_candidates_and_keeps_the_findings(tmp_path):
    tool = _tool()
    scores = {"accuracy": 0.5, "macro_f1": 0.25}
    run = tmp_path / "runs" / "B" / "fold-0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"val": scores, "test": scores, "best_epoch": 3,
                                                  "epochs_run": 4, "train_seconds": 120}))
    doc = tmp_path / "recipe_search.md"
    doc.write_text(f"old table\n\n{tool.FINDINGS}\n\nB wins, written by hand.\n")

    tool.write_table(tmp_path / "runs", doc)

    text = doc.read_text()
    assert "old table" not in text
    assert "| B | backbone at the head's learning rate |" in text and "| 0.500 | 0.250 |" in text
    assert "| A |" not in text and "Not run yet" in text and "A (previous default" in text
    assert text.endswith(f"{tool.FINDINGS}\n\nB wins, written by hand.\n")
