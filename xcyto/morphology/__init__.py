"""Explanations in cytology's terms: the nucleus and the cell segmented, and measured.

    >>> from xcyto.morphology import segment, measure
    >>> masks = segment(image)                    # CellMasks(nucleus, cell), bool H x W
    >>> measure(image, masks)["nc_ratio"]         # every feature of FEATURES, by name
    >>> analyse(image).features                   # both, at a working size, in the image's pixels
"""
from xcyto.morphology._analyse import KEY_FEATURES, Morphology, analyse, label, outlined
from xcyto.morphology._baseline import baseline_log_probabilities, feature_table, fit_baseline
from xcyto.morphology._concepts import concept_scores, load_report, plot_concepts
from xcyto.morphology._features import FEATURES, Feature, list_features, measure, register_feature, unit_of
from xcyto.morphology._learned import LearnedSegmenter, SegmenterWarning, preferred_segmenter  # registers the "learned" segmenter
from xcyto.morphology._segment import CellMasks, SegmentationError, list_segmenters, register_segmenter, segment

__all__ = ["CellMasks", "FEATURES", "Feature", "KEY_FEATURES", "LearnedSegmenter", "Morphology", "SegmentationError", "SegmenterWarning", "analyse",
           "baseline_log_probabilities", "concept_scores", "feature_table", "fit_baseline", "label", "list_features",
           "list_segmenters", "load_report", "measure", "outlined", "plot_concepts", "preferred_segmenter",
           "register_feature", "register_segmenter", "segment", "unit_of"]
