"""A small learned segmenter: a U-Net (Ronneberger et al. 2015) of about 0.5 M parameters
that labels every pixel background, cytoplasm or nucleus, trained in minutes on a CPU.

It learns from cells with masks: real ones (the Herlev masks, moved onto the 224 px copy by
:func:`xcyto.data.transfer_masks`) and synthetic ones (exact). It ships as a
safetensors file with a small JSON inside the package (``xcyto/morphology/weights``, about
2 MB, in the wheel too) and is the ``learned`` segmenter of :func:`xcyto.morphology.segment`.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xcyto.morphology._segment import CellMasks, SegmentationError, register_segmenter

INPUT_SIZE = 96
WIDTHS = (16, 32, 64, 128)
CLASSES = ("background", "cytoplasm", "nucleus")
ENV = "XCYTO_SEGMENTER"
WEIGHTS_FILE, CONFIG_FILE = "segmenter.safetensors", "segmenter.json"


def default_path() -> Path:
    """``$XCYTO_SEGMENTER``, else the segmenter shipped inside the package."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    return Path(__file__).resolve().parent / "weights"


class UNet(nn.Module):
    """Encoder-decoder with skip connections; ``(B, 3, S, S)`` in [0, 1] -> ``(B, 3, S, S)`` logits."""

    def __init__(self, widths=WIDTHS):
        super().__init__()
        self.down = nn.ModuleList()
        channels = 3
        for width in widths:
            self.down.append(_block(channels, width))
            channels = width
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ModuleDict({"lift": nn.ConvTranspose2d(channels, width, 2, stride=2),
                                          "fuse": _block(2 * width, width)}))
            channels = width
        self.out = nn.Conv2d(channels, len(CLASSES), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        skips = []
        x = images
        for index, block in enumerate(self.down):
            x = block(x if index == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for step, skip in zip(self.up, reversed(skips[:-1])):
            x = step["fuse"](torch.cat([step["lift"](x), skip], dim=1))
        return self.out(x)


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False), nn.BatchNorm2d(channels_out),
                         nn.ReLU(inplace=True), nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True))


def _to_input(image: np.ndarray, size: int = INPUT_SIZE) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """The image padded to a square with its background colour and resized, as a ``(3, S, S)``
    tensor in [0, 1], with where it landed (``fit_box``)."""
    import cv2

    from xcyto.data import background_colour, fit_box

    height, width = image.shape[:2]
    left, top, box_width, box_height = fit_box(height, width, size)
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = background_colour(image)
    canvas[top:top + box_height, left:left + box_width] = cv2.resize(image, (box_width, box_height),
                                                                    interpolation=cv2.INTER_AREA)
    return torch.from_numpy(canvas).permute(2, 0, 1).float() / 255.0, (left, top, box_width, box_height)


