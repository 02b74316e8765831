"""Write an audit: one self-contained ``report.html``, ``cases.csv``, ``cells.csv``, ``audit.json``, PNGs.

The report embeds every image (base64 PNG) and its CSS and script, so it opens from a
mail attachment or a shared drive with no network and nothing beside it. The same PNG
bytes are written to ``images/`` and ``figures/`` for use elsewhere. The folder is
written beside ``out`` and renamed into place, so a crash leaves the last report whole.
"""
from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from xcyto.atomic import atomic_dir, write_csv_atomic, write_json_atomic, write_text_atomic
from xcyto.audit._scores import KINDS, MIN_READING_PRECISION, WEIGHTS
from xcyto.explain import png_bytes

TEMPLATE = "report.html.j2"
JPEG_QUALITY = 90
SIGNAL_COLUMNS = ("suspicion", *WEIGHTS, "atypicality_percentile")
SHORT_NAMES = {"gradcam": "Grad-CAM", "integrated_gradients": "IG", "gradcampp": "Grad-CAM++", "saliency": "saliency",
               "smoothgrad": "SmoothGrad", "hirescam": "HiResCAM", "layercam": "LayerCAM", "eigencam": "EigenCAM"}


def jpeg_bytes(image: np.ndarray) -> bytes:
    """For the page: a fifth of the PNG's size at this quality, which keeps a report of
    hundreds of cases a few MB (the lossless PNGs are written to ``images/``)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def data_uri(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "cell"


CASE_COLUMNS = ("rank", "cell_id", "source", "given", "predicted", "other", "misclassified", "confidence", "p_given",
                "kind", "label_issue_flag", "atypical", "data_issues")
CELL_COLUMNS = ("cell_id", "given", "predicted", "confidence", "case_rank", "label_issue_flag", "atypical")


def case_columns(result) -> list[str]:
    """The header of ``cases.csv``, written even when the audit found no case."""
    return [*CASE_COLUMNS, *SIGNAL_COLUMNS, *(f"p_{name}" for name in result.classes), "reading"]


def case_rows(result) -> list[dict]:
    """One row per case, ranked: identity, classes, probabilities, every signal, the reading."""
    rows = []
    for case in result.cases:
        row = {"rank": case.rank, "cell_id": case.cell_id, "source": case.source, "given": case.given,
               "predicted": case.predicted, "other": case.other, "misclassified": int(case.misclassified),
               "confidence": f"{max(case.probabilities.values()):.4f}",
               "p_given": f"{case.probabilities[case.given]:.4f}", "kind": case.kind,
               "label_issue_flag": int(case.label_issue_flag), "atypical": int(case.atypical),
               "data_issues": ";".join(issue.check for issue in case.data_issues)}
        row.update({name: _number(case.signals[name]) for name in SIGNAL_COLUMNS})
        row.update({f"p_{name}": f"{value:.4f}" for name, value in case.probabilities.items()})
        row["reading"] = case.reading
        rows.append(row)
    return rows


def cell_rows(result) -> list[dict]:
    """One row per audited cell (cases or not), in data order."""
    predictions = result.predictions
    rank_of = {case.index: case.rank for case in result.cases}
    rows = []
    for index, cell_id in enumerate(result.cell_ids):
        row = {"cell_id": cell_id, "given": result.classes[result.labels[index]],
               "predicted": result.classes[predictions[index]],
               "confidence": f"{result.probabilities[index].max():.4f}",
               "case_rank": rank_of.get(index, ""), "label_issue_flag": int(result.label_issue_flags[index]),
               "atypical": int(result.atypical[index])}
        row.update({name: _number(result.signals[name][index]) for name in SIGNAL_COLUMNS})
        rows.append(row)
    return rows


def _number(value) -> str:
    return "" if value is None or not np.isfinite(value) else f"{float(value):.4f}"


def summary_figures(result) -> dict[str, bytes]:
    """PNG bytes of the confusion matrix, the map with errors ringed, and the signals plot."""
    from xcyto.audit._figures import plot_signals
    from xcyto.explain import figure_png
    from xcyto.plotting import plot_confusion_matrix

    figures = {"confusion_matrix": figure_png(plot_confusion_matrix(
        result.metrics["confusion_matrix"], result.classes, title=f"{result.settings['bundle_name']}: confusion"))}
    if result.map_coords is not None:
        from xcyto.embedding import plot_embedding_map

        coords, labels = result.map_background
        method = result.settings["map"]
        figures["map"] = figure_png(plot_embedding_map(
            coords, labels, result.classes, placed=result.map_coords, placed_labels=result.labels,
            errors=result.predictions != result.labels, method=method,
            title=f"audited cells on the {method.upper()} map of the training cells (errors ringed)"))
    if result.cases:
        figures["signals"] = figure_png(plot_signals(result))
    return figures


def _case_view(case, methods: list[str], images: dict[str, bytes]) -> dict:
    """What the template shows of one case; PNGs registered in ``images`` by file name."""
    stem = f"{case.rank:04d}_{slug(case.cell_id)}"

    def image(name: str, array: np.ndarray) -> str:
        images[f"{stem}_{name}.png"] = png_bytes(array)
        return data_uri(jpeg_bytes(array), "jpeg")

    panels = [{"title": "cell", "src": image("cell", case.image)}] if case.image is not None else []
    for class_name, role in case.roles.items():
        for method in methods:
            overlay = case.overlays.get((method, class_name))
            if overlay is not None:
                passed, label = case.checks.get((method, class_name), (None, ""))
                panels.append({"title": f"{SHORT_NAMES.get(method, method)} → {class_name}", "role": role,
                               "src": image(f"{method}_{slug(class_name)}", overlay),
                               "check": "" if passed is None else ("✓ " if passed else "⚠ ") + label,
                               "check_failed": passed is False})
    neighbours = []
    for class_name, role in case.roles.items():
        found = case.neighbours.get(class_name, [])
        neighbours.append({"class_name": class_name, "role": role, "cells": [
            {"src": image(f"nn_{slug(class_name)}_{i}", nb.thumbnail), "cell_id": nb.cell_id,
             "similarity": f"{nb.similarity:.2f}"} for i, nb in enumerate(found)]})
    probabilities = sorted(case.probabilities.items(), key=lambda item: -item[1])
    return {
        "rank": case.rank, "cell_id": case.cell_id, "source": case.source, "given": case.given,
        "predicted": case.predicted, "pair": case.pair, "kind": case.kind, "kind_label": KINDS[case.kind],
        "reading": case.reading, "misclassified": case.misclassified, "panels": panels, "neighbours": neighbours,
        "probabilities": [{"name": name, "value": value, "percent": f"{100 * value:.1f}",
                           "given": name == case.given, "predicted": name == case.predicted}
                          for name, value in probabilities],
        "signals": [{"name": name.replace("_", " "), "value": _number(case.signals[name])}
                    for name in SIGNAL_COLUMNS],
        "flags": [flag for flag, on in (("cleanlab: label issue", case.label_issue_flag),
                                        ("atypical", case.atypical)) if on],
        "morphology": _morphology_view(case),
    }


def _morphology_view(case) -> dict | None:
    """The cell's key measurements, each placed among the training cells of both classes, and
    what the morphometric model alone says."""
    from xcyto.morphology import label

    morphology = case.morphology
    if morphology is None:
        return None
    classes = list(case.roles)
    rows = [{"name": label(name), "value": f"{value:.3g}",
             "percentiles": ["-" if share is None else f"{share:.0f}" for share in shares]}
            for name, value, _, shares in morphology.key_rows(classes)]
    said = ""
    if case.morphology_probabilities:
        best = max(case.morphology_probabilities, key=case.morphology_probabilities.get)
        said = (f"measurements alone: {best} ({case.morphology_probabilities[best]:.0%}); "
                + ", ".join(f"{c} {case.morphology_probabilities.get(c, 0):.0%}" for c in classes))
    return {"classes": [f"{c} ({role})" for c, role in case.roles.items()], "rows": rows, "said": said}


def render_html(result, title: str | None = None, images: dict[str, bytes] | None = None,
                figures: dict[str, bytes] | None = None) -> str:
    """The report as one HTML string (images inline)."""
    import jinja2

    images = {} if images is None else images
    figures = summary_figures(result) if figures is None else figures
    environment = jinja2.Environment(loader=jinja2.PackageLoader("xcyto.audit", "templates"),
                                     autoescape=jinja2.select_autoescape(["html", "j2"]))
    metrics = result.metrics
    pairs = [{"given": g, "predicted": p, "count": c, "pair": f"{g} → {p}"} for g, p, c in result.confused_pairs()]
    all_pairs = sorted({case.pair for case in result.cases})
    settings = result.settings
    return environment.get_template(TEMPLATE).render(
        title=title or f"Audit of {settings['bundle_name']} on {settings['data']}",
        settings=settings, settings_text=_settings_text(settings),
        cells=len(result.cell_ids), accuracy=f"{metrics['accuracy']:.3f}", macro_f1=f"{metrics['macro_f1']:.3f}",
        binary=metrics.get("binary"), errors=int((result.predictions != result.labels).sum()),
        data_issues=settings.get("data_issues"),
        clean_accuracy=(None if result.metrics_without_data_issues is None
                        else f"{result.metrics_without_data_issues['accuracy']:.3f}"),
        kinds=[{"kind": kind, "label": KINDS[kind], "count": count} for kind, count in result.kind_counts().items()],
        figures={name: data_uri(png) for name, png in figures.items()},
        pairs=pairs, all_pairs=all_pairs, reading_checks=reading_checks(result),
        cases=[_case_view(case, settings["methods"], images) for case in result.cases],
        weights=WEIGHTS)


def reading_checks(result) -> list[str]:
    """One sentence per check behind the report: each reading's precision measured on planted
    label flips, IG's completeness over the maps shown, each CAM's randomisation check."""
    lines = []
    check = result.readings.get("label_error")
    if check:
        precision = check["precision"]
        said = ("said as is" if precision >= MIN_READING_PRECISION else
                f"below {MIN_READING_PRECISION:.0%}, so these cells are read \"model and label disagree\" instead")
        lines.append(f"\"Likely label error\": estimated precision {precision:.2f}, recall {check['recall']:.2f} at this "
                     f"model's accuracy ({check['model_accuracy']:.2f}), measured by flipping "
                     f"{check['planted_rate']:.0%} of the labels ({check['planted_cells']} cells, {check['repeats']} "
                     f"draws) and rescoring; {said}.")
    ig = [passed for case in result.cases for (method, _), (passed, _) in case.checks.items()
          if method == "integrated_gradients" and passed is not None]
    if ig:
        lines.append(f"Integrated gradients added up within tolerance in {sum(ig)} of {len(ig)} maps"
                     + ("." if all(ig) else "; the others reached the step cap and are marked ⚠ on their cards."))
    for method, check in (result.settings.get("explanation_checks") or {}).items():
        if method in result.settings["methods"]:
            verdict = "FLAGGED: its maps barely change when the weights are random" if check["flagged"] else "passed"
            lines.append(f"{SHORT_NAMES.get(method, method)}: randomisation check {verdict} "
                         f"(rho {check['rho']:.2f} on {check['cells']} validation cells, layer {check['layer']}).")
    return lines


def _settings_text(settings: dict) -> str:
    keys = ("bundle_name", "bundle_sha256", "architecture", "input_size", "data", "methods", "method_options",
            "confidence", "k", "xcyto_version", "cleanlab_version")
    views = f"probabilities: {settings['probabilities_from']}" if settings.get("probabilities_from") else None
    return "; ".join([*(f"{key}={settings.get(key)}" for key in keys), *([views] if views else [])])


def write_audit(result, out, title: str | None = None) -> dict[str, Path]:
    """Write the whole audit folder atomically; returns the paths written."""
    out = Path(out)
    images: dict[str, bytes] = {}
    figures = summary_figures(result)
    page = render_html(result, title=title, images=images, figures=figures)
    with atomic_dir(out) as staging:
        write_text_atomic(staging / "report.html", page)
        write_csv_atomic(staging / "cases.csv", case_rows(result), case_columns(result))
        write_csv_atomic(staging / "cells.csv", cell_rows(result), [*CELL_COLUMNS, *SIGNAL_COLUMNS])
        summary = {"settings": result.settings, "metrics": result.metrics,
                   "confused_pairs": result.confused_pairs(),
                   "cases": len(result.cases), "kinds": result.kind_counts(), "readings": result.readings,
                   "data_issues": result.settings.get("data_issues"),
                   "metrics_without_data_issues": result.metrics_without_data_issues,
                   "class_thresholds": dict(zip(result.classes, np.nan_to_num(result.class_thresholds).tolist()))
                   if result.class_thresholds is not None else None}
        write_json_atomic(staging / "audit.json", summary)
        for folder, files in (("figures", figures), ("images", images)):
            (staging / folder).mkdir()
            for name, png in files.items():
                (staging / folder / (name if name.endswith(".png") else f"{name}.png")).write_bytes(png)
    return {"report": out / "report.html", "cases": out / "cases.csv", "cells": out / "cells.csv",
            "summary": out / "audit.json", "figures": out / "figures", "images": out / "images"}
