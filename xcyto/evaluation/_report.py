"""Every method on every faithfulness metric, with 95 % intervals: ``evaluate_explanations``.

Metrics per cell (and the direction that is better):

- ``deletion_auc`` (lower) and ``insertion_auc`` (higher): :mod:`.perturbation`;
- ``<mask>_share`` and ``<mask>_hit`` (higher) for the masks the data has: ``nucleus``,
  ``cell`` (whole cell), ``evidence`` (synthetic cells): :mod:`.localisation`. The row
  ``chance (mask area)`` gives what a map that knows nothing scores;
- ``randomisation_rho`` (lower): Spearman rho between the trained model's maps and
  those of the fully randomised model (signed maps compared signed), on the first
  ``randomisation_cells`` cells; methods at or above the threshold are flagged:
  :mod:`.sanity`. ``randomisation_rho_magnitude``: the same on ``|map|`` (for signed
  methods only; not a flag);
- ``completeness_error`` (lower; IG only): |sum(attr) - (f(x) - f(b))| / |f(x) - f(b)|;
- ``ms_per_cell``: time per cell of the method (per batch).

Intervals: percentile bootstrap of the mean over cells (``bootstrap`` resamples, seeded).
Maps explain the predicted class of each cell.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from xcyto.errors import ExplainError
from xcyto.evaluation._localisation import localisation
from xcyto.evaluation._perturbation import deletion_insertion
from xcyto.evaluation._sanity import completeness_error, randomisation_check
from xcyto.explain import Context, explain_batch, list_methods, resolve_methods

#: Methods evaluated by default: all but the slow ones (Score-CAM, occlusion), plus the random baseline.
DEFAULT_EVALUATION_METHODS = ("gradcam", "gradcampp", "hirescam", "layercam", "eigencam", "integrated_gradients",
                              "saliency", "smoothgrad", "guided_gradcam", "random")
CHANCE = "chance (mask area)"
MASK_LABELS = {"nucleus": "nucleus", "cytoplasm": "cell", "evidence": "evidence"}
LOWER_IS_BETTER = {"deletion_auc", "randomisation_rho", "randomisation_rho_magnitude", "completeness_error",
                   "ms_per_cell"}
METRIC_ORDER = ("deletion_auc", "insertion_auc", "nucleus_share", "nucleus_hit", "cell_share", "cell_hit",
                "evidence_share", "evidence_hit", "randomisation_rho", "randomisation_rho_magnitude", "completeness_error",
                "ms_per_cell")


def bootstrap_interval(values, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: percentile bootstrap interval of the mean."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if values.size == 1 or resamples < 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return mean, float(low), float(high)


@dataclass
class EvaluationReport:
    """Per-cell values (``values[method][metric]``), summary ``rows``, mean curves, randomisation."""

    values: dict[str, dict[str, list[float]]]
    rows: list[dict]
    curves: dict[str, dict[str, list[float]]]
    randomisation: object | None
    settings: dict = field(default_factory=dict)

    def row(self, method: str, metric: str) -> dict | None:
        return next((r for r in self.rows if r["method"] == method and r["metric"] == metric), None)

    def mean(self, method: str, metric: str) -> float:
        found = self.row(method, metric)
        if found is None:
            raise KeyError(f"no {metric} for {method}")
        return found["mean"]

    def flagged(self) -> list[str]:
        """Methods whose maps survive model randomisation (they do not explain the model)."""
        if self.randomisation is None:
            return []
        return [m for m in self.randomisation.correlations if self.randomisation.flagged(m)]

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["method", "metric", "mean", "ci_low", "ci_high", "n"])
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        return buffer.getvalue()

    def to_markdown(self) -> str:
        metrics = [m for m in METRIC_ORDER if any(r["metric"] == m for r in self.rows)]
        methods = list(dict.fromkeys(r["method"] for r in self.rows))
        arrows = {m: ("↓" if m in LOWER_IS_BETTER else "↑") for m in metrics}
        lines = ["| method | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " |",
                 "|---|" + "---|" * len(metrics)]
        flagged = set(self.flagged())
        for method in methods:
            cells = []
            for metric in metrics:
                found = self.row(method, metric)
                cells.append("" if found is None else f"{found['mean']:.3f} [{found['ci_low']:.3f}, {found['ci_high']:.3f}]")
            name = f"{method} ⚠" if method in flagged else method
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        settings = self.settings
        notes = [
            "",
            f"{settings.get('cells')} cells from {settings.get('data')}, bundle {settings.get('bundle_name')} "
            f"(sha256 {str(settings.get('bundle_sha256'))[:12]}); maps explain the predicted class "
            f"(accuracy on these cells: {settings.get('accuracy', float('nan')):.3f}).",
            "Mean [95 % bootstrap interval]. ↓ lower is better, ↑ higher is better. "
            f"'{CHANCE}' is what a map that knows nothing scores.",
            f"randomisation_rho: Spearman rho between maps of the trained and the fully randomised model "
            f"({settings.get('randomisation_cells')} cells; signed maps compared signed); ⚠ = rho >= "
            f"{settings.get('randomisation_threshold')}: the maps do not depend on the learned weights. "
            "randomisation_rho_magnitude: the same on |map|, for signed methods (how much their strength, "
            "rather than their sign, follows the image).",
        ]
        return "\n".join(lines + notes) + "\n"

    def figure(self):
        """Mean deletion and insertion curves and the randomisation cascade, one colour per method."""
        import matplotlib.pyplot as plt

        from xcyto.plotting import class_colors

        methods = list(self.curves)
        colours = class_colors(methods)
        panels = 3 if self.randomisation is not None else 2
        figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6))
        for axis, kind in zip(axes, ("deletion", "insertion")):
            for method in methods:
                curve = self.curves[method]
                axis.plot(curve["fractions"], curve[kind], color=colours[method], label=method,
                          linestyle="--" if method == "random" else "-")
            axis.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "inserted"))
            axis.set_ylabel("probability of the explained class")
            axis.set_ylim(0, 1)
            axis.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} AUC is better)", fontsize=9)
        axes[0].legend(fontsize=7)
        if self.randomisation is not None:
            axis = axes[2]
            layers = self.randomisation.layers
            for method in self.randomisation.correlations:
                axis.plot(range(len(layers)), self.randomisation.mean(method), marker="o", markersize=3,
                          color=colours.get(method, "grey"), label=method)
            axis.axhline(self.randomisation.threshold, color="grey", linewidth=0.8, linestyle=":")
            axis.set_xticks(range(len(layers)), [name.replace("backbone.", "") for name in layers],
                            rotation=60, ha="right", fontsize=6)
            axis.set_ylabel("Spearman rho with trained-model maps")
            axis.set_ylim(-0.2, 1.05)
            axis.set_title("cascading randomisation (top first)", fontsize=9)
        figure.tight_layout()
        return figure

    def save(self, out) -> dict[str, Path]:
        """Write ``explanation_metrics.md``, ``.csv``, ``.json`` and ``explanation_metrics.png`` into ``out``."""
        from xcyto.atomic import write_json_atomic, write_text_atomic
        from xcyto.plotting import save_figure

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "markdown": write_text_atomic(out / "explanation_metrics.md", self.to_markdown()),
            "csv": write_text_atomic(out / "explanation_metrics.csv", self.to_csv()),
            "figure": save_figure(self.figure(), out / "explanation_metrics.png"),
        }
        payload = {"settings": self.settings, "rows": self.rows, "curves": self.curves, "values": self.values,
                   "randomisation": None if self.randomisation is None else self.randomisation.summary()}
        paths["json"] = out / "explanation_metrics.json"
        write_json_atomic(paths["json"], json.loads(json.dumps(payload, default=float)))
        return paths


def _dataset(data, n: int, seed: int):
    from xcyto.data import CellDataset, load_dataset

    if isinstance(data, CellDataset):
        return data
    if isinstance(data, str) and data == "synthetic":
        return load_dataset("synthetic", n=n, seed=seed + 1)
    return load_dataset(data)


def evaluate_explanations(bundle, data, n: int = 64, methods=None, *, seed: int = 0, batch_size: int = 16,
                          steps: int = 20, randomisation_cells: int = 8, bootstrap: int = 2000, tolerance: int = 0,
                          options: dict | None = None) -> EvaluationReport:
    """Measure ``methods`` on ``n`` cells of ``data`` (a dataset, folder, or ``"synthetic"``).

    ``steps``: points of the deletion/insertion curves. ``randomisation_cells``: cells
    for the cascading randomisation (0 skips it). ``tolerance``: pointing-game tolerance
    in pixels. ``options``: method options (e.g. ``{"steps": 32}`` for IG).
    """
    from xcyto.data import MASK_NAMES, CellTorchDataset
    from xcyto.explain import resolve_bundle
    from xcyto.models import get_spec

    bundle = resolve_bundle(bundle)
    methods = resolve_methods(methods or DEFAULT_EVALUATION_METHODS)
    names = [m.name for m in methods]
    if n < 1:
        raise ExplainError(f"n must be >= 1, got {n}")
    dataset = _dataset(data, n, seed)
    if len(dataset) == 0:
        raise ExplainError(f"{data}: no cells to evaluate on")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(dataset), size=min(n, len(dataset)), replace=False))
    samples = [dataset.samples[i] for i in chosen]
    cells = CellTorchDataset(samples, bundle.transform(), with_masks=True)
    spec = get_spec(bundle.architecture)
    mean, std = tuple(bundle.config["mean"]), tuple(bundle.config["std"])
    common = dict(layer=spec.cam_layer(bundle.input_size), embedding_layer=spec.embedding_layer, mean=mean, std=std)
    model, device = bundle.model, bundle.device
    same_classes = list(dataset.classes) == bundle.classes

    values: dict[str, dict[str, list[float]]] = {name: {} for name in [*names, CHANCE]}
    sums: dict[str, dict[str, torch.Tensor]] = {name: {} for name in names}
    correct, fractions = [], None

    def add(method, metric, tensor):
        values[method].setdefault(metric, []).extend(np.asarray(torch.as_tensor(tensor).detach().cpu(), float).tolist())

    for start in range(0, len(cells), batch_size):
        items = [cells[i] for i in range(start, min(len(cells), start + batch_size))]
        batch = torch.stack([item["image"] for item in items]).to(device)
        masks = torch.stack([item["masks"] for item in items]).to(device)
        present = torch.stack([item["mask_present"] for item in items]).to(device)
        labels = torch.tensor([item["label"] for item in items], device=device)
        result = explain_batch(model, batch, methods, None, normalise=None, options=options, **common)
        if same_classes:
            correct += (result.targets == labels).float().tolist()
        for index, mask_name in enumerate(MASK_NAMES):
            has = present[:, index]
            if has.any():
                add(CHANCE, f"{MASK_LABELS[mask_name]}_share", masks[has, index].float().mean(dim=(1, 2)))
                add(CHANCE, f"{MASK_LABELS[mask_name]}_hit", masks[has, index].float().mean(dim=(1, 2)))
        perturbing = Context(model, batch, layer=None, embedding_layer=None, mean=mean, std=std)
        for name in names:
            raw = result.raw[name]
            curves = deletion_insertion(model, batch, raw, result.targets, steps=steps, mean=mean, std=std,
                                        calibration=bundle.calibration, context=perturbing)
            fractions = curves.fractions.cpu().tolist()
            add(name, "deletion_auc", curves.deletion_auc)
            add(name, "insertion_auc", curves.insertion_auc)
            for kind in ("deletion", "insertion"):
                total = getattr(curves, kind).sum(dim=0).cpu()
                sums[name][kind] = sums[name].get(kind, 0) + total
            for index, mask_name in enumerate(MASK_NAMES):
                has = present[:, index]
                if has.any():
                    found = localisation(raw[has], masks[has, index], tolerance=tolerance)
                    add(name, f"{MASK_LABELS[mask_name]}_share", found["share"])
                    add(name, f"{MASK_LABELS[mask_name]}_hit", found["hit"])
            info = result.info.get(name, {})
            if "completeness_gap" in info:
                add(name, "completeness_error", completeness_error(info["completeness_gap"], info["output_difference"]))
            add(name, "ms_per_cell", [result.seconds[name] / len(items) * 1000])

    randomisation = None
    if randomisation_cells > 0:
        subset = [cells[i]["image"] for i in range(min(randomisation_cells, len(cells)))]
        randomisation = randomisation_check(model, torch.stack(subset).to(device), methods, seed=seed,
                                            options=options, **common)
        for method in methods:
            add(method.name, "randomisation_rho", randomisation.final(method.name))
            if method.signed:
                add(method.name, "randomisation_rho_magnitude", randomisation.magnitude_correlations[method.name][-1])

    rows = []
    for method, metrics in values.items():
        for metric in METRIC_ORDER:
            if metric in metrics:
                mean_value, low, high = bootstrap_interval(metrics[metric], bootstrap, seed)
                rows.append({"method": method, "metric": metric, "mean": mean_value, "ci_low": low,
                             "ci_high": high, "n": len(metrics[metric])})
    curves = {name: {"fractions": fractions,
                     "deletion": (sums[name]["deletion"] / len(cells)).tolist(),
                     "insertion": (sums[name]["insertion"] / len(cells)).tolist()} for name in names}
    settings = {
        "data": str(getattr(dataset, "name", data)), "cells": len(cells), "seed": seed, "steps": steps,
        "bundle_name": bundle.name, "bundle_sha256": bundle.sha256, "methods": names, "options": options or {},
        "accuracy": float(np.mean(correct)) if correct else float("nan"),
        "randomisation_cells": min(randomisation_cells, len(cells)),
        "randomisation_threshold": None if randomisation is None else randomisation.threshold,
        "pointing_tolerance_px": tolerance, "bootstrap_resamples": bootstrap,
        "deletion_baseline": "background", "insertion_baseline": "background",
        "deletion_block_px": max(1, round(bundle.input_size / 16)),
        "registered_methods": list_methods(),
    }
    return EvaluationReport(values=values, rows=rows, curves=curves, randomisation=randomisation, settings=settings)
