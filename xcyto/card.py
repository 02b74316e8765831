"""Model cards: a short Markdown page per bundle, in the spirit of TIAToolbox's model tables.

A card says what the model is (architecture, weights, input, calibration), what it learnt
from (data source, split, classes), how well it does (overall, per class, normal/abnormal,
calibration) and what it is for and not for. Everything comes from ``bundle.json``;
per-class metrics come from there too (bundles trained since they were recorded), from
the run's ``metrics.json`` when it matches the bundle, or are computed on ``--data``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from xcyto import __version__
from xcyto.atomic import write_text_atomic
from xcyto.bundle import Bundle
from xcyto.errors import BundleError
from xcyto.loading import load

CARD_FILE = "MODEL_CARD.md"
#: Per-class numbers from fewer test cells than this are flagged as noisy.
FEW_CELLS = 20


def render_card(bundle: Bundle, metrics: dict | None = None, evaluated: str | None = None) -> str:
    """The card of ``bundle`` as Markdown.

    ``metrics``: :func:`~xcyto.training.classification_metrics` output to report
    instead of the recorded ones, ``evaluated`` says on what (e.g. ``"herlev, test split"``).
    """
    recorded = (bundle.config.get("metrics") or {}).get("test") or {}
    if metrics is None:
        metrics = recorded or None
        evaluated = f"{(bundle.config.get('metrics') or {}).get('evaluated_on', 'test')} split, recorded in bundle.json"
        if metrics is not None and "per_class" not in metrics:
            metrics = {**metrics, **_run_metrics(bundle, metrics)}
    sections = [f"# Model card: {bundle.name}", _summary(bundle), _model_section(bundle),
                _data_section(bundle), _performance_section(bundle, metrics, evaluated),
                _trust_section(bundle, metrics), _use_section(bundle, metrics)]
    return "\n\n".join(section for section in sections if section) + "\n"


def write_card(bundle: Bundle, target) -> Path:
    """Render ``bundle``'s card from what it records and write it (atomically) to ``target``."""
    return write_text_atomic(Path(target), render_card(bundle))


def card_command(bundle_path, data=None, split: str = "test", scheme=None, out=None) -> str:
    """``xcyto card``: render the card (computing metrics on ``data`` when given), write it
    to ``out`` (default ``BUNDLE/MODEL_CARD.md``) and print it."""
    from xcyto.training import evaluate_bundle, select_split

    bundle = load(bundle_path)
    metrics = evaluated = None
    if data is not None:
        from xcyto.data import load_dataset

        label_scheme = bundle.config.get("label_scheme", "default")
        dataset = load_dataset(data, scheme=scheme or (None if label_scheme == "default" else label_scheme))
        cells = select_split(bundle, dataset, split)
        metrics = evaluate_bundle(bundle, cells)
        evaluated = f"{data}, {split} {'cells' if split == 'all' else 'split'}, computed by 'xcyto card'"
    text = render_card(bundle, metrics, evaluated)
    target = Path(out) if out else Path(bundle_path) / CARD_FILE
    try:
        write_text_atomic(target, text)
    except OSError as error:
        raise BundleError(f"cannot write the card to {target} ({error.strerror or error}); pass --out PATH") from None
    print(text, end="")
    print(f"\nwrote {target}")
    return text


# -- sections --------------------------------------------------------------------------------
def _summary(bundle: Bundle) -> str:
    data = bundle.config.get("data") or {}
    scheme = bundle.config.get("label_scheme", "default")
    what = (f"A soft-voting ensemble of {len(bundle.members)} classifiers"
            if getattr(bundle, "is_ensemble", False) else f"A classifier ({bundle.architecture})")
    source = data.get("name") or data.get("source") or ", ".join(data.get("sources", [])) or "unrecorded data"
    return (f"{what} of single Pap-smear cell images into {len(bundle.classes)} classes "
            f"({scheme} label scheme), trained on {source}. Written by xcyto {__version__}.")


