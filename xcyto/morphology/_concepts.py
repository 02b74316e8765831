"""Which cell features drive the classifier: concept activation vectors from morphometry.

For each morphometric feature, the cells in its top quartile ("high N/C ratio") and bottom
quartile ("low N/C ratio") are two concepts. A linear classifier separating their
activations at a layer of the network gives a concept activation vector (CAV); the TCAV
score of a class is the share of that class's cells whose class logit rises along it
(Kim et al. 2018, "Interpretability beyond feature attribution", with captum's ``TCAV``).
Each score is repeated on ``runs`` random halves of the concept cells, and compared by a
two-sided t-test with CAVs between two random sets of cells of the same size: a feature
whose scores do not differ from random ones (p >= 0.05) says nothing about the class.

Beside it, two model-free views of the same question: the rank correlation, over the
cells, of each feature with each class's logit, and the partial dependence of the
morphometric baseline (:mod:`xcyto.morphology._baseline`) on the feature.
"""
from __future__ import annotations

import random
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from xcyto.morphology._analyse import KEY_FEATURES, label

#: Per architecture family, the layer whose activations the CAVs live in: a stage at stride
#: 16, deep enough to know the classes, early enough that a class logit's gradient still
#: differs from cell to cell (at the last stages it barely does, and every TCAV score is 0
#: or 1: on the synthetic demo bundle, 17 of 35 scores were, against none at stride 16).
CONCEPT_LAYERS = {"efficientnet": "backbone.blocks.4", "resnet": "backbone.layer3", "small_cnn": "backbone.block3",
                  "densenet": "backbone.features.denseblock3", "vgg": "backbone.features"}
SIGNIFICANCE = 0.05


def concept_layer(architecture: str) -> str:
    for prefix, layer in CONCEPT_LAYERS.items():
        if architecture.startswith(prefix):
            return layer
    return "backbone"


@dataclass
class ConceptScore:
    class_name: str
    feature: str
    tcav: float  # mean share of the class's cells whose logit rises with the feature (0..1)
    tcav_sd: float
    p_value: float  # against CAVs between random sets of cells
    rank_correlation: float  # Spearman rho of the feature and the class logit, over all cells
    partial_dependence: float | None = None  # baseline's p(class): 90th minus 10th percentile of the feature

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE

    def sentence(self) -> str:
        p = "p < 0.01" if self.p_value < 0.01 else f"p = {self.p_value:.2f}"
        return f"{self.class_name}: {label(self.feature)} TCAV {self.tcav:.2f} ({p})"


@dataclass
class ConceptReport:
    scores: list[ConceptScore]
    settings: dict = field(default_factory=dict)

    def score(self, class_name: str, feature: str) -> ConceptScore:
        return next(s for s in self.scores if s.class_name == class_name and s.feature == feature)

    def rows(self) -> list[dict]:
        return [{"class": s.class_name, "feature": s.feature, "tcav": round(s.tcav, 4), "tcav_sd": round(s.tcav_sd, 4),
                 "p_value": round(s.p_value, 5), "significant": s.significant,
                 "rank_correlation": round(s.rank_correlation, 4),
                 "partial_dependence": None if s.partial_dependence is None else round(s.partial_dependence, 4)}
                for s in self.scores]

    def to_markdown(self) -> str:
        classes = list(dict.fromkeys(s.class_name for s in self.scores))
        features = list(dict.fromkeys(s.feature for s in self.scores))
        lines = ["| class | " + " | ".join(label(f) for f in features) + " |", "|---|" + "---:|" * len(features)]
        for class_name in classes:
            cells = []
            for feature in features:
                s = self.score(class_name, feature)
                cells.append(f"**{s.tcav:.2f}**" if s.significant else f"{s.tcav:.2f}")
            lines.append(f"| {class_name} | " + " | ".join(cells) + " |")
        lines += ["", f"TCAV score: share of the class's cells whose logit rises as the feature grows (0.5: no "
                      f"tendency); **bold**: differs from random concepts (Welch's t-test, {self.settings.get('runs')} "
                      f"runs against {self.settings.get('random_runs', self.settings.get('runs'))} random CAVs, "
                      f"p < {SIGNIFICANCE})."]
        return "\n".join(lines) + "\n"