def _target(sample, size: int = INPUT_SIZE) -> torch.Tensor:
    """``(S, S)`` class index per pixel (0 background, 1 cytoplasm, 2 nucleus), laid out as :func:`_to_input`."""
    import cv2

    from xcyto.data import fit_box

    height, width = sample.image.shape[:2]
    left, top, box_width, box_height = fit_box(height, width, size)
    labels = np.zeros((height, width), np.uint8)
    labels[sample.cytoplasm_mask] = 1
    labels[sample.nucleus_mask] = 2
    placed = np.zeros((size, size), np.uint8)
    placed[top:top + box_height, left:left + box_width] = cv2.resize(labels, (box_width, box_height),
                                                                     interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(placed).long()


def train_segmenter(samples, out, epochs: int = 25, batch_size: int = 16, lr: float = 2e-3, seed: int = 0,
                    validation=None, note: str = "") -> dict:
    """Train a :class:`UNet` on cells with masks (``CellSample``s with ``nucleus_mask`` and
    ``cytoplasm_mask``) and save it in ``out``; returns what was recorded in its JSON."""
    from xcyto.atomic import atomic_dir
    from xcyto.bundle import dihedral_views

    torch.manual_seed(seed)
    samples = [s for s in samples if s.nucleus_mask is not None and s.cytoplasm_mask is not None]
    if not samples:
        raise SegmentationError("no cells with nucleus and cytoplasm masks to train on")
    inputs = torch.stack([_to_input(s.image)[0] for s in samples])
    targets = torch.stack([_target(s) for s in samples])
    model = UNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * max(1, len(samples) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(samples), generator=generator)
        for first in range(0, len(order) - batch_size + 1, batch_size):
            rows = order[first:first + batch_size]
            view = int(torch.randint(8, (), generator=generator))  # one of the 8 symmetries per batch
            images = dihedral_views(inputs[rows])[view]
            labels = dihedral_views(targets[rows][:, None])[view][:, 0]
            jitter = 1 + 0.1 * (torch.rand(len(rows), 3, 1, 1, generator=generator) - 0.5)  # stain strength
            logits = model((images * jitter).clamp(0, 1))
            loss = F.cross_entropy(logits, labels) + _soft_dice_loss(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    record = {"format": "xcyto-segmenter", "input_size": INPUT_SIZE, "widths": list(WIDTHS), "classes": list(CLASSES),
              "cells": len(samples), "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
              "train_seconds": round(time.perf_counter() - started, 1), "trained_on": note}
    if validation:
        record["validation_dice"] = dice_scores(LearnedSegmenter(model).segment, validation)
    from safetensors.torch import save_file

    out = Path(out)
    with atomic_dir(out) as staging:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, staging / WEIGHTS_FILE)
        (staging / CONFIG_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return record


def _soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of the cytoplasm-or-nucleus and the nucleus regions: the small nucleus
    counts as much as the large background."""
    probabilities = logits.softmax(dim=1)
    losses = []
    for region, predicted in ((labels >= 1, probabilities[:, 1:].sum(1)), (labels == 2, probabilities[:, 2])):
        truth = region.float()
        losses.append(1 - (2 * (predicted * truth).sum() + 1) / (predicted.sum() + truth.sum() + 1))
    return sum(losses) / len(losses)


def dice_scores(segmenter, samples) -> dict:
    """Median and mean Dice of nucleus and cell masks of ``segmenter(image) -> CellMasks``."""
    def dice(a, b):
        return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))

    nucleus, cell = [], []
    for sample in samples:
        masks = segmenter(sample.image)
        nucleus.append(dice(masks.nucleus, sample.nucleus_mask))
        cell.append(dice(masks.cell, sample.cytoplasm_mask))
    return {"cells": len(nucleus), "nucleus_mean": float(np.mean(nucleus)), "nucleus_median": float(np.median(nucleus)),
            "cell_mean": float(np.mean(cell)), "cell_median": float(np.median(cell))}


class LearnedSegmenter:
    """A trained :class:`UNet` applied to one image: labels at the model's size, back onto the image."""

    def __init__(self, model: UNet, size: int = INPUT_SIZE):
        self.model = model.eval()
        self.size = size

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "LearnedSegmenter":
        from safetensors.torch import load_file

        path = Path(path) if path else default_path()
        if not (path / WEIGHTS_FILE).is_file():
            raise SegmentationError(f"no learned segmenter at {path} (it ships inside the package; rebuild it with "
                                    f"'python artifacts/build_segmenter.py', or set ${ENV})")
        config = json.loads((path / CONFIG_FILE).read_text())
        with torch.random.fork_rng(devices=[]):  # its weights are loaded: draw nothing from the caller's generator
            model = UNet(tuple(config["widths"]))
        model.load_state_dict(load_file(path / WEIGHTS_FILE))
        return cls(model, int(config["input_size"]))

    @torch.no_grad()
    def segment(self, image: np.ndarray) -> CellMasks:
        import cv2
        from scipy import ndimage

        from xcyto.morphology._segment import _central_component

        tensor, (left, top, box_width, box_height) = _to_input(image, self.size)
        labels = self.model(tensor[None]).argmax(dim=1)[0].numpy().astype(np.uint8)
        labels = cv2.resize(labels[top:top + box_height, left:left + box_width], (image.shape[1], image.shape[0]),
                            interpolation=cv2.INTER_NEAREST)
        cell = _central_component(ndimage.binary_fill_holes(labels >= 1))
        nucleus = _central_component(ndimage.binary_fill_holes((labels == 2) & cell))
        return CellMasks(nucleus=nucleus, cell=cell | nucleus)


_LOADED: dict[str, LearnedSegmenter] = {}


def preferred_segmenter() -> str:
    """``"learned"`` when a trained segmenter is at hand (:func:`default_path`), else
    ``"classical"``, said once (a warning) since it finds the nucleus less well."""
    path = default_path()
    if (path / WEIGHTS_FILE).is_file():
        return "learned"
    if str(path) not in _WARNED:
        _WARNED.add(str(path))
        warnings.warn(f"no learned segmenter at {path} (${ENV} names another folder): morphology uses the "
                      "classical segmenter, which finds the nucleus less well (Dice 0.73 against 0.88 on "
                      "held-out Herlev)", SegmenterWarning, stacklevel=2)
    return "classical"


class SegmenterWarning(UserWarning):
    """Morphology fell back to the classical segmenter."""


_WARNED: set[str] = set()


@register_segmenter("learned")
def learned(image: np.ndarray) -> CellMasks:
    key = str(default_path())
    if key not in _LOADED:
        _LOADED[key] = LearnedSegmenter.load()
    return _LOADED[key].segment(image)
