"""The network and the cell's measurements read together: late fusion of a bundle's
probabilities with the morphometric model fitted on its measured training cells.

>>> fusion = fit_fusion(bundle, val_probabilities, val_features, val_labels)  # the weight, on validation
>>> fusion.fuse(probabilities, features)                  # (N, C) fused probabilities
>>> fused_reading(fusion, probabilities[0], {"nc_ratio": 0.6, ...}, bundle.classes).describe()

``xcyto fuse`` records the weight in a bundle; :func:`xcyto.explain` then shows the fused
prediction beside the network's, and the measurements that moved it, in words.
"""
from xcyto.fusion._fused import (NEGLIGIBLE, RECORD, WEIGHTS, FusedReading, FusionWarning, MorphologyFusion, fit_fusion,
                                 fused_reading, load_fusion, measured_model)
from xcyto.fusion._inputs import fusion_inputs, measured_features

__all__ = ["FusedReading", "FusionWarning", "MorphologyFusion", "NEGLIGIBLE", "RECORD", "WEIGHTS", "fit_fusion",
           "fused_reading", "fusion_inputs", "load_fusion", "measured_features", "measured_model"]
