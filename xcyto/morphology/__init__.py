"""Explanations in cytology's terms: the nucleus and the cell segmented, and measured.

    >>> from xcyto.morphology import segment, measure
    >>> masks = segment(image)                    # CellMasks(nucleus, cell), bool H x W
    >>> measure(image, masks)["nc_ratio"]         # every feature of FEATURES, by name
    >>> analyse(image).features                   # both, at a working size, in the image's pixels
"""
from xcyto.morphology.analyse import Morphology, analyse
from xcyto.morphology.features import FEATURES, Feature, list_features, measure, register_feature, unit_of
from xcyto.morphology import learned as _learned  # noqa: F401  (registers the "learned" segmenter)
from xcyto.morphology.segment import CellMasks, SegmentationError, list_segmenters, register_segmenter, segment

__all__ = ["CellMasks", "Morphology", "analyse", "FEATURES", "Feature", "SegmentationError", "list_features", "list_segmenters", "measure",
           "register_feature", "register_segmenter", "segment", "unit_of"]
