"""The training-recipe search on Herlev: every candidate trained on the training folds of
fold 0 of the 5-fold group-aware split, chosen on its validation cells (carved from those
training folds), and reported on fold 0's test cells, which the choice never looks at.

    python tools/recipe_search.py [--data ../shared/data/herlev] [--only A,B] [--list]

Each candidate is an ``xcyto compare`` run (resumable: run the script again to continue,
finished candidates are skipped), in ``runs/recipe-search``. The table goes to
``docs/recipe_search.md``: validation accuracy and macro-F1 (what the choice uses), fold-0
test accuracy and macro-F1, the best and the last epoch, and the training time.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Settings every candidate shares unless it says otherwise (a search at 160 px keeps each
#: run near 10 minutes on 2 CPU cores; input size is searched on its own).
COMMON = dict(image_size=160, epochs=12, batch_size=16, patience=0, seed=0, balance="none")

#: The heading from which docs/recipe_search.md is written by hand (kept when the table is remade).
FINDINGS = "## What the search found"

#: label -> (architecture, overrides, what it tests)
CANDIDATES = {
    "A": ("efficientnet_lite0", {}, "previous default: backbone lr x0.1, cosine"),
    "B": ("efficientnet_lite0", {"backbone_lr_mult": 1.0}, "backbone at the head's learning rate"),
    "C": ("efficientnet_lite0", {"backbone_lr_mult": 1.0, "schedule": "onecycle"}, "B, one-cycle schedule"),
    "D": ("efficientnet_lite0", {"backbone_lr_mult": 0.3}, "backbone lr x0.3"),
    "E": ("efficientnet_lite0", {"backbone_lr_mult": 1.0, "balance": "loss"}, "B, class-balanced loss"),
    "F": ("efficientnet_lite0", {"backbone_lr_mult": 1.0, "label_smoothing": 0.0}, "B, no label smoothing"),
    "G": ("efficientnet_lite0", {"backbone_lr_mult": 1.0, "lr": 3e-3}, "B, learning rate 3e-3"),
    "H": ("efficientnet_lite0", {"backbone_lr_mult": 1.0, "rotation": "dihedral"}, "B, the 8 dihedral views only"),
    "I": ("efficientnet_lite0", {"backbone_lr_mult": 1.0, "stain_jitter": 0.15}, "B, stronger HED stain jitter"),
    "J": ("efficientnet_lite0", {"backbone_lr_mult": 1.0, "mixup": 0.2, "cutmix": 1.0}, "B, MixUp/CutMix"),
    "K": ("efficientnet_lite0", {"backbone_lr_mult": 1.0, "ema": 0.99}, "B, moving average of the weights"),
    "L": ("efficientnet_lite0", {"backbone_lr_mult": 1.0, "epochs": 24}, "B, 24 epochs"),
    "M128": ("efficientnet_lite0", {"backbone_lr_mult": 1.0, "image_size": 128}, "B at 128 px"),
    "M224": ("efficientnet_lite0", {"backbone_lr_mult": 1.0, "image_size": 224}, "B at 224 px"),
    "M260": ("efficientnet_lite0", {"backbone_lr_mult": 1.0, "image_size": 260}, "B at 260 px"),
    "N1": ("efficientnet_lite1", {"backbone_lr_mult": 1.0}, "B with EfficientNet-Lite1"),
    "N2": ("efficientnet_lite2", {"backbone_lr_mult": 1.0}, "B with EfficientNet-Lite2"),
    "R18": ("resnet18", {"weights": None, "lr": 2e-3, "backbone_lr_mult": 1.0}, "ResNet-18 from scratch"),
    "R50": ("resnet50", {"weights": None, "lr": 2e-3, "backbone_lr_mult": 1.0, "image_size": 128},
            "ResNet-50 from scratch (at 128 px to fit the CPU budget)"),
    "P": ("efficientnet_lite0", {"linear_probe": True, "image_size": 224},
          "frozen ImageNet features + logistic regression (the fast baseline)"),
}


def linear_probe(data: str, out: Path, label: str, architecture: str, image_size: int) -> None:
    """Pooled ImageNet features of every cell (no training of the network), then a logistic
    regression whose strength is chosen on the validation cells; metrics.json like a run's."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from xcyto.atomic import write_json_atomic
    from xcyto.data import load_dataset
    from xcyto.data import load_split_manifest
    from xcyto.data import eval_transform
    from xcyto.models import create, get_spec
    from xcyto.training._metrics import classification_metrics, macro_f1

    run_dir = out / label / "fold-0"
    if (run_dir / "metrics.json").is_file():
        print(f"{label}: done already")
        return
    import torch

    dataset = load_dataset(data)
    split = load_split_manifest(out / "splits" / "fold-0.csv", dataset)
    spec = get_spec(architecture)
    model = create(architecture, num_classes=len(dataset.classes)).eval()
    transform = eval_transform(image_size, mean=spec.mean, std=spec.std)
    started = time.perf_counter()
    with torch.no_grad():
        features = np.concatenate([model.forward_embedding(torch.stack([transform(s.image) for s in
                                                                          dataset.samples[i:i + 32]])).numpy()
                                   for i in range(0, len(dataset), 32)])
    mean, scale = features[split.train].mean(0), features[split.train].std(0) + 1e-6
    features = (features - mean) / scale
    labels = dataset.labels
    best = None
    for strength in (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0):
        fitted = LogisticRegression(C=strength, max_iter=3000).fit(features[split.train], labels[split.train])
        score = macro_f1(labels[split.val], fitted.predict(features[split.val]), len(dataset.classes))
        if best is None or score > best[0]:
            best = (score, strength, fitted)
    _, strength, fitted = best
    seconds = time.perf_counter() - started
    logits = {name: fitted.decision_function(features[getattr(split, name)]) for name in ("val", "test")}
    metrics = {name: classification_metrics(logits[name], labels[getattr(split, name)], list(dataset.classes))
               for name in ("val", "test")}
    metrics.update(best_epoch=f"C={strength}", epochs_run="-", train_seconds=seconds, evaluated_on="test")
    write_json_atomic(run_dir / "metrics.json", metrics)
    print(f"{label}: C={strength}, val macro-F1 {metrics['val']['macro_f1']:.3f}, {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("XCYTO_DATA", str(ROOT.parent / "shared" / "data")) + "/herlev")
    parser.add_argument("--out", default=str(ROOT / "runs" / "recipe-search"))
    parser.add_argument("--only", default=None, help="comma-separated candidate labels (default: all)")
    parser.add_argument("--list", action="store_true", help="print the candidates and stop")
    args = parser.parse_args()
    if args.list:
        for label, (architecture, overrides, note) in CANDIDATES.items():
            print(f"{label}: {architecture} {overrides} - {note}")
        return
    from xcyto.training._compare import ModelEntry, compare

    labels = list(CANDIDATES) if args.only is None else [label.strip() for label in args.only.split(",")]
    for label in labels:
        architecture, overrides, _ = CANDIDATES[label]
        if overrides.get("linear_probe"):
            linear_probe(args.data, Path(args.out), label, architecture, overrides["image_size"])
        else:
            entry = ModelEntry(architecture=architecture, overrides={**COMMON, **overrides}, label=label)
            started = time.perf_counter()
            compare(args.data, [entry], args.out, folds=5, seed=0, ensemble=False, only_folds=[0])
            print(f"== {label}: {time.perf_counter() - started:.0f} s")
        write_table(Path(args.out), ROOT / "docs" / "recipe_search.md")


def write_table(out: Path, path: Path) -> None:
    """The search table from every finished candidate's fold-0 run; the doc's hand-written
    findings (everything from ``FINDINGS`` on) are kept as they are."""
    from xcyto.atomic import write_text_atomic

    previous = path.read_text() if path.is_file() else ""
    findings = previous[previous.index(FINDINGS):] if FINDINGS in previous else ""

    lines = ["# Training-recipe search on Herlev (fold 0 of 5, group-aware)", "",
             "Chosen on the validation cells carved from fold 0's training folds; fold 0's test cells "
             "are reported beside, never used to choose. Shared: " + ", ".join(f"{k} {v}" for k, v in COMMON.items())
             + " (a candidate's own settings override these). Made by `python tools/recipe_search.py`.", "",
             "| candidate | what it tests | settings | val accuracy | val macro-F1 | test accuracy | test macro-F1 "
             "| best / last epoch | training time (min) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, (architecture, overrides, note) in CANDIDATES.items():
        metrics_path = out / label / "fold-0" / "metrics.json"
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        settings = ", ".join(f"{k}={v}" for k, v in {"model": architecture, **overrides}.items())
        lines.append(f"| {label} | {note} | {settings} | {metrics['val']['accuracy']:.3f} | {metrics['val']['macro_f1']:.3f} "
                     f"| {metrics['test']['accuracy']:.3f} | {metrics['test']['macro_f1']:.3f} "
                     f"| {metrics['best_epoch']} / {metrics['epochs_run']} | {metrics['train_seconds'] / 60:.1f} |")
    missing = [label for label in CANDIDATES if not (out / label / "fold-0" / "metrics.json").is_file()]
    if missing:
        lines += ["", "Not run yet (run `python tools/recipe_search.py` to continue): " + ", ".join(
            f"{label} ({CANDIDATES[label][2]})" for label in missing) + "."]
    lines += ["", "Training times are wall-clock on 2 CPU cores, some taken while the machine did other work; "
              "an idle fold-0 run of B takes 4.5-5 minutes."]
    write_text_atomic(path, "\n".join(lines) + "\n" + (f"\n{findings}" if findings else ""))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
