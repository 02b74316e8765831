"""The checks: one registry, one calling convention.

Every check reads the per-crop table (:class:`Table`) and returns one score per crop
(``nan`` where it does not apply); a crop is flagged when its score is on the wrong side of
the check's threshold (``flag_when``: ``"below"`` or ``"at least"``). Its reason says, in
words, what was measured and why it matters. Thresholds are fixed here, in the measured
quantity's own units, and were set on clean Herlev cells and the planted problems of
``tools/dirty_herlev.py`` (README: "Data health").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from xcyto.data.health import _cells, _duplicates, _morphology


@dataclass
class Table:
    """What was measured on every crop, aligned with ``paths`` (see ``xcyto.data.health.check``)."""

    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    height: np.ndarray
    width: np.ndarray
    brightness: np.ndarray
    darkest_density: np.ndarray
    grey_std: np.ndarray
    log_sharpness: np.ndarray
    nuclei: list[list]  # per crop: its _cells.Nucleus list (those found beyond the main one last)
    mains: list  # per crop: the main _cells.Nucleus or None
    repeats: dict = field(default_factory=dict)  # crop -> _duplicates.Pair with an earlier crop
    morphometry: np.ndarray | None = None  # (N, len(_morphology.FEATURES)), nan rows where no nucleus
    class_ranges: dict = field(default_factory=dict)  # label -> (median, spread) of those features
    reference: dict = field(default_factory=dict)  # the collection's medians (size, aspect, focus)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class Check:
    """A data check. ``blocking``: the crop cannot be used for its label at all (a crop with no
    nucleus says nothing about a cell's class)."""

    name: str
    title: str
    kind: str  # "cell", "image", "duplicate" or "label"
    threshold: float
    flag_when: str  # "below" or "at least"
    score: Callable[[Table], np.ndarray]
    reason: Callable[[Table, int, float], str]
    blocking: bool = False
    description: str = ""

    def flags(self, scores: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            flagged = scores < self.threshold if self.flag_when == "below" else scores >= self.threshold
        return flagged & np.isfinite(scores)


CHECKS: dict[str, Check] = {}


def register_check(check: Check) -> Check:
    CHECKS[check.name] = check
    return check


def list_checks() -> list[str]:
    return list(CHECKS)


# -- cell checks ------------------------------------------------------------------------------
def _main_or_nan(table: Table, value: Callable) -> np.ndarray:
    return np.array([np.nan if main is None else value(main) for main in table.mains], dtype=np.float64)


#: Another nucleus counts when it is whole, at least this share of the main one's area, and
#: farther from it than this many times the sum of their radii (not the two nuclei of one cell).
OTHER_MIN_SIZE = 0.1
OTHER_MIN_SEPARATION = 1.3
OTHER_MIN_SOLIDITY = 0.8
OTHER_EDGE_MARGIN = 0.02
CUT_THRESHOLD = 0.5


def other_nuclei(nuclei: list, main) -> list:
    """The whole, separate nuclei beside ``main`` that suggest another cell in the crop."""
    if main is None:
        return []
    main_radius = np.sqrt(main.area_share / np.pi)
    found = []
    for nucleus in nuclei:
        if nucleus is main or nucleus.cut > 0 or nucleus.area_share < OTHER_MIN_SIZE * main.area_share:
            continue
        if nucleus.solidity < OTHER_MIN_SOLIDITY:
            continue
        room = min(nucleus.centre[0] - nucleus.extent[0], nucleus.centre[1] - nucleus.extent[1],
                   1 - nucleus.centre[0] - nucleus.extent[0], 1 - nucleus.centre[1] - nucleus.extent[1])
        if room < OTHER_EDGE_MARGIN:
            continue
        distance = np.hypot(nucleus.centre[0] - main.centre[0], nucleus.centre[1] - main.centre[1])
        if distance >= OTHER_MIN_SEPARATION * (main_radius + np.sqrt(nucleus.area_share / np.pi)):
            found.append(nucleus)
    return found


register_check(Check(
    "no_nucleus", "no nucleus", "cell", threshold=_cells.MIN_BLOB_SHARE, flag_when="below", blocking=True,
    score=lambda t: np.array([main.area_share if main is not None else 0.0 for main in t.mains]),
    reason=lambda t, i, s: ("no cell nucleus found: nothing in the crop is as dark and compact as a stained nucleus "
                            "(empty background, debris, or a cell's edge); its label cannot be checked"),
    description="the segmenter finds no nucleus with the contrast of a stained one, and no small dark round "
                "blob lies inside a cell; score: share of the crop covered by the nucleus found"))

register_check(Check(
    "nucleus_cut_by_border", "nucleus cut by the border", "cell", threshold=CUT_THRESHOLD, flag_when="at least",
    score=lambda t: _main_or_nan(t, lambda main: main.cut),
    reason=lambda t, i, s: (f"the crop's border cuts through the nucleus (along {s:.0%} of its width): part of the "
                            "cell is missing"),
    description="length of crop border running through the main nucleus over its width"))

register_check(Check(
    "nucleus_off_centre", "nucleus far from the centre", "cell", threshold=0.25, flag_when="at least",
    score=lambda t: _main_or_nan(t, lambda main: main.gap if main.cut < CUT_THRESHOLD else np.nan),
    reason=lambda t, i, s: (f"the nucleus lies {s:.2f} half-widths from the crop's centre: the crop may be centred on "
                            "something else, such as a neighbouring cell"),
    description="distance from the crop's centre to the main nucleus's box, in half-sides of the crop"))

def _several_score(table: Table) -> np.ndarray:
    """Other whole nuclei, counted when the crop's centre is not on the main one: a crop centred on
    one nucleus is about that cell, whatever lies beside it."""
    return np.array([np.nan if main is None else float(len(other_nuclei(nuclei, main))) if main.gap > 0 else 0.0
                     for nuclei, main in zip(table.nuclei, table.mains)])


register_check(Check(
    "several_nuclei", "several cells", "cell", threshold=1, flag_when="at least",
    score=_several_score,
    reason=lambda t, i, s: (f"{int(s) + 1} separate whole nuclei: the crop may show several cells, and which one "
                            "the label is about is unclear"),
    description="whole nuclei besides the main one (at least 10 % of its size and apart from it), when the crop's "
                "centre is on none of them"))

# -- image checks -----------------------------------------------------------------------------
FOCUS_FACTOR = 6.0
ODD_SIZE_FACTOR = 2.5
ODD_ASPECT_FACTOR = 2.5

register_check(Check(
    "out_of_focus", "out of focus", "image", threshold=float(np.log(FOCUS_FACTOR)), flag_when="at least",
    score=lambda t: t.reference["log_sharpness"] - t.log_sharpness,
    reason=lambda t, i, s: (f"out of focus: {np.exp(s):.1f} times less fine detail than this collection's median crop "
                            f"(flagged from {FOCUS_FACTOR:.1f} times)"),
    description="log of the median crop's sharpness over this crop's (variance of the Laplacian over the variance "
                "of grey levels, at 128 px)"))

register_check(Check(
    "too_dark", "too dark", "image", threshold=80.0, flag_when="below",
    score=lambda t: t.brightness,
    reason=lambda t, i, s: f"too dark: even its brightest pixels reach only {s:.0f} of 255 (under-exposed)",
    description="grey level of the brightest 2 % of the crop (0-255)"))

register_check(Check(
    "too_light", "washed out", "image", threshold=0.5, flag_when="below",
    score=lambda t: t.darkest_density,
    reason=lambda t, i, s: (f"washed out: its darkest part is only {s:.2f} optical density darker than its brightest "
                            "(a stained nucleus is over 1)"),
    description="optical density (R + G + B) of the darkest 0.5 % against the brightest 2 %"))

register_check(Check(
    "low_information", "low information", "image", threshold=4.0, flag_when="below",
    score=lambda t: t.grey_std,
    reason=lambda t, i, s: f"almost uniform: grey levels vary by {s:.1f} of 255 across the crop",
    description="standard deviation of the grey levels"))


def _size_score(table: Table) -> np.ndarray:
    sides = np.maximum(table.height, table.width).astype(np.float64)
    ratio = np.abs(np.log(sides / table.reference["longer_side"]))
    low, high = table.reference["longer_side_fence"]
    inside_fence = (sides >= low) & (sides <= high)
    return np.where(inside_fence, 0.0, ratio / np.log(ODD_SIZE_FACTOR))


register_check(Check(
    "odd_size", "odd size", "image", threshold=1.0, flag_when="at least",
    score=_size_score,
    reason=lambda t, i, s: (f"{max(t.height[i], t.width[i])} px on its longer side, against this collection's median of "
                            f"{t.reference['longer_side']:.0f} px: resized, or cut at another scale"),
    description=f"log of the longer side over the collection's median, in units of log {ODD_SIZE_FACTOR} (flagged "
                "beyond a factor 2.5 and outside the collection's interquartile fence, 3 IQR in log size)"))

register_check(Check(
    "odd_aspect", "odd aspect", "image", threshold=ODD_ASPECT_FACTOR, flag_when="at least",
    score=lambda t: (np.maximum(t.height, t.width) / np.maximum(np.minimum(t.height, t.width), 1))
    / t.reference["aspect"],
    reason=lambda t, i, s: (f"{t.width[i]} x {t.height[i]} px: {s:.1f} times as elongated as this collection's median "
                            "crop (a strip cut from a cell)"),
    description="longer over shorter side, over the collection's median"))

# -- duplicates -------------------------------------------------------------------------------


def _repeat_score(kind: str):
    def score(table: Table) -> np.ndarray:
        values = np.full(len(table), np.nan)
        for index, pair in table.repeats.items():
            if (pair.kind == "exact") == (kind == "exact"):
                values[index] = pair.similarity
        return values
    return score


def _repeat_reason(table: Table, index: int, score: float) -> str:
    pair = table.repeats[index]
    other = table.paths[pair.first]
    if pair.kind == "exact":
        return f"the same pixels as {other}"
    how = "correlation" if pair.kind == "near" else "embedding cosine"
    return f"a near copy of {other} ({how} {score:.3f}; flipped, turned, rescaled or re-encoded copies count)"


register_check(Check(
    "exact_duplicate", "exact duplicate", "duplicate", threshold=1.0, flag_when="at least",
    score=_repeat_score("exact"), reason=_repeat_reason,
    description="identical decoded pixels to an earlier crop"))

register_check(Check(
    "near_duplicate", "near duplicate", "duplicate", threshold=_duplicates.MIN_CORRELATION, flag_when="at least",
    score=_repeat_score("near"), reason=_repeat_reason,
    description=f"perceptual hashes within {_duplicates.MAX_HASH_DISTANCE} bits in some flip or quarter turn, then "
                f"grey thumbnails correlated at {_duplicates.MIN_CORRELATION} or more (with a bundle: embeddings at "
                f"cosine {_duplicates.MIN_EMBEDDING_COSINE} or more)"))

# -- labels -----------------------------------------------------------------------------------


def _label_score(table: Table) -> np.ndarray:
    if table.morphometry is None:
        return np.full(len(table), np.nan)
    return _morphology.distances(table.morphometry, table.labels, table.class_ranges)


def _label_reason(table: Table, index: int, score: float) -> str:
    share, ratio = np.exp(table.morphometry[index][0]), table.morphometry[index][1]
    median, _ = table.class_ranges[int(table.labels[index])]
    name = table.classes[table.labels[index]]
    return (f"its nucleus covers {share:.1%} of the crop with an N/C ratio of {ratio:.2f}, far outside its class "
            f"{name} (median {np.exp(median[0]):.1%} and {median[1]:.2f}; {score:.1f} robust SDs away): check the label")


register_check(Check(
    "far_from_class", "morphology far from its class", "label", threshold=_morphology.FAR,
    flag_when="at least", score=_label_score, reason=_label_reason,
    description="distance of the nucleus's size and N/C ratio from its class's median, in robust standard "
                f"deviations (classes with {_morphology.MIN_CLASS_CROPS} or more measured crops)"))

#: Checks whose flagged crops training leaves out unless told otherwise (README: "Data health").
BLOCKING = tuple(name for name, check in CHECKS.items() if check.blocking)
