"""Where a model goes wrong, and why: every misclassified or doubtful cell, explained and ranked.

>>> result = xcyto.audit.audit("runs/herlev/bundle", dataset)      # a CellDataset
>>> result.cases[0].reading, result.cases[0].signals               # most worth a look first
>>> result.save("audit-herlev")                                    # report.html, cases.csv, ...

The signals and their weights in the ranking are :data:`KINDS` and :data:`WEIGHTS`;
:meth:`AuditResult.save` writes the report. From the shell: ``xcyto audit --bundle B --data D --out DIR``.
"""
from xcyto.audit._run import DEFAULT_CONFIDENCE, DEFAULT_METHODS, AuditResult, Case, audit
from xcyto.audit._scores import KINDS, WEIGHTS

__all__ = ["AuditResult", "Case", "DEFAULT_CONFIDENCE", "DEFAULT_METHODS", "KINDS", "WEIGHTS", "audit"]
