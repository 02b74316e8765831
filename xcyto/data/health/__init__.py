"""Data health: what is wrong with the crops before a model learns from them, cell by cell.

    >>> from xcyto.data import load_dataset
    >>> from xcyto.data.health import check
    >>> result = check(load_dataset("../shared/data/herlev"), progress=True)
    >>> result.health_line()                 # 'data health: 12 of 917 crops (1%) have issues: ...'
    >>> result.issues[0]                     # Issue(path, check, score, threshold, reason)
    >>> result.save("herlev-check")          # issues.csv, crops.csv, summary.json, report.html

Checks (one registry, :data:`CHECKS`): no nucleus, nucleus cut by the border, nucleus far
from the centre, several cells, out of focus, too dark, washed out, low information, odd size,
odd aspect, exact and near duplicates, morphology far from its class. They need no trained
classifier: the learned nucleus segmenter and image statistics suffice; a bundle adds
embedding-based duplicates. ``check_image`` runs the per-crop checks on one image (for
``xcyto.explain``, ``xcyto predict`` and the demo). From the shell: ``xcyto data check``.
"""
from xcyto.data.health._registry import BLOCKING, CHECKS, Check, list_checks
from xcyto.data.health._run import DataCheck, Issue, check, check_image, load_check

__all__ = ["BLOCKING", "CHECKS", "Check", "DataCheck", "Issue", "check", "check_image", "list_checks", "load_check"]
