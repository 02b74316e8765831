"""The network with and without its cells' measurements (``xcyto fuse``), on each fold of a
cross-validation run: the weight chosen on the fold's validation cells, both read on its test
cells, paired fold by fold.

    python tools/measure_fusion.py --cv runs/cv-herlev-auto/efficientnet_lite0 --out docs/results/herlev-cv-fusion
    python tools/measure_fusion.py --cv runs/cv-herlev-defaults/efficientnet_lite{0,1,2} --out docs/results/herlev-cv-fusion-ensemble

With several model folders, each fold's network is their equal-weight ensemble (the first
model's gallery gives the training cells' measurements; the members share the split).

Writes folds.csv (one row per fold: network, fused and their difference), summary.json (means
and the paired differences) and each fold's test probabilities (probabilities-fold-K.npz).
The cells are measured once (features.npz), with the segmenter the galleries used.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xcyto  # noqa: E402
from xcyto.atomic import atomic_path, write_json_atomic, write_text_atomic  # noqa: E402
from xcyto.data import load_dataset  # noqa: E402
from xcyto.ensemble import make_ensemble, shared_split  # noqa: E402
from xcyto.fusion import fit_fusion, measured_features  # noqa: E402
from xcyto.training import cells_in_split, classification_metrics, headline_metrics, training_data  # noqa: E402

KEYS = ("accuracy", "macro_f1", "binary_accuracy", "binary_sensitivity", "binary_specificity", "ece",
        "mean_grade_error", "serious_misses")


def save_arrays(path: Path, **arrays) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def scored(probabilities, labels, classes) -> dict:
    found = headline_metrics(classification_metrics(np.log(np.clip(probabilities, 1e-12, 1)), labels, classes))
    return {key: found[key] for key in KEYS if key in found}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cv", required=True, nargs="+",
                        help="a model's folder of a `xcyto compare` run (fold-K/bundle inside); several: their ensemble")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folders = [Path(folder) for folder in args.cv]
    bundles = sorted(p for p in folders[0].glob("fold-*/bundle") if all((f / p.parent.name / "bundle").is_dir() for f in folders))
    first = xcyto.load(bundles[0])
    dataset = load_dataset(training_data(first))
    cached = out / "features.npz"
    saved = np.load(cached, allow_pickle=False) if cached.is_file() else None
    if saved is not None and list(saved["cell_ids"]) == list(dataset.cell_ids):
        features = saved["features"]
    else:  # with the segmenter the galleries used, as `xcyto fuse` measures
        features = measured_features(first, dataset.samples, progress=True)
        save_arrays(cached, features=features, cell_ids=np.array(dataset.cell_ids))
    index_of = {cell_id: i for i, cell_id in enumerate(dataset.cell_ids)}
    rows = []
    for path in bundles:
        bundle = xcyto.load(path)
        val, _ = cells_in_split(bundle, dataset, "val")
        test, _ = cells_in_split(bundle, dataset, "test")
        rows_of = lambda cells: features[[index_of[c] for c in cells.cell_ids]]  # noqa: E731
        predictor = bundle
        if len(folders) > 1:
            predictor = make_ensemble([bundle] + [xcyto.load(f / path.parent.name / "bundle") for f in folders[1:]])
            if shared_split(predictor.members) is None:
                raise SystemExit(f"{path.parent.name}: the members were trained on different splits")
        p_val = predictor.predict_cells(val.samples).probabilities
        p_test = predictor.predict_cells(test.samples).probabilities
        fusion = fit_fusion(bundle, p_val, rows_of(val), val.labels)
        fused = fusion.fuse(p_test, rows_of(test))
        network, with_measurements = scored(p_test, test.labels, bundle.classes), scored(fused, test.labels, bundle.classes)
        row = {"fold": path.parent.name, "test_cells": len(test), "weight": fusion.weight}
        for key in KEYS:
            if key in network:
                row[f"network_{key}"], row[f"fused_{key}"] = network[key], with_measurements[key]
                row[f"difference_{key}"] = with_measurements[key] - network[key]
        rows.append(row)
        save_arrays(out / f"probabilities-{path.parent.name}.npz", network=p_test, fused=fused,
                    labels=np.asarray(test.labels), cell_ids=np.array(test.cell_ids))
        print(f"{path.parent.name}: weight {fusion.weight:.2f}, accuracy {network['accuracy']:.3f} -> "
              f"{with_measurements['accuracy']:.3f}", flush=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    write_text_atomic(out / "folds.csv", text.getvalue())
    differences = np.array([row["difference_accuracy"] for row in rows])
    summary = {"cv": [str(folder) for folder in folders], "folds": len(rows),
               "mean": {key: float(np.mean([row[key] for row in rows])) for key in rows[0] if key not in ("fold",)},
               "accuracy_difference_per_fold": differences.round(4).tolist(),
               "folds_better": int((differences > 0).sum()), "folds_worse": int((differences < 0).sum()),
               "paired_t": float(differences.mean() / (differences.std(ddof=1) / np.sqrt(len(differences))))
               if len(differences) > 1 and differences.std(ddof=1) > 0 else None}
    write_json_atomic(out / "summary.json", summary)
    print(json.dumps({k: summary[k] for k in ("accuracy_difference_per_fold", "folds_better", "folds_worse", "paired_t")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
