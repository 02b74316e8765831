"""``xcyto fuse``: choose, on a bundle's validation cells, how much its cells' measurements
weigh beside the network (:mod:`xcyto.fusion`), measure it on the test cells, and record it."""
from __future__ import annotations

import numpy as np

from xcyto.bundle import record_in_config
from xcyto.errors import DataError
from xcyto.loading import load
from xcyto.training._evaluate import bundle_scheme, cells_in_split, training_data
from xcyto.training._metrics import classification_metrics, headline_metrics


def fuse_bundle(bundle, dataset, progress: bool = False) -> tuple[object, dict]:
    """``(fusion, record)``: the weight chosen on ``dataset``'s validation cells of the bundle's
    split, and (where the split has test cells) the network and the fused model on them."""
    from xcyto.fusion import fit_fusion, fusion_inputs

    val, note = cells_in_split(bundle, dataset, "val")
    if val is dataset:
        raise DataError(f"{bundle.name}: no validation split of the bundle applies to {dataset.name} ({note})")
    probabilities, features = fusion_inputs(bundle, val.samples, progress=progress)
    fusion = fit_fusion(bundle, probabilities, features, val.labels)
    record = {**fusion.to_record(), "fitted_on": f"the {len(val)} validation cells"}
    test, _ = cells_in_split(bundle, dataset, "test")
    if test is not dataset and len(test):
        p_test, f_test = fusion_inputs(bundle, test.samples, progress=progress)
        fused = fusion.fuse(p_test, f_test)
        record["test"] = {"cells": f"the {len(test)} test cells"}
        for name, p in (("network", p_test), ("fused", fused)):
            scored = headline_metrics(classification_metrics(np.log(np.clip(p, 1e-12, 1)), test.labels, bundle.classes))
            scored.pop("per_class")
            record["test"][name] = scored
    return fusion, record


def fuse_command(bundle_path, data=None, scheme=None, write: bool = True) -> dict:
    """Choose and record a bundle's fusion with the measurements (``morphology_fusion`` in
    ``bundle.json``); print the weight and what it does on the test cells."""
    from xcyto.data import load_dataset
    from xcyto.fusion import RECORD

    bundle = load(bundle_path)
    data = data or training_data(bundle)
    if not data:
        raise DataError(f"bundle {bundle_path} does not record its data source; pass --data")
    _, record = fuse_bundle(bundle, load_dataset(data, scheme=bundle_scheme(bundle, scheme)), progress=True)
    if write and bundle.path is not None:
        record_in_config(bundle.path, {RECORD: record})
    lines = [f"{bundle.name}: measurements weigh {record['weight']:.2f} beside the network "
             f"(chosen by log-loss on {record['fitted_on']})"]
    for name in ("network", "fused"):
        if "test" in record:
            found = record["test"][name]
            lines.append(f"  {name:>7} on the test cells: accuracy {found['accuracy']:.3f}, macro-F1 {found['macro_f1']:.3f}"
                         + (f", serious misses {found['serious_misses']}" if "serious_misses" in found else ""))
    if write and bundle.path is not None:
        lines.append(f"  recorded in {bundle.path / 'bundle.json'}; xcyto.explain now shows the fused reading")
    print("\n".join(lines))
    return record