def _model_section(bundle: Bundle) -> str:
    config = bundle.config
    parameters = sum(p.numel() for p in bundle.model.parameters())
    rows = [("parameters", f"{parameters / 1e6:.2f} M"), ("weights sha256", f"`{bundle.sha256}`"),
            ("input", f"{bundle.input_size} px RGB")]
    if getattr(bundle, "is_ensemble", False):
        rows.append(("combination", "weighted mean of the members' calibrated probabilities; weights "
                     + (f"fitted on {config['weights_fitted_on']}" if config.get("weights_fitted_on") else "as given")))
        lines = ["## Model", "", _table(["", ""], rows), "", "Members:", "",
                 _table(["member", "architecture", "input", "calibration", "test-time augmentation", "weight",
                         "test accuracy", "test macro-F1"],
                        [(f"`{name}`", m.architecture, f"{m.input_size} px", m.calibration.method,
                          "8 dihedral views" if m.tta else "none", f"{w:.3f}",
                          _number(_recorded(m).get("accuracy")), _number(_recorded(m).get("macro_f1")))
                         for name, m, w in zip(bundle.member_names, bundle.members, bundle.weights)])]
        return "\n".join(lines)
    training = config.get("training") or {}
    weights = training.get("weights", "default")
    if weights == "default":
        from xcyto.models import get_spec

        weights = get_spec(bundle.architecture).default_weights
    rows[2:2] = [("architecture", f"{bundle.architecture} ({config.get('head', 'linear')} head)"),
                 ("initial weights", "none (trained from scratch)" if weights is None else f"{weights} (pretrained)")]
    rows[-1] = ("input", f"{bundle.input_size} px RGB, {_VIEW_WORDS[config.get('view', 'cell')]}, "
                f"{'padded to square' if config.get('pad_to_square', True) else 'stretched'}, "
                f"preprocessing {config.get('preprocessing', 'none')}, mean {_triple(config.get('mean'))}, "
                f"std {_triple(config.get('std'))}")
    rows.append(("calibration", bundle.calibration.describe()))
    if training:
        patience = training.get("patience")
        stopping = "best validation epoch kept" if not patience else f"early stopping, patience {patience}"
        rows.append(("training", f"{training.get('epochs')} epochs max ({stopping}), batch "
                     f"{training.get('batch_size')}, lr {training.get('lr')} (backbone x{training.get('backbone_lr_mult')}), "
                     f"{training.get('schedule')} schedule, label smoothing {training.get('label_smoothing')}, "
                     f"{'grade-aware loss ' + str(training['grade_loss']) + ', ' if training.get('grade_loss') else ''}"
                     f"{_distilled(training)}"
                     f"loss balance {training.get('balance')}, rotation {training.get('rotation', 'any_angle')}, "
                     f"stain jitter {training.get('stain_jitter', 0.05)}, MixUp {training.get('mixup', 0)}, "
                     f"CutMix {training.get('cutmix', 0)}, weight average {training.get('ema', 0) or 'off'}, "
                     f"seed {training.get('seed')}"))
    if config.get("balance", {}).get("mode") == "auto":
        from xcyto.training import describe_balance

        rows.append(("class shares", describe_balance(config["balance"])))
    tta = config.get("tta") or {}
    rows.append(("test-time augmentation", ("mean of the calibrated probabilities over the 8 dihedral views"
                                            if tta.get("enabled") else "none")
                 + (f" ({tta['chosen_because']})" if tta.get("chosen_because") else "")))
    return "## Model\n\n" + _table(["", ""], rows)


def _data_section(bundle: Bundle) -> str:
    data = bundle.config.get("data") or {}
    if not data.get("source"):
        note = data.get("note", "not recorded in bundle.json")
        return f"## Data and split\n\n{note}" + (f": {', '.join(data['sources'])}." if data.get("sources") else ".")
    rows = [("source", f"`{data['source']}` ({data.get('layout', '?')} layout, {data.get('scheme', 'default')} scheme)"),
            ("cells", f"{data.get('n_cells', '?')}: train {data.get('n_train', '?')}, validation {data.get('n_val', '?')}, "
                      f"test {data.get('n_test', '?')}"),
            ("split", "group-aware: all cells of one source image (and byte-identical images) on one side, "
                      f"stratified by class, seed {data.get('split_seed', '?')}; manifest sha256 "
                      f"`{str(data.get('split_sha256', '?'))[:16]}...` (`split.csv` in the bundle)"),
            ("classes", ", ".join(bundle.classes))]
    if data.get("attribution"):
        rows.append(("data source and attribution", data["attribution"]))
    health = bundle.config.get("data_health") or {}
    if health.get("checked"):
        excluded = health.get("excluded") or []
        rows.append(("data health", f"{health.get('health', '')} (`xcyto data check`)"))
        rows.append(("left out", f"{len(excluded)} crops, exclude `{health.get('exclude')}`: "
                                 + ("none" if not excluded else "listed in bundle.json (`data_health.excluded`), "
                                    "left out of training, validation and test")))
        leaks = health.get("cross_split_duplicates") or []
        if leaks:
            rows.append(("duplicates across the split", f"{len(leaks)} pairs of near or exact copies lie on two sides "
                                                        "of the split (the test figures may be optimistic)"))
    elif health:
        rows.append(("data health", "not checked (data_check off)"))
    return "## Data and split\n\n" + _table(["", ""], rows)


