"""How faithful are the explanations? Metrics for maps, measured on the device.

- :func:`deletion_insertion`: deletion and insertion curves and their AUC (RISE);
- :func:`randomisation_check`: cascading model-parameter randomisation (Adebayo et al.
  2018), Spearman rho per layer; methods whose maps survive it are flagged;
- :func:`localisation`: share of positive attribution inside a mask, pointing game;
- :func:`completeness_error`: IG attributions vs f(x) - f(baseline);
- :func:`evaluate_explanations`: all of them, every method, mean and 95 % interval,
  as a table (Markdown/CSV) and a figure (``xcyto evaluate-explanations``).
"""
from xcyto.evaluation._localisation import localisation
from xcyto.evaluation._perturbation import PerturbationCurves, deletion_insertion, pixel_ranks
from xcyto.evaluation._report import (
    DEFAULT_EVALUATION_METHODS,
    EvaluationReport,
    bootstrap_interval,
    evaluate_explanations,
)
from xcyto.evaluation._sanity import (
    COMPLETENESS_TOLERANCE,
    RANDOMISATION_THRESHOLD,
    RECORDED_CELLS,
    RandomisationResult,
    cascade_layers,
    completeness_error,
    completeness_ok,
    randomisation_check,
    randomise_,
    record_randomisation,
    spearman,
)

__all__ = [
    "COMPLETENESS_TOLERANCE", "DEFAULT_EVALUATION_METHODS", "EvaluationReport", "PerturbationCurves",
    "RANDOMISATION_THRESHOLD", "RECORDED_CELLS", "RandomisationResult", "bootstrap_interval", "cascade_layers", "completeness_error",
    "completeness_ok", "deletion_insertion", "evaluate_explanations", "localisation", "pixel_ranks",
    "randomisation_check", "randomise_", "record_randomisation", "spearman",
]