def load_report(path) -> ConceptReport | None:
    """The report ``xcyto concepts`` wrote (``concepts.json``), or ``None`` when there is none."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    scores = [ConceptScore(class_name=row["class"], feature=row["feature"], tcav=row["tcav"], tcav_sd=row["tcav_sd"],
                           p_value=row["p_value"], rank_correlation=row["rank_correlation"],
                           partial_dependence=row.get("partial_dependence")) for row in record["scores"]]
    return ConceptReport(scores, settings=record.get("settings", {}))


def concept_scores(bundle, samples, features: np.ndarray, names: list[str], wanted=KEY_FEATURES, runs: int = 10,
                   quantile: float = 0.25, cells_per_concept: int = 40, cells_per_class: int = 60, seed: int = 0,
                   random_runs: int | None = None, progress: bool = False) -> ConceptReport:
    """TCAV of every ``wanted`` feature for every class of ``bundle``, on ``samples`` (cells with
    ``.image`` and ``.label``) whose features ``(N, F)`` (columns ``names``) are given.

    Random CAVs scatter widely (their TCAV is anywhere in [0, 1]), so the null distribution gets
    at least 20 of them (``random_runs``) whatever ``runs`` is; the test is Welch's t-test."""
    random_runs = max(runs, 20) if random_runs is None else random_runs
    # captum shuffles each CAV's cells with Python's global generator and fits the CAV with
    # scikit-learn's SGDClassifier, which shuffles with NumPy's: seed both (and torch's), then
    # put them back
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            return _concept_scores(bundle, samples, features, names, wanted, runs, quantile, cells_per_concept,
                                   cells_per_class, seed, random_runs, progress)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _concept_scores(bundle, samples, features, names, wanted, runs, quantile, cells_per_concept, cells_per_class,
                    seed, random_runs, progress) -> ConceptReport:
    from captum.concept import TCAV, Concept
    from scipy.stats import spearmanr, ttest_ind

    rng = np.random.default_rng(seed)
    layer = concept_layer(bundle.architecture)
    model = bundle.model.eval()
    inputs = torch.cat([bundle.preprocess([s.image for s in samples[i:i + 64]]) for i in range(0, len(samples), 64)])
    labels = np.array([s.label for s in samples])
    wanted = [f for f in wanted if f in names]
    size = cells_per_concept
    concept_id = iter(range(10 ** 6))

    def concept(rows, name):
        return Concept(next(concept_id), name, [inputs[torch.as_tensor(np.sort(rows))]])

    sets, owners = [], []
    for feature in wanted:
        values = features[:, names.index(feature)]
        finite = np.flatnonzero(np.isfinite(values))
        low_cut, high_cut = np.quantile(values[finite], [quantile, 1 - quantile])
        high, low = finite[values[finite] >= high_cut], finite[values[finite] <= low_cut]
        count = min(size, len(high), len(low))
        for run in range(runs):
            sets.append([concept(rng.choice(high, count, replace=False), f"high-{feature}-{run}"),
                         concept(rng.choice(low, count, replace=False), f"low-{feature}-{run}")])
            owners.append(feature)
    for run in range(random_runs):
        both = rng.choice(len(samples), 2 * min(size, len(samples) // 2), replace=False)
        sets.append([concept(both[: len(both) // 2], f"random-a-{run}"), concept(both[len(both) // 2:], f"random-b-{run}")])
        owners.append(None)

    with torch.no_grad():
        logits = torch.cat([model(inputs[i:i + 64]) for i in range(0, len(inputs), 64)]).numpy()
    dependence = _partial_dependence(features, names, labels, wanted, len(bundle.classes), seed)
    scores = []
    classes = range(len(bundle.classes))
    if progress:
        from tqdm.auto import tqdm

        classes = tqdm(classes, desc="concepts per class", unit="class", leave=False)
    with tempfile.TemporaryDirectory() as cache, warnings.catch_warnings():
        # captum's own CAV classifier warns of its memory use and of a slow tensor copy inside
        # it: nothing a user of this function can act on
        warnings.filterwarnings("ignore", "Using default classifier for TCAV", UserWarning)
        warnings.filterwarnings("ignore", "Creating a tensor from a list of numpy.ndarrays", UserWarning)
        tcav = TCAV(model, layers=[layer], save_path=cache)
        for class_index in classes:
            mine = np.flatnonzero(labels == class_index)
            if not len(mine):
                continue
            mine = rng.choice(mine, min(cells_per_class, len(mine)), replace=False)
            result = tcav.interpret(inputs[torch.as_tensor(mine)], sets, target=int(class_index))
            per_set = [float(result["-".join(str(c.id) for c in pair)][layer]["sign_count"][0]) for pair in sets]
            random_scores = [score for score, owner in zip(per_set, owners) if owner is None]
            for feature in wanted:
                values = [score for score, owner in zip(per_set, owners) if owner == feature]
                _, p_value = ttest_ind(values, random_scores, equal_var=False)
                column = features[:, names.index(feature)]
                finite = np.isfinite(column)
                rho = spearmanr(column[finite], logits[finite, class_index]).statistic
                scores.append(ConceptScore(
                    class_name=bundle.classes[class_index], feature=feature, tcav=float(np.mean(values)),
                    tcav_sd=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                    p_value=float(p_value) if np.isfinite(p_value) else 1.0, rank_correlation=float(rho),
                    partial_dependence=dependence.get((class_index, feature))))
    return ConceptReport(scores, settings={"layer": layer, "runs": runs, "random_runs": random_runs, "quantile": quantile,
                                           "cells_per_concept": size, "cells_per_class": cells_per_class,
                                           "cells": len(samples), "seed": seed, "features": wanted})


def _partial_dependence(features, names, labels, wanted, num_classes, seed) -> dict:
    """The morphometric baseline's probability of each class at the feature's 90th minus its
    10th percentile, the other features as they are (scikit-learn's partial dependence)."""
    from sklearn.inspection import partial_dependence

    from xcyto.morphology._baseline import fit_baseline

    model = fit_baseline(features, labels, seed=seed)
    found = {}
    for feature in wanted:
        column = names.index(feature)
        finite = features[np.isfinite(features[:, column]), column]
        grid = np.quantile(finite, [0.1, 0.9])
        result = partial_dependence(model, np.nan_to_num(features, nan=np.nanmedian(features, axis=0)), [column],
                                    custom_values={column: grid}, kind="average", response_method="predict_proba",
                                    method="brute")
        average = np.atleast_2d(result["average"])
        for row, class_index in enumerate(model.classes_ if len(model.classes_) > 2 else [model.classes_[1]]):
            found[(int(class_index), feature)] = float(average[row, -1] - average[row, 0])
    return found


def plot_concepts(report: ConceptReport, class_name: str):
    """One class: each feature's TCAV score (bars, the run-to-run spread as error bars,
    significant ones solid) beside its rank correlation with the class logit."""
    import matplotlib.pyplot as plt

    scores = [s for s in report.scores if s.class_name == class_name]
    names = [label(s.feature) for s in scores]
    figure, (left, right) = plt.subplots(1, 2, figsize=(8.5, 0.45 * len(scores) + 1.6), sharey=True)
    positions = np.arange(len(scores))
    left.barh(positions, [s.tcav for s in scores], xerr=[s.tcav_sd for s in scores], capsize=2,
              color=["#1f5fa8" if s.significant else "#c6d4e6" for s in scores])
    left.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
    left.set_xlim(0, 1)
    left.set_yticks(positions, names)
    left.set_xlabel("TCAV score (dark: differs from random, p < 0.05)")
    right.barh(positions, [s.rank_correlation for s in scores], color="#d35400", alpha=0.7)
    right.axvline(0, color="grey", linewidth=0.8)
    right.set_xlim(-1, 1)
    right.set_xlabel("rank correlation with the class logit")
    figure.suptitle(f"{class_name}: what moves the model's call", fontsize=11)
    figure.tight_layout()
    return figure
