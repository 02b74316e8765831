"""A screening threshold with a guarantee: which cells may be cleared as normal so that, on new
cells, at most ``1 - sensitivity`` of the abnormal ones are missed.

The threshold is on the probability of abnormal (the abnormal classes' probabilities summed,
as the 2-class metrics do); cells below it are cleared, the rest referred. It is chosen by
conformal risk control (Angelopoulos et al. 2022) on the validation cells: the largest
threshold whose missed share of the n abnormal validation cells, counted as
``(misses + 1) / (n + 1)``, stays at or below ``1 - sensitivity``. That bounds the expected
miss rate on new cells drawn like the validation cells; an upper confidence bound (Clopper-
Pearson) would bound it with a stated confidence instead, but for 0.98 it needs about 150
abnormal validation cells with no miss at all, more than most collections hold, while risk
control needs ``1 / (1 - sensitivity) - 1`` (49 for 0.98). With fewer, nothing is cleared.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from xcyto.data import abnormal_flags
from xcyto.errors import XcytoError

DEFAULT_SENSITIVITY = 0.98
METHOD = "conformal risk control"


@dataclass
class Screen:
    """A chosen threshold and what it did on the validation cells."""

    threshold: float              # clear a cell when p(abnormal) < threshold
    sensitivity: float            # the target: expected share of abnormal cells referred
    guaranteed: bool              # False: too few abnormal validation cells to clear anything
    validation_sensitivity: float
    cleared_normal: float         # share of normal validation cells cleared (the workload removed)
    cleared_all: float            # share of all validation cells cleared
    abnormal_cells: int
    normal_cells: int
    method: str = METHOD

    def refer(self, p_abnormal) -> np.ndarray:
        """``True`` for the cells to refer to a person (at or above the threshold)."""
        return np.asarray(p_abnormal) >= self.threshold

    def outcome(self, p_abnormal, abnormal) -> dict:
        """What the threshold does on cells whose truth is known (see :func:`outcome`)."""
        return outcome(self.refer(p_abnormal), abnormal)

    def describe(self) -> str:
        if not self.guaranteed:
            return (f"no threshold: {self.abnormal_cells} abnormal validation cells cannot promise sensitivity "
                    f"{self.sensitivity:.2f} (it needs {needed_cells(self.sensitivity)}); every cell is referred")
        return (f"clear when p(abnormal) < {self.threshold:.4f}: expected sensitivity >= {self.sensitivity:.2f} "
                f"({METHOD}, {self.abnormal_cells} abnormal validation cells; {self.validation_sensitivity:.3f} on them); "
                f"clears {self.cleared_normal:.0%} of the normal validation cells")

    def to_dict(self) -> dict:
        return {**asdict(self), "description": self.describe()}

    @classmethod
    def from_dict(cls, record: dict) -> "Screen":
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})


def outcome(refer, abnormal) -> dict:
    """``sensitivity`` (share of the abnormal cells referred), ``missed`` (abnormal cells cleared)
    and ``cleared_normal`` (share of the normal cells cleared: the workload removed)."""
    refer, abnormal = np.asarray(refer, dtype=bool), np.asarray(abnormal, dtype=bool)
    return {"sensitivity": float(refer[abnormal].mean()) if abnormal.any() else float("nan"),
            "missed": int((~refer[abnormal]).sum()),
            "cleared_normal": float((~refer[~abnormal]).mean()) if (~abnormal).any() else float("nan")}


def needed_cells(sensitivity: float) -> int:
    """The fewest abnormal validation cells that let risk control clear anything."""
    return int(np.ceil(1 / (1 - sensitivity) - 1 - 1e-9))


def p_abnormal(probabilities, classes: list[str]) -> np.ndarray:
    """``(N,)``: the summed probability of the abnormal classes."""
    flags = abnormal_flags(classes)
    if flags is None:
        raise XcytoError(f"screening needs classes that are each normal or abnormal; {', '.join(classes)} are not "
                         "all known (see xcyto.data.abnormal_flags)")
    return np.asarray(probabilities, dtype=np.float64)[:, flags].sum(1)


def fit_screen(p_abnormal_values, abnormal, sensitivity: float = DEFAULT_SENSITIVITY) -> Screen:
    """The threshold for ``sensitivity`` from validation cells' p(abnormal) and truth."""
    if not 0 < sensitivity < 1:
        raise XcytoError(f"sensitivity must be between 0 and 1, got {sensitivity}")
    scores = np.asarray(p_abnormal_values, dtype=np.float64)
    abnormal = np.asarray(abnormal, dtype=bool)
    positives = np.sort(scores[abnormal])
    n = len(positives)
    alpha = 1.0 - sensitivity
    allowed = int(np.floor(alpha * (n + 1) - 1 + 1e-9))  # misses with (misses + 1) / (n + 1) <= alpha
    guaranteed = allowed >= 0 and n > 0
    # Clearing below the (allowed + 1)-th smallest abnormal score misses at most ``allowed`` of them.
    threshold = float(positives[allowed]) if guaranteed and allowed < n else (1.0 + 1e-9 if guaranteed else 0.0)
    refer = scores >= threshold
    found = outcome(refer, abnormal)
    return Screen(threshold=threshold, sensitivity=float(sensitivity), guaranteed=bool(guaranteed),
                  validation_sensitivity=found["sensitivity"], cleared_normal=found["cleared_normal"],
                  cleared_all=float((~refer).mean()) if len(refer) else float("nan"),
                  abnormal_cells=n, normal_cells=int((~abnormal).sum()))
