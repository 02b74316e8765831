"""The result of explaining one cell: numbers, maps, overlays, neighbours and settings.

An :class:`Explanation` renders itself (``plot``, ``_repr_html_`` in Jupyter,
``save``) and serialises to JSON (``to_dict``). Maps are at the model's input
resolution, over ``image``, the cell as the model saw it (padded to square, resized).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xcyto.explain._registry import get_method


@dataclass
class Heatmap:
    """One method's map of one cell.

    ``raw``: ``H x W`` float32 as the method computes it (signed where ``signed``:
    negative = evidence against the target). ``display``: ``clip(max(raw, 0) / scale,
    0, 1)``, ``scale`` being the 99th percentile of ``|raw|`` over this map
    (``normalise="individual"``) or over all cells explained together
    (``"shared"``). ``overlay``: ``H x W x 3`` uint8, the display map in
    ``HEATMAP_CMAP`` blended over the cell (opacity grows with the value).
    ``info``: diagnostics such as IG's ``completeness_gap``, or a CAM's ``randomisation_rho``
    from the bundle's recorded check; :attr:`check` says in words whether the map passed.
    """

    method: str
    raw: np.ndarray
    display: np.ndarray
    overlay: np.ndarray
    scale: float
    signed: bool
    normalise: str
    settings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    # the image as given: height, width, padded to square?, and the box the model read of it
    # (left, top, width, height: the whole image, or its nucleus view)
    frame: tuple | None = None

    def on_image(self, values: str = "display") -> np.ndarray:
        """The map over the image as it was given: the padding cut off, resized to the part
        of the image the model read and put back in place (zero elsewhere). ``values``:
        ``"display"`` or ``"raw"``."""
        import cv2

        from xcyto.data import fit_box

        chosen = {"display": self.display, "raw": self.raw}[values]
        if self.frame is None:
            return chosen
        height, width, padded, (box_left, box_top, box_width, box_height) = self.frame
        left, top, inside_width, inside_height = fit_box(box_height, box_width, chosen.shape[0], padded)
        inside = np.ascontiguousarray(chosen[top:top + inside_height, left:left + inside_width], dtype=np.float32)
        inside = cv2.resize(inside, (box_width, box_height), interpolation=cv2.INTER_LINEAR)
        if (box_width, box_height) == (width, height):
            return inside
        whole = np.zeros((height, width), dtype=np.float32)
        whole[box_top:box_top + box_height, box_left:box_left + box_width] = inside
        return whole

    def check_parts(self) -> tuple[bool | None, list[tuple[str, str]]]:
        """``(passed, [(sentence, label), ...])``: the checks that travel with this map, each
        as a sentence and as a few words for captions: the randomisation check recorded in
        the bundle (a flag overrides all else) and IG's completeness. ``(None, [])`` when
        none applies."""
        info = self.info
        rho = info.get("randomisation_rho")
        if rho is not None and info.get("randomisation_flagged", 0) >= 1:
            return False, [(f"flagged by the randomisation check (rho {rho:.2f}): the map barely changes "
                            "when the weights are random", f"randomisation FLAGGED (rho {rho:.2f})")]
        passed, parts = None, []
        if "completeness_relative" in info:
            error, steps = info["completeness_relative"], int(info.get("steps", self.settings.get("steps") or 0))
            tolerance = self.settings.get("tolerance", 0.05)
            passed = bool(info.get("converged", float(error <= tolerance)) >= 1)
            if passed:
                parts.append((f"adds up: {error:.1%} off f(x) - f(baseline) ({steps} steps)",
                              f"adds up ({error:.1%}, {steps} steps)"))
            else:
                capped = " (the cap)" if self.settings.get("steps") == "auto" else ""
                parts.append((f"does not add up: {error:.1%} off f(x) - f(baseline) after {steps} steps{capped}, "
                              f"tolerance {tolerance:.0%}", f"off by {error:.0%} at {steps} steps"))
        if rho is not None:
            parts.append((f"passed the randomisation check (rho {rho:.2f})", f"randomisation ok (rho {rho:.2f})"))
            passed = True if passed is None else passed
        return passed, parts

    @property
    def check(self) -> tuple[bool | None, str]:
        """``(passed, sentence)`` of :meth:`check_parts`."""
        passed, parts = self.check_parts()
        return passed, "; ".join(sentence for sentence, _ in parts)

    @property
    def check_label(self) -> tuple[bool | None, str]:
        """``(passed, a few words)`` of :meth:`check_parts`, for titles and captions."""
        passed, parts = self.check_parts()
        return passed, "; ".join(label for _, label in parts)

    def to_dict(self, arrays: bool = False) -> dict:
        passed, sentence = self.check
        out = {"method": self.method, "signed": self.signed, "scale": self.scale, "normalise": self.normalise,
               "settings": self.settings, "info": self.info, "check": {"passed": passed, "text": sentence},
               "raw_sum": float(self.raw.sum()), "raw_min": float(self.raw.min()), "raw_max": float(self.raw.max())}
        if arrays:
            out.update(raw=self.raw.tolist(), display=self.display.tolist())
        return out


@dataclass
class Explanation:
    """Why the model said what it said about one cell.

    ``predicted`` and ``probabilities`` (calibrated where the bundle applies a calibration)
    describe the prediction; ``prediction_set`` holds every class the bundle's conformal sets
    cannot rule out (:attr:`plausible` says it in words) and ``screening`` whether its
    screening threshold refers or clears the cell; ``target`` is the class the maps explain (the prediction unless asked
    otherwise). ``heatmaps`` maps method name -> :class:`Heatmap`. ``neighbours``,
    ``nearest_per_class`` and ``atypicality``/``atypical`` come from the bundle's
    gallery (empty/None without one). ``settings`` records what produced it. ``image`` is
    the cell as the model saw it; ``original`` the image as it was given (RGB uint8).
    """

    image: np.ndarray
    classes: list[str]
    probabilities: dict[str, float]
    predicted: str
    target: str
    heatmaps: dict[str, Heatmap]
    neighbours: list = field(default_factory=list)
    nearest_per_class: dict = field(default_factory=dict)
    atypicality: float | None = None
    atypical: bool | None = None
    settings: dict = field(default_factory=dict)
    source: str | None = None
    embedding: np.ndarray | None = None
    timings_ms: dict = field(default_factory=dict)
    original: np.ndarray | None = None
    morphology: object | None = None  # xcyto.morphology.Morphology: masks, features, percentiles
    data_issues: list = field(default_factory=list)  # xcyto.data.health.Issue of the image, blocking ones first
    prediction_set: list = field(default_factory=list)  # the classes not ruled out at the bundle's coverage
    screening: str | None = None  # "refer" or "clear" under the bundle's screening threshold (None: none chosen)
    # xcyto.fusion.FusedReading where the bundle fuses the network with the measurements
    # (`xcyto fuse`): the fused prediction and, in words, the measurements that moved it
    fused: object | None = None

    @property
    def plausible(self) -> str:
        """The prediction set in words: "plausible at 90 %: severe_dysplastic or moderate_dysplastic"
        ("" when the bundle has no sets)."""
        if not self.prediction_set:
            return ""
        coverage = self.settings.get("set_coverage")
        at = f" at {coverage:.0%}" if coverage else ""
        return f"plausible{at}: {' or '.join(self.prediction_set)}"

    @property
    def no_nucleus(self) -> bool:
        """The data checks found no cell nucleus: the class is the model's answer for whatever
        else the image shows (background, debris, a cell's edge), not a reading of a cell."""
        return any(issue.check == "no_nucleus" for issue in self.data_issues)

    @property
    def data_warning(self) -> str:
        """One sentence on what is wrong with the image itself ("" when nothing is)."""
        if self.no_nucleus:
            return "no cell nucleus found in this image"
        return "; ".join(issue.reason for issue in self.data_issues)

    def overlay_on_image(self, method: str) -> np.ndarray:
        """``method``'s display map blended over :attr:`original` (``H x W x 3`` uint8)."""
        from xcyto.explain._render import overlay_batch

        heatmap = self.heatmap(method)
        if self.original is None:
            return heatmap.overlay
        import torch

        display = torch.from_numpy(heatmap.on_image())[None]
        return overlay_batch(torch.from_numpy(np.ascontiguousarray(self.original))[None], display)[0].numpy()

    @property
    def confidence(self) -> float:
        """Calibrated probability of the predicted class."""
        return self.probabilities[self.predicted]

    @property
    def methods(self) -> list[str]:
        return list(self.heatmaps)

    def heatmap(self, method: str) -> Heatmap:
        """The heatmap of ``method`` (aliases such as ``"ig"`` work)."""
        return self.heatmaps[method if method in self.heatmaps else get_method(method).name]

    def __repr__(self) -> str:
        warning = f", data_issues={[issue.check for issue in self.data_issues]}" if self.data_issues else ""
        fused = f", fused={self.fused.predicted!r} ({self.fused.probabilities[self.fused.predicted]:.2f})" if self.fused else ""
        return (f"Explanation(predicted={self.predicted!r} ({self.confidence:.2f}){fused}, target={self.target!r}, "
                f"methods={self.methods}, neighbours={len(self.neighbours)}, source={self.source!r}{warning})")

    # -- rendering (render.py) ------------------------------------------------------------
    def plot(self, methods=None, max_neighbours: int = 8):
        """One matplotlib figure: the cell, each overlay, probability bars, neighbours."""
        from xcyto.explain._render import plot_explanation

        return plot_explanation(self, methods=methods, max_neighbours=max_neighbours)

    def _repr_html_(self) -> str:
        from xcyto.explain._render import explanation_html

        return explanation_html(self)

    def save(self, directory, name: str = "explanation", arrays: bool = False) -> dict[str, Path]:
        """Write ``<name>.png`` (figure), ``<name>.json``, ``<name>_cell.png`` and
        ``<name>_<method>.png`` overlays (and ``<name>_<method>.npy`` raw maps with
        ``arrays``) into ``directory``, each file atomically. Returns the paths."""
        from xcyto.explain._render import save_explanation

        return save_explanation(self, directory, name=name, arrays=arrays)

    def to_dict(self, arrays: bool = False) -> dict:
        """JSON-serialisable summary; maps, image and thumbnails only with ``arrays=True``."""
        out = {
            "source": self.source,
            "predicted": self.predicted,
            "confidence": self.confidence,
            "target": self.target,
            "probabilities": dict(self.probabilities),
            "prediction_set": list(self.prediction_set),
            "screening": self.screening,
            "classes": list(self.classes),
            "heatmaps": {name: heatmap.to_dict(arrays) for name, heatmap in self.heatmaps.items()},
            "neighbours": [_neighbour_dict(n, arrays) for n in self.neighbours],
            "nearest_per_class": {name: _neighbour_dict(n, arrays) for name, n in self.nearest_per_class.items()},
            "atypicality": self.atypicality,
            "atypical": self.atypical,
            "settings": self.settings,
            "timings_ms": self.timings_ms,
            "morphology": None if self.morphology is None else self.morphology.to_dict(),
            "data_issues": [issue.to_row() for issue in self.data_issues],
            "no_nucleus": self.no_nucleus,
            "fused": None if self.fused is None else self.fused.to_dict(),
        }
        if arrays:
            out["image"] = self.image.tolist()
            out["embedding"] = None if self.embedding is None else self.embedding.tolist()
        return out


def _neighbour_dict(neighbour, arrays: bool) -> dict:
    out = {key: _plain(getattr(neighbour, key, None))
           for key in ("cell_id", "class_name", "label", "similarity", "group")}
    thumbnail = getattr(neighbour, "thumbnail", None)
    if arrays and thumbnail is not None:
        out["thumbnail"] = np.asarray(thumbnail).tolist()
    return out


def _plain(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
