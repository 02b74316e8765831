"""Bundles shared by the explanation and evaluation tests, built once per test session.

(No tests here: imported by ``test_explain*.py`` and ``test_evaluation*.py``.)
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import session_fixture
from xcyto.bundle import Bundle
from xcyto.models import create, get_spec

CLASSES = ["Dyskeratotic", "Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate"]


@functools.lru_cache(maxsize=None)
def untrained_bundle_path(size: int = 48) -> Path:
    """A small_cnn bundle with random weights (seeded) and no gallery, saved once per session
    under pytest's temporary folder (not a ``mkdtemp`` that outlives the run)."""
    torch.manual_seed(0)
    spec = get_spec("small_cnn")
    bundle = Bundle(model=create("small_cnn", num_classes=len(CLASSES), weights=None).eval(),
                    config={"architecture": "small_cnn", "classes": CLASSES, "input_size": size,
                            "mean": list(spec.mean), "std": list(spec.std), "temperature": 1.5,
                            "name": "untrained-small-cnn"})
    return bundle.save(session_fixture("tmp_path_factory").mktemp(f"untrained-{size}px") / "bundle")


def tiny_bundle_path() -> Path:
    """The session's small_cnn trained for seconds on synthetic cells, with its gallery: the
    ``tiny_run`` fixture of ``tests/conftest.py`` (one training per session, shared)."""
    return session_fixture("tiny_run") / "bundle"


def cell(seed: int = 0, size: tuple[int, int] = (60, 52)) -> np.ndarray:
    """A light background, a pink cell and a dark nucleus off-centre: ``H x W x 3`` uint8."""
    return cell_with_masks(seed, size)[0]


def cell_with_masks(seed: int = 0, size: tuple[int, int] = (60, 52)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, nucleus mask, whole-cell mask)`` of :func:`cell`."""
    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    centre = (height * rng.uniform(0.4, 0.6), width * rng.uniform(0.4, 0.6))
    radius = np.hypot(yy - centre[0], xx - centre[1])
    image = np.full((height, width, 3), (228, 222, 216), dtype=np.float64)
    whole, nucleus = radius < 0.38 * min(size), radius < 0.12 * min(size)
    image[whole] = (205, 140, 170)
    image[nucleus] = (70, 50, 120)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), nucleus, whole


def cells_dataset(n: int = 8):
    """A CellDataset of :func:`cell_with_masks` cells (nucleus and whole-cell masks, no evidence)."""
    from xcyto.data import CellDataset, CellSample

    samples = []
    for index in range(n):
        image, nucleus, whole = cell_with_masks(index)
        samples.append(CellSample(image=image, label=index % len(CLASSES), class_name=CLASSES[index % len(CLASSES)],
                                  cell_id=f"cell-{index}", group=f"slide-{index}", nucleus_mask=nucleus,
                                  cytoplasm_mask=whole))
    return CellDataset(samples=samples, classes=list(CLASSES), name="test-cells")


@pytest.mark.parametrize("info, passed, sentence, label", [
    ({"completeness_relative": 0.012, "steps": 41.0, "converged": 1.0, "randomisation_rho": -0.1},
     True, "adds up: 1.2% off f(x) - f(baseline) (41 steps); passed the randomisation check (rho -0.10)",
     "adds up (1.2%, 41 steps); randomisation ok (rho -0.10)"),
    ({"completeness_relative": 0.2, "steps": 257.0, "converged": 0.0},
     False, "does not add up: 20.0% off f(x) - f(baseline) after 257 steps (the cap), tolerance 5%",
     "off by 20% at 257 steps"),
    ({"completeness_relative": 0.01, "steps": 33.0, "converged": 1.0, "randomisation_rho": 0.7, "randomisation_flagged": 1.0},
     False, "flagged by the randomisation check (rho 0.70): the map barely changes when the weights are random",
     "randomisation FLAGGED (rho 0.70)"),
    ({}, None, "", ""),
])
def test_a_maps_check_reads_the_same_as_a_sentence_and_as_a_caption(info, passed, sentence, label):
    from xcyto.explain import Heatmap

    empty = np.zeros((4, 4), np.float32)
    heatmap = Heatmap(method="integrated_gradients", raw=empty, display=empty, overlay=np.zeros((4, 4, 3), np.uint8),
                      scale=1.0, signed=True, normalise="individual", settings={"steps": "auto", "tolerance": 0.05},
                      info=info)
    assert heatmap.check == (passed, sentence)
    assert heatmap.check_label == (passed, label)
