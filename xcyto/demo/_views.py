"""What the demo shows, as plain values: an :class:`~xcyto.explain.Explanation` in, text,
HTML, image lists and tables out. No Gradio here, so each view can be tested alone.
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np
import torch
from PIL import Image

from xcyto.demo._cell_info import DISCLAIMER, cell_info

#: Names people read; the registry's names stay the values (API, JSON, settings).
METHOD_TITLES = {
    "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "hirescam": "HiResCAM", "layercam": "LayerCAM",
    "eigencam": "EigenCAM", "scorecam": "Score-CAM", "integrated_gradients": "Integrated Gradients",
    "saliency": "Saliency", "smoothgrad": "SmoothGrad", "guided_gradcam": "Guided Grad-CAM",
    "occlusion": "Occlusion", "random": "Random (baseline)",
}
RISK_COLOURS = {"normal": "#1a7f37", "benign": "#1a7f37", "low-grade": "#9a6700", "high-grade": "#cf222e",
                "unknown": "#57606a"}


def method_title(name: str) -> str:
    return METHOD_TITLES.get(name, name)


def method_choices(names: list[str], slow: set[str]) -> list[tuple[str, str]]:
    """``(label, value)`` pairs for a checkbox group; slow methods say so."""
    return [(method_title(name) + (" (slow)" if name in slow else ""), name) for name in names]


# -- the prediction ---------------------------------------------------------------------------
def probabilities(explanation) -> dict[str, float]:
    """Class -> probability, calibrated where the bundle applies a calibration (``gr.Label``'s bars)."""
    return {name: round(float(value), 4) for name, value in explanation.probabilities.items()}


def fused_html(fused) -> str:
    """The prediction read with the cell's measurements, and the measurements that moved it."""
    head = (f"With its measurements: <b>{_esc(fused.predicted)}</b> {fused.probabilities[fused.predicted]:.2f}")
    if fused.weight == 0:
        return (f"<div class='xc-set'>{head} (the measurements did not help on the validation cells, so they "
                "move nothing)</div>")
    lines = "".join(f"<li>{_esc(line)}</li>" for line in fused.lines(3))
    return (f"<div class='xc-set'>{head} (gradient-boosted trees on the measured features, weight "
            f"{fused.weight:.2f}; each change is what the log-odds lose when the feature alone is set to the "
            f"training cells' median)<ul class='xc-fused'>{lines}</ul></div>")


def verdict_html(explanation) -> str:
    """The predicted class, its probability, the explained class and the atypicality warning."""
    e = explanation
    calibrated = "probability" if e.settings.get("calibration") in (None, "none") else "calibrated probability"
    parts = []
    if e.no_nucleus:
        parts.append("<div class='xc-warning' role='alert'><b>No cell nucleus found in this image.</b> Nothing in it "
                     "is as dark and compact as a stained nucleus: it may be empty background, debris or the edge of "
                     "a cell. The class below is what the model answers for such an image, not a reading of a cell, "
                     "and no nucleus is measured.</div>")
    parts.append(f"<div class='xc-verdict'><span class='xc-predicted'>{_esc(e.predicted)}</span> "
                 f"<span class='xc-confidence'>{calibrated} {e.confidence:.2f}</span>")
    if e.plausible:
        size = len(e.prediction_set)
        doubt = ("the model rules out every other class" if size == 1 else
                 f"the model cannot rule out {size - 1} other class{'es' if size > 2 else ''}")
        parts.append(f"<div class='xc-set'><b>{_esc(e.plausible[0].upper() + e.plausible[1:])}</b> "
                     f"({doubt}; conformal prediction set on the bundle's validation cells)</div>")
    if e.screening:
        advice = ("refer: a person should read this cell" if e.screening == "refer"
                  else "clear: below the screening threshold")
        parts.append(f"<div class='xc-note'>Screening: <b>{advice}</b> ({_esc(e.settings.get('screen', ''))}).</div>")
    if e.fused is not None:
        parts.append(fused_html(e.fused))
    other_issues = [issue for issue in e.data_issues if issue.check != "no_nucleus"]
    if other_issues:
        parts.append("<div class='xc-warning'><b>Check the crop.</b> "
                     + " ".join(f"{_esc(issue.reason[0].upper() + issue.reason[1:])}." for issue in other_issues)
                     + "</div>")
    if e.settings.get("tta"):
        parts.append("<div class='xc-note'>Probability: the mean over the cell's 8 rotations and mirror images "
                     "(test-time augmentation); the heatmaps explain the cell as uploaded.</div>")
    if e.target != e.predicted:
        parts.append(f"<div class='xc-note'>The heatmaps explain the class <b>{_esc(e.target)}</b> "
                     f"(probability {e.probabilities[e.target]:.2f}), not the prediction.</div>")
    if e.atypical:
        share = "any of them" if e.atypicality >= 99.95 else f"{e.atypicality:.1f}% of them"
        parts.append(
            "<div class='xc-warning' role='alert'><b>Unlike the training cells.</b> This cell lies farther from the "
            f"training cells than {share} do (atypicality score {e.atypicality:.0f}/100). "
            "The prediction, the heatmaps and the neighbours may not be reliable: it may be another kind of cell, "
            "debris, an unusual stain or a bad crop.</div>")
    elif e.atypicality is not None:
        parts.append(f"<div class='xc-note'>Atypicality {e.atypicality:.0f}/100: within the range of the "
                     "training cells.</div>")
    else:
        parts.append("<div class='xc-note'>This bundle has no gallery: no atypicality check and no "
                     "neighbours.</div>")
    parts.append("</div>")
    return "".join(parts)


def cell_info_markdown(class_name: str, morphology=None, other: str | None = None) -> str:
    """Markdown panel: the cell's measured morphology (each measurement placed among the
    training cells of the predicted class, and of ``other`` when given), then what the
    predicted class is, what it means and its risk level."""
    measured = morphology_markdown(morphology, class_name, other) if morphology is not None else ""
    info = cell_info(class_name)
    if info is None:
        return (f"{measured}### {class_name}\nNo description is available for this class (the bundle's own "
                f"classes).\n\n*{DISCLAIMER}*")
    colour = RISK_COLOURS.get(info.risk, RISK_COLOURS["unknown"])
    return (f"{measured}### {info.title}\n"
            f"<span class='xc-risk' style='background:{colour}'>{_esc(info.risk)}</span> {_esc(info.risk_note)}\n\n"
            f"**What it is.** {info.description}\n\n"
            f"**Clinical significance.** {info.significance}\n\n"
            f"*{DISCLAIMER}*")


def morphology_markdown(morphology, class_name: str, other: str | None = None) -> str:
    """A table of the key measurements, with where each falls among the training cells."""
    from xcyto.morphology import label

    classes = [name for name in (class_name, other) if name]
    header = "| measured (segmented: nucleus red, cell green) | value | " + " | ".join(
        f"percentile among {_esc(name)} training cells" for name in classes) + " |"
    lines = ["### The cell, measured", ""]
    if not getattr(morphology, "nucleus_found", True):
        lines += ["**No nucleus found**: there is no nucleus to measure, so no nucleus measurements are shown.", ""]
    lines += [header, "|---|---:|" + "---:|" * len(classes)]
    for name, value, unit, shares in morphology.key_rows(classes):
        lines.append(f"| {label(name)} | {value:.3g} {unit} | "
                     + " | ".join("-" if share is None else f"{share:.0f}" for share in shares) + " |")
    if not morphology.percentiles:
        lines += ["", "*The bundle's gallery has no measurements of its training cells, so no percentiles.*"]
    return "\n".join(lines) + "\n\n"


def outline_image(explanation) -> np.ndarray | None:
    """The cell as given with its segmented nucleus (red) and cell (green) outlined."""
    from xcyto.morphology import outlined

    if explanation.morphology is None or explanation.original is None:
        return None
    return outlined(explanation.original, explanation.morphology.masks)


# -- heatmaps ---------------------------------------------------------------------------------
def heatmap_state(explanation) -> dict:
    """What re-blending needs, kept in the session: the cell and each method's display map."""
    return {"image": explanation.image, "outline": outline_image(explanation),
            "methods": list(explanation.heatmaps),
            "display": np.stack([h.display for h in explanation.heatmaps.values()]).astype(np.float32),
            "captions": [_heatmap_caption(explanation, name) for name in explanation.heatmaps]}


def _heatmap_caption(explanation, name: str) -> str:
    heatmap = explanation.heatmaps[name]
    caption = method_title(name)
    passed, label = heatmap.check_label
    if passed is not None:
        caption += (" ✓ " if passed else " ⚠ ") + label
    return caption


def heatmap_items(state: dict, opacity: float, overlays: list[np.ndarray] | None = None) -> list[tuple]:
    """Gallery items: the cell as the model saw it, then one overlay per method.

    ``overlays`` given (the explanation's own, at the default opacity) are used as they
    are; otherwise the display maps are blended again at ``opacity``, all in one call of
    the same ``overlay_batch`` that ``explain`` uses.
    """
    if overlays is None:
        from xcyto.explain import overlay_batch

        display = torch.from_numpy(state["display"])
        images = torch.from_numpy(np.ascontiguousarray(state["image"]))[None].expand(len(display), -1, -1, -1)
        overlays = list(overlay_batch(images, display, opacity=float(opacity)).numpy())
    outline = [] if state.get("outline") is None else [(state["outline"], "segmented: nucleus red, cell green")]
    return [(state["image"], "cell (model input)")] + outline + list(zip(overlays, state["captions"]))


# -- neighbours -------------------------------------------------------------------------------
def neighbour_items(explanation) -> list[tuple]:
    """The nearest training cells, most similar first, captioned with class and cosine similarity."""
    return [(n.thumbnail, f"{n.class_name} {n.similarity:.2f}") for n in explanation.neighbours]


def nearest_others(explanation) -> list:
    """The closest training cell of every class other than the prediction, most similar first."""
    others = [n for name, n in explanation.nearest_per_class.items() if name != explanation.predicted]
    return sorted(others, key=lambda n: -n.similarity)


def nearest_other_items(explanation) -> list[tuple]:
    return [(n.thumbnail, f"{n.class_name} {n.similarity:.2f}") for n in nearest_others(explanation)]


# -- the bundle -------------------------------------------------------------------------------
def is_synthetic(bundle) -> bool:
    """Whether the bundle was trained on xcyto's synthetic cells (``data.source`` ``synthetic[:...]``)."""
    data = bundle.config.get("data") or {}
    return any(str(data.get(key, "")).lower().split(":")[0] == "synthetic" for key in ("source", "layout"))


def bundle_markdown(bundle, gallery_size: int | None) -> str:
    """Which model answers: name, architecture, classes, weights hash, training data, test metrics."""
    data = bundle.config.get("data") or {}
    test = (bundle.config.get("metrics") or {}).get("test") or {}
    lines = [f"**Model** `{bundle.name}` · {bundle.architecture} at {bundle.input_size} px · "
             f"weights sha256 `{(bundle.sha256 or '?')[:12]}`",
             f"**Classes** {', '.join(bundle.classes)}"]
    trained = []
    if data:
        trained.append(f"{data.get('name', data.get('source', '?'))} ({data.get('n_train', '?')} training cells)")
    if test:
        trained.append(f"test accuracy {test.get('accuracy', float('nan')):.2f}, "
                       f"macro-F1 {test.get('macro_f1', float('nan')):.2f}")
    trained.append(f"gallery of {gallery_size} training cells" if gallery_size else "no gallery")
    lines.append("**Trained on** " + "; ".join(trained))
    return "  \n".join(lines)


def synthetic_banner(bundle) -> str:
    if not is_synthetic(bundle):
        return ""
    return ("<div class='xc-banner' role='note'><b>Demonstration model.</b> This bundle was trained on "
            "<b>synthetic</b> (procedurally drawn) Pap cells, not on patient data: its answers about real "
            "cells mean nothing. Run <code>python demo/app.py --bundle PATH</code> with a bundle trained on "
            "real data. Research use only, not for diagnosis.</div>")


# -- the batch table --------------------------------------------------------------------------
def thumbnail_uri(image: np.ndarray, size: int = 72) -> str:
    """A small PNG as a ``data:`` URI, for tables."""
    picture = Image.fromarray(np.ascontiguousarray(image))
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def batch_rows(names: list[str], explanations: list, errors: dict[str, str], classes: list[str]) -> list[list]:
    """One row per file: file, predicted, confidence, atypicality, flag, p(class)..., error.

    ``explanations`` are aligned with the names not in ``errors``."""
    rows, found = [], iter(explanations)
    for name in names:
        if name in errors:
            rows.append([name, "", None, None, None] + [None] * len(classes) + ["", errors[name]])
            continue
        e = next(found)
        rows.append([name, e.predicted, round(e.confidence, 4),
                     None if e.atypicality is None else round(e.atypicality, 1), e.atypical]
                    + [round(e.probabilities[c], 4) for c in classes]
                    + [";".join(issue.check for issue in e.data_issues), ""])
    return rows


def batch_columns(classes: list[str]) -> list[str]:
    return (["file", "predicted", "confidence", "atypicality", "atypical"] + [f"p({c})" for c in classes]
            + ["data_issues", "error"])


def batch_html(names: list[str], explanations: list, errors: dict[str, str], colours: dict) -> str:
    """The batch as an HTML table with the cell and its first heatmap as thumbnails."""
    head = ("<table class='xc-batch'><thead><tr><th>cell</th><th>heatmap</th><th>file</th><th>predicted</th>"
            "<th>probability</th><th>atypical</th></tr></thead><tbody>")
    rows, found = [], iter(explanations)
    for name in names:
        if name in errors:
            rows.append(f"<tr><td></td><td></td><td>{_esc(name)}</td>"
                        f"<td colspan='3' class='xc-error'>{_esc(errors[name])}</td></tr>")
            continue
        e = next(found)
        first = next(iter(e.heatmaps.values()), None)
        overlay = f"<img src='{thumbnail_uri(first.overlay)}' alt='heatmap'/>" if first is not None else ""
        colour = "#%02x%02x%02x" % tuple(int(255 * c) for c in colours.get(e.predicted, (0.4, 0.4, 0.4))[:3])
        flag = "—" if e.atypical is None else ("<b class='xc-flag'>yes</b>" if e.atypical else "no")
        if e.no_nucleus:
            flag += " <b class='xc-flag'>no nucleus</b>"
        rows.append(f"<tr><td><img src='{thumbnail_uri(e.image)}' alt='cell'/></td><td>{overlay}</td>"
                    f"<td>{_esc(name)}</td><td><span class='xc-dot' style='background:{colour}'></span>"
                    f"{_esc(e.predicted)}</td><td>{e.confidence:.2f}</td><td>{flag}</td></tr>")
    return head + "".join(rows) + "</tbody></table>"


def _esc(text) -> str:
    return html.escape(str(text))