def _performance_section(bundle: Bundle, metrics: dict | None, evaluated: str | None) -> str:
    if not metrics:
        return ("## Performance\n\nNo test metrics recorded. Compute them with "
                f"`xcyto card {bundle.path or 'BUNDLE'} --data DATA`.")
    binary = metrics.get("binary") or {}
    binary_accuracy = metrics.get("binary_accuracy", binary.get("accuracy"))
    n = metrics.get("n")
    accuracy = metrics.get("accuracy")
    headline = [("accuracy", _number(accuracy) + _interval(accuracy, n)), ("macro-F1", _number(metrics.get("macro_f1"))),
                ("macro precision / recall", f"{_number(metrics.get('macro_precision'))} / "
                                             f"{_number(metrics.get('macro_recall'))}")]
    if binary_accuracy is not None:
        sensitivity = metrics.get("binary_sensitivity", binary.get("sensitivity"))
        specificity = metrics.get("binary_specificity", binary.get("specificity"))
        headline.append(("normal / abnormal accuracy", _number(binary_accuracy)))
        if sensitivity is not None:
            headline.append(("abnormal sensitivity / specificity", f"{_number(sensitivity)} / {_number(specificity)}"))
    lines = [f"## Performance ({evaluated or 'test split'}, {n} cells)", "", _table(["", ""], headline)]
    per_class = metrics.get("per_class")
    if per_class:
        lines += ["", _table(["class", "precision", "recall", "F1", "cells"],
                             [(name, _number(v.get("precision")), _number(v.get("recall")), _number(v.get("f1-score")),
                               int(v.get("support", 0))) for name, v in per_class.items()])]
    else:
        lines += ["", f"Per-class metrics were not recorded; add them with `xcyto card {bundle.path or 'BUNDLE'} "
                      "--data DATA`."]
    ece, calibrated = metrics.get("ece"), metrics.get("ece_calibrated")
    lines += ["", "## Calibration", ""]
    if getattr(bundle, "is_ensemble", False):
        lines.append(f"Expected calibration error (15 bins) of the ensemble's probabilities (the mixture of the "
                     f"members' calibrated probabilities, each with its own test-time augmentation): "
                     f"{_number(calibrated)}.")
    else:
        after = (f"for what it predicts ({bundle.describe_tta()} of the calibrated probabilities)" if bundle.tta
                 else "after calibration")
        lines.append(f"Expected calibration error (15 bins) on the test cells: {_number(ece)} for one view before "
                     f"calibration and {_number(calibrated)} {after}. Applied: {bundle.calibration.describe()}.")
        if ece is not None and calibrated is not None and calibrated > ece:
            lines.append("The calibration chosen on the validation cells did not lower the test ECE here; "
                         "treat the probabilities as rough.")
    return "\n".join(lines)


def _trust_section(bundle: Bundle, metrics: dict | None) -> str:
    """Prediction sets, the screening threshold and the errors in grades, where the bundle has them."""
    metrics = metrics or {}
    rows = []
    sets = bundle.prediction_sets
    if sets is not None:
        measured = metrics.get("conformal") or {}
        coverage = measured.get("coverage", metrics.get("set_coverage"))
        size = measured.get("mean_set_size", metrics.get("set_mean_set_size"))
        rows.append(("prediction sets", sets.describe()
                     + ("" if coverage is None else f"; on the test cells coverage {_number(coverage)}, "
                                                    f"mean set size {_number(size)}")))
    screen = bundle.screen
    if screen is not None:
        rows.append(("screening threshold", screen.describe()))
    grades = metrics.get("grades") or {}
    serious = grades.get("serious_misses", metrics.get("serious_misses"))
    if serious is not None:
        mean = grades.get("mean_grade_error", metrics.get("mean_grade_error"))
        rows.append(("errors in grades", f"mean grade error {_number(mean)}; serious misses (abnormal called normal, "
                                         f"high grade called low) {serious} on the test cells"))
    kept = (metrics.get("risk_coverage") or {}).get("coverage_at_target", metrics.get("coverage_at_0.90_accuracy"))
    if kept is not None:
        rows.append(("abstaining", f"its surest {float(kept):.0%} of the test cells are classified with accuracy 0.90 "
                                   "or more"))
    fused = bundle.config.get("morphology_fusion")
    if fused:
        tested = fused.get("test") or {}
        rows.append(("read with its measurements", f"gradient-boosted trees on the cells' measured features, weight "
                     f"{_number(fused['weight'])} (chosen on {fused.get('fitted_on', 'the validation cells')})"
                     + (f"; on the test cells accuracy {_number(tested['network']['accuracy'])} alone, "
                        f"{_number(tested['fused']['accuracy'])} with the measurements" if tested else "")))
    if not rows:
        return ""
    return "## Trust per cell\n\n" + _table(["", ""], rows)


def _use_section(bundle: Bundle, metrics: dict | None) -> str:
    data = bundle.config.get("data") or {}
    limits = ["- Not a medical device: not validated for screening or diagnosis; no decision about a patient "
              "should rest on it.",
              f"- Learnt from {data.get('n_train', 'an unrecorded number of')} training cells of one collection "
              f"({data.get('name') or data.get('source') or 'unrecorded'}, {data.get('n_cells', '?')} cells in all); "
              "other laboratories, stains, scanners and magnifications are untested and will shift its errors.",
              "- Expects one cell per image, cropped and sized like its training cells; a cluster, debris or a "
              "whole field is outside what it has seen (the explanation's atypicality flag helps catch these)."]
    source = str(data.get("source", ""))
    if source.startswith("synthetic"):
        limits.insert(0, "- **Trained on xcyto's synthetic cells: a demonstration model. Its predictions on real "
                         "cells mean nothing.**")
    if metrics and metrics.get("n"):
        limits.append(f"- Measured on {metrics['n']} held-out cells only; the accuracy's 95 % interval is about "
                      f"+/- {_half_width(metrics.get('accuracy'), metrics['n']):.2f}.")
        few = [name for name, v in (metrics.get("per_class") or {}).items() if v.get("support", 0) < FEW_CELLS]
        if few:
            limits.append(f"- Fewer than {FEW_CELLS} test cells for {', '.join(few)}: their per-class numbers are noisy.")
    return ("## Intended use\n\nResearch and teaching: studying how a cell classifier decides, with heatmaps, "
            "neighbours and audits, and comparing models under the same split. Use the predictions as a second "
            "look to be checked by a cytologist, never as a result.\n\n## Limits\n\n" + "\n".join(limits))


# -- helpers ---------------------------------------------------------------------------------
def _recorded(bundle: Bundle) -> dict:
    return (bundle.config.get("metrics") or {}).get("test") or {}


def _run_metrics(bundle: Bundle, headline: dict) -> dict:
    """Per-class and binary metrics from the training run's ``metrics.json`` (beside or above
    the bundle), only when it records the same test figures as ``bundle.json``."""
    if bundle.path is None:
        return {}
    for candidate in (bundle.path / "metrics.json", bundle.path.parent / "metrics.json"):
        try:
            test = json.loads(candidate.read_text()).get("test") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if test.get("n") == headline.get("n") and test.get("accuracy") == headline.get("accuracy") and "per_class" in test:
            return {key: test[key] for key in ("per_class", "binary") if key in test}
    return {}


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _number(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _triple(values) -> str:
    return "?" if not values else "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def _half_width(p, n) -> float:
    return 1.96 * math.sqrt(max(p or 0.0, 0.0) * max(1 - (p or 0.0), 0.0) / max(n, 1))


def _interval(p, n) -> str:
    return "" if p is None or not n else f" (95 % interval +/- {_half_width(p, n):.3f})"


#: The views of a crop (TrainConfig.view) in the card's words.
_VIEW_WORDS = {"cell": "the whole crop", "nucleus": "the square around the nucleus (3 nucleus diameters a side)"}


def _distilled(training: dict) -> str:
    """The distillation of a training, in words ("" without a teacher)."""
    if not training.get("teacher"):
        return ""
    count = len([part for part in str(training["teacher"]).split(os.pathsep) if part.strip()])
    return (f"distilled from {count} teacher{'s' if count > 1 else ''} (share {training.get('distill')}, "
            f"temperature {training.get('distill_temperature')}), ")
