"""The training loop: GPU (AMP, channels_last, pinned memory) or CPU, DDP, resume.

A run folder holds everything needed to understand and repeat the run::

    settings.json        the TrainConfig and the data source
    split.csv            the split manifest (cell, group, split)
    checkpoint.pt        last completed epoch (model, optimiser, schedule, history)
    best.safetensors     weights of the best validation epoch
    history.json, metrics.json, confusion_matrix.png, learning_curves.png
    bundle/              the trained model, ready for xcyto.load
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from xcyto.atomic import atomic_dir, atomic_path, write_json_atomic
from xcyto.bundle import Bundle, record_in_config
from xcyto.errors import TrainingError, XcytoError
from xcyto.models import create, get_spec
from xcyto.plotting import plot_confusion_matrix, plot_learning_curves, save_figure
from xcyto.training._checkpoint import load_checkpoint, save_atomic
from xcyto.training._config import TrainConfig
from xcyto.training._data import SPLIT_FILE, RunData, prepare_data
from xcyto.training._distributed import DistContext, init_distributed, pick_device, shutdown_distributed
from xcyto.training._distill import DistillationLoss, Positions, teacher_probabilities, teacher_split
from xcyto.training._losses import GradeAwareLoss, grade_costs
from xcyto.calibration import choose_calibration
from xcyto.training._balance import choose_prior_adjustment, choose_training, worth_weighting
from xcyto.training._metrics import classification_metrics, headline_metrics, macro_f1
from xcyto.trust import PredictionSets, set_metrics, trust_records

CHECKPOINT = "checkpoint.pt"
BEST_WEIGHTS = "best.safetensors"


@dataclass
class TrainResult:
    run_dir: Path
    bundle: Bundle
    metrics: dict
    history: list[dict]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def lr_lambda(config: TrainConfig, total_steps: int, frozen_steps: int, backbone: bool):
    """Learning-rate factor per optimiser step: warm-up then cosine, or one-cycle.

    The backbone's factor is 0 while it is frozen, so freezing needs no change to
    ``requires_grad`` (which DDP does not allow mid-run).
    """
    warmup = max(1, int(config.warmup_fraction * total_steps)) if config.schedule == "cosine" else max(1, int(0.3 * total_steps))

    def factor(step: int) -> float:
        if backbone and step < frozen_steps:
            return 0.0
        if config.schedule == "onecycle":
            if step < warmup:
                return 0.04 + 0.96 * step / warmup
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def amp_settings(config: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a gradient scaler is needed)."""
    if device.type != "cuda" or config.amp == "off":
        return None, False
    if config.amp == "bf16" or (config.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


def default_workers(device: torch.device) -> int:
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return min(8, cores)
    # On 2 cores a loader process only competes with the model's threads (measured with
    # bench/train_throughput.py: 94-98 % of the bare step with none, 87-90 % with one).
    return 0 if cores <= 2 else min(4, cores // 2)


def train(config: TrainConfig | None = None, resume: bool = False, **settings) -> TrainResult:
    """Train a classifier and write its run folder and bundle; see :class:`TrainConfig`.

    ``resume=True`` continues the run in ``config.out`` from its last checkpoint with
    the settings it was started with.
    """
    config = config or TrainConfig(**settings)
    run_dir = Path(config.out)
    if resume:
        saved = run_dir / "settings.json"
        if not saved.is_file():
            raise TrainingError(f"{run_dir}: nothing to resume (no settings.json)")
        saved_config = TrainConfig.from_dict(json.loads(saved.read_text())["config"])
        saved_config.epochs = max(saved_config.epochs, config.epochs) if settings.get("epochs") else saved_config.epochs
        saved_config.device = config.device
        config = saved_config
    config.validate()
    if config.teacher and not config.split_manifest:  # the student learns on the teacher's split
        config = replace(config, split_manifest=str(teacher_split(config.teacher)))
    device_type = "cuda" if config.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    context = init_distributed(device_type if config.device != "cpu" else "cpu")
    try:
        result = _train(config, run_dir, resume, context)
        if config.balance == "auto" and worth_weighting(result.metrics["balance"]["class_counts"]):
            result = _weighted_too(config, run_dir, context, result)
        return result
    finally:
        shutdown_distributed(context)


#: Where ``balance="auto"`` trains its class-weighted alternative, inside the run folder.
WEIGHTED_RUN = "balance-loss"


def _weighted_too(config: TrainConfig, run_dir: Path, context: DistContext, plain: TrainResult) -> TrainResult:
    """``balance="auto"`` on uneven classes: the same run (seed, split, excluded crops) with a
    class-weighted loss in ``<run>/balance-loss``; the validation cells choose which training
    the run's bundle and metrics hold (:func:`xcyto.training._balance.choose_training`)."""
    weighted_dir = run_dir / WEIGHTED_RUN
    check = run_dir / "data-check"
    weighted_config = replace(config, balance="loss", out=str(weighted_dir), split_manifest=str(run_dir / SPLIT_FILE),
                              data_check=str(check) if (check / "summary.json").is_file() else config.data_check)
    if context.is_main:
        print(f"balance=auto: the same run with a class-weighted loss -> {weighted_dir}")
    weighted = _train(weighted_config, weighted_dir, (weighted_dir / "settings.json").is_file(), context)
    keep, record = choose_training(plain.metrics["val"], weighted.metrics["val"])
    chosen = weighted if keep else plain
    balance = dict(plain.metrics["balance"] if not keep else weighted.metrics["balance"])
    # for paired comparisons: each training's test figures, and what --balance none gives
    balance.update(mode="auto", training=record,
                   test_by_training={"cross-entropy": headline_metrics(plain.metrics["test"]),
                                     "class-weighted loss": headline_metrics(weighted.metrics["test"])},
                   test_if_balance_none=plain.metrics["balance"].get("test_if_raw")
                   or headline_metrics(plain.metrics["test"]))
    if keep:
        balance["chosen"] = "balance=loss"
    metrics = {**chosen.metrics, "balance": balance}
    bundle = chosen.bundle
    bundle.config["balance"] = balance
    if context.is_main:
        if keep:  # the run's bundle becomes the weighted one (its gallery and split with it)
            with atomic_dir(run_dir / "bundle") as staging:
                shutil.copytree(weighted_dir / "bundle", staging, dirs_exist_ok=True)
            shutil.copyfile(weighted_dir / "confusion_matrix.png", run_dir / "confusion_matrix.png")
        config_path = run_dir / "bundle" / "bundle.json"
        write_json_atomic(config_path, {**json.loads(config_path.read_text()), "balance": balance})
        write_json_atomic(run_dir / "metrics.json", metrics)
        test = metrics["test"]
        print(f"balance=auto: kept the {record['chosen']} training (validation macro-F1 "
              f"{record['validation']['cross-entropy']['macro_f1']:.3f} with cross-entropy, "
              f"{record['validation']['class-weighted loss']['macro_f1']:.3f} with the weighted loss); "
              f"{metrics['evaluated_on']}: accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}")
    context.barrier()
    bundle.path = run_dir / "bundle"
    return TrainResult(run_dir=run_dir, bundle=bundle, metrics=metrics, history=chosen.history)


def _train(config: TrainConfig, run_dir: Path, resume: bool, context: DistContext) -> TrainResult:
    device = pick_device(config.device, context)
    if device.type == "cpu":
        # An explicit OMP_NUM_THREADS wins: on a shared machine more threads than free cores
        # make every step wait for the slowest thread.
        requested = os.environ.get("OMP_NUM_THREADS", "").strip()
        cores = int(requested) if requested.isdigit() and int(requested) > 0 else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // context.world_size))
    seed_everything(config.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(config, run_dir, reuse_split=resume, write=context.is_main)
    if context.is_main:
        for note in data.notes:
            print(f"from the data: {note}")
    teacher = (teacher_probabilities(config.teacher, data, run_dir, device, write=context.is_main)
               if config.teacher else None)
    context.barrier()
    seed_everything(config.seed)  # the data checks may have drawn from the generator (loading the segmenter)
    model = create(config.model, num_classes=len(data.classes), weights=config.weights, head=config.head)
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    autocast_dtype, needs_scaler = amp_settings(config, device)

    train_loader = _train_loader(config, data, device, context, positions=teacher is not None)
    steps_per_epoch = len(train_loader) if config.max_steps_per_epoch is None else min(len(train_loader), config.max_steps_per_epoch)
    total_steps = steps_per_epoch * config.epochs
    backbone_params = list(model.backbone.parameters())
    head_params = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    optimizer = torch.optim.AdamW(
        [{"params": backbone_params, "lr": config.lr * config.backbone_lr_mult}, {"params": head_params, "lr": config.lr}],
        weight_decay=config.weight_decay,
    )
    frozen_steps = steps_per_epoch * config.freeze_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [lr_lambda(config, total_steps, frozen_steps, backbone=True), lr_lambda(config, total_steps, frozen_steps, backbone=False)]
    )
    scaler = torch.amp.GradScaler("cuda", enabled=needs_scaler)
    criterion = nn.CrossEntropyLoss(weight=_class_weights(config, data, device), label_smoothing=config.label_smoothing)
    if config.grade_loss > 0:
        criterion = GradeAwareLoss(criterion, grade_costs(data.classes), config.grade_loss).to(device)
    if teacher is not None:  # the loader yields each cell's position; the loss looks up label and teacher
        criterion = DistillationLoss(criterion, data.train_labels, teacher, config.distill,
                                     config.distill_temperature).to(device)
    mixer = _mixer(config, len(data.classes))
    averaged = None
    if config.ema > 0:  # validated, saved and shipped in place of the raw weights
        averaged = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema), use_buffers=True)

    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "history": [], "stale_epochs": 0}
    checkpoint_path = run_dir / CHECKPOINT
    if resume and checkpoint_path.is_file():
        saved = load_checkpoint(checkpoint_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        if averaged is not None:
            averaged.load_state_dict(saved["ema"])
        state = {key: saved[key] for key in state}
        if context.is_main:
            print(f"resuming {run_dir} after epoch {state['epoch']} (best macro-F1 {state['best_score']:.3f})")

    train_model = model
    if context.enabled:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if config.patience and state["stale_epochs"] >= config.patience:
            break
        # Shuffling and augmentation draw from seeds fixed per epoch, so a resumed run
        # repeats exactly what the uninterrupted one would have done.
        torch.manual_seed(config.seed * 1000 + epoch)
        train_loader.generator.manual_seed(config.seed * 1000 + epoch)
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        train_loss, images_per_second = _train_epoch(
            train_model, train_loader, optimizer, scheduler, scaler, criterion, device, autocast_dtype,
            steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", show=context.is_main, mixer=mixer,
            averaged=averaged,
        )
        evaluated = model if averaged is None else averaged.module
        val_logits, val_labels = predict_logits(evaluated, data.val_loader(device), device, autocast_dtype)
        val_loss = float(nn.functional.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(val_labels)))
        val_predictions = val_logits.argmax(1)
        score = macro_f1(val_labels, val_predictions, len(data.classes))
        entry = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                 "val_accuracy": float((val_predictions == val_labels).mean()), "val_macro_f1": score,
                 "images_per_second": images_per_second, "lr": optimizer.param_groups[1]["lr"]}
        state["history"].append(entry)
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch, stale_epochs=0)
            if context.is_main:
                _save_weights_atomic(evaluated, run_dir / BEST_WEIGHTS)
        else:
            state["stale_epochs"] += 1
        state["epoch"] = epoch
        if context.is_main:
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                         **({} if averaged is None else {"ema": averaged.state_dict()}), **state}, checkpoint_path)
            write_json_atomic(run_dir / "history.json", state["history"])
            print(f"epoch {epoch}: train loss {train_loss:.3f}, val loss {val_loss:.3f}, "
                  f"val macro-F1 {score:.3f}, {images_per_second:.1f} img/s")
        context.barrier()

    return _finish(config, run_dir, model, data, state, device, autocast_dtype, context)


#: The validation and test cells' probabilities, as the bundle gives them, and their labels.
PREDICTIONS_FILE = "predictions.npz"


def _finish(config, run_dir, model, data: RunData, state, device, autocast_dtype, context) -> TrainResult:
    """Best weights -> calibration chosen on validation -> test metrics, figures and bundle."""
    if (run_dir / BEST_WEIGHTS).is_file():
        model.load_state_dict(load_file(run_dir / BEST_WEIGHTS, device=str(device)))
    val_logits, val_labels = predict_logits(model, data.val_loader(device), device, autocast_dtype)
    evaluated = data.test_loader(device) or data.val_loader(device)
    test_logits, test_labels = predict_logits(model, evaluated, device, autocast_dtype)

    def calibrated(prior):
        """Calibration (on the logits plus ``prior``), the TTA choice, the metrics it gives and the
        validation and test cells' probabilities as the bundle would give them."""
        shifted = val_logits if prior is None else val_logits + prior
        chosen = choose_calibration(shifted, val_labels, seed=config.seed)
        chosen = replace(chosen, prior=None if prior is None else tuple(float(v) for v in prior))
        val_views = view_probabilities(model, data.val_loader(device), device, chosen, autocast_dtype)
        tta = choose_tta(config.tta, chosen.probabilities(val_logits), val_views, val_labels, len(data.classes))
        test_views = view_probabilities(model, evaluated, device, chosen, autocast_dtype) if tta["enabled"] else None
        if not tta["enabled"]:
            val_views = None
        scored = {"test": classification_metrics(test_logits, test_labels, data.classes, chosen, test_views),
                  "val": classification_metrics(val_logits, val_labels, data.classes, chosen, val_views)}
        predicted = (chosen.probabilities(val_logits) if val_views is None else val_views,
                     chosen.probabilities(test_logits) if test_views is None else test_views)
        return chosen, tta, scored, predicted

    def held_out(chosen, tta):
        """The calibration cells' probabilities as the bundle gives them, and their labels."""
        loader = data.calibration_loader(device)
        labels = data.dataset.labels[data.split["calibration"]]  # the loader's order
        if tta["enabled"]:
            return view_probabilities(model, loader, device, chosen, autocast_dtype), labels
        return chosen.probabilities(predict_logits(model, loader, device, autocast_dtype)[0]), labels

    counts = np.bincount(data.train_labels, minlength=len(data.classes))
    prior, balance = choose_prior_adjustment(val_logits, val_labels, counts)
    balance["mode"] = config.balance
    if config.balance != "auto":
        prior = None  # measured for the record only
        balance["chosen"] = f"balance={config.balance}"
    if prior is not None:  # what the raw logits would have given, for paired comparisons
        balance["test_if_raw"] = headline_metrics(calibrated(None)[2]["test"])
    calibration, tta, scored, (val_probabilities, test_probabilities) = calibrated(prior)
    if len(data.split["calibration"]):  # held out of every choice above: the guarantee holds as stated
        trust = trust_records(*held_out(calibration, tta), data.classes,
                              fitted_on=f"{len(data.split['calibration'])} held-out calibration cells")
    else:
        trust = trust_records(val_probabilities, val_labels, data.classes,
                              fitted_on=f"{len(val_labels)} validation cells (which also chose the epoch and calibration)")
    sets = PredictionSets.from_dict(trust["conformal"])
    scored["test"]["conformal"] = set_metrics(sets.predict(test_probabilities), test_labels, data.classes)
    metrics = {
        "evaluated_on": "test" if data.test_loader(device) else "val",
        **scored,
        "tta": tta,
        "balance": balance,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "train_seconds": float(sum(len(data.train_indices) / max(e["images_per_second"], 1e-9) for e in state["history"])),
    }
    if context.enabled:
        metrics["distributed"] = {"world_size": context.world_size, "weights_checksums": _gather_checksums(model)}
    spec = get_spec(config.model)
    bundle_config = {
        "name": f"{config.model}-{data.name}",
        "architecture": config.model,
        "head": config.head,
        "classes": data.classes,
        "label_scheme": config.scheme or "default",
        "input_size": data.image_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "pad_to_square": config.pad_to_square,
        "preprocessing": config.preprocessing,
        "view": config.view,
        "temperature": calibration.temperature,
        "calibration": calibration.to_dict(),
        "tta": tta,
        "cam_layer": spec.cam_layer(data.image_size),
        "embedding_layer": spec.embedding_layer,
        "training": {**config.to_dict(), "image_size": data.image_size, "balance": data.balance},
        "balance": balance,
        "from_the_data": list(data.notes),
        "data_health": data.health,
        "data": data.provenance(),
        "metrics": {"test": headline_metrics(metrics["test"]), "evaluated_on": metrics["evaluated_on"]},
        **trust,
    }
    bundle = Bundle(model=model.eval().cpu(), config=bundle_config)
    if context.is_main:
        bundle.config["explanation_checks"] = _explanation_checks(bundle, data, config.seed)
        bundle.save(run_dir / "bundle")
        shutil.copyfile(run_dir / SPLIT_FILE, run_dir / "bundle" / SPLIT_FILE)  # the bundle is whole without it
        write_json_atomic(run_dir / "metrics.json", metrics)
        with atomic_path(run_dir / PREDICTIONS_FILE) as temporary:  # for fold-by-fold comparisons later
            with open(temporary, "wb") as handle:
                np.savez_compressed(handle, val_probabilities=val_probabilities, val_labels=val_labels,
                                    test_probabilities=test_probabilities, test_labels=test_labels)
        save_figure(plot_confusion_matrix(metrics["test"]["confusion_matrix"], data.classes,
                                          title=f"{bundle_config['name']} ({metrics['evaluated_on']})"),
                    run_dir / "confusion_matrix.png")
        save_figure(plot_learning_curves(state["history"]), run_dir / "learning_curves.png")
        if config.gallery:
            _build_gallery(bundle, data)
            if config.fuse:
                _fuse(bundle, data, run_dir)
        test = metrics["test"]
        print(f"{metrics['evaluated_on']}: accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}, "
              f"ECE {test['ece']:.3f} -> {test['ece_calibrated']:.3f} ({calibration.method}); bundle: {run_dir / 'bundle'}")
    context.barrier()
    return TrainResult(run_dir=run_dir, bundle=bundle, metrics=metrics, history=state["history"])


@torch.no_grad()
def view_probabilities(model, loader, device, calibration, autocast_dtype=None) -> np.ndarray:
    """Calibrated probabilities averaged over the 8 dihedral views of every cell in ``loader``."""
    from xcyto.bundle import dihedral_views

    model.eval()
    chunks = []
    for images, _ in loader:
        views = []
        for view in dihedral_views(images.to(device, non_blocking=True)):
            with _autocast(device, autocast_dtype):
                views.append(calibration.probabilities(model(view).float()))
        chunks.append(torch.stack(views).mean(0).cpu())
    return torch.cat(chunks).numpy()


def choose_tta(mode: str, plain: np.ndarray, views: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Test-time augmentation on or off: ``auto`` turns it on when the mean over the 8 views
    does not lower the validation macro-F1 (it costs 8 forward passes per cell)."""
    scores = {name: {"accuracy": float((p.argmax(1) == labels).mean()), "macro_f1": macro_f1(labels, p.argmax(1), num_classes)}
              for name, p in (("single view", plain), ("8 views", views))}
    if mode == "auto":
        enabled = scores["8 views"]["macro_f1"] >= scores["single view"]["macro_f1"]
        because = "validation macro-F1 " + ("not lower" if enabled else "lower") + " with the 8 views"
    else:
        enabled, because = mode == "on", f"tta={mode}"
    return {"enabled": bool(enabled), "views": "dihedral-8" if enabled else "identity", "validation": scores,
            "chosen_because": because}


def _explanation_checks(bundle: Bundle, data: RunData, seed: int) -> dict:
    """The randomisation check of the CAM methods on a few validation cells, kept in the
    bundle so every map it explains carries its result."""
    from xcyto.evaluation import RECORDED_CELLS, record_randomisation

    cells = data.dataset.subset(data.split.val[:RECORDED_CELLS])
    return record_randomisation(bundle, [sample.image for sample in cells.samples], seed=seed)


def _build_gallery(bundle: Bundle, data: RunData) -> None:
    """Store the training cells' embeddings in the bundle (neighbours, maps, atypicality),
    the atypicality flag calibrated on the validation cells."""
    from xcyto.embedding import build_gallery

    build_gallery(bundle, data.train_dataset, calibration_cells=data.dataset.subset(data.split.val))


def _fuse(bundle: Bundle, data: RunData, run_dir: Path) -> None:
    """Record how much the cells' measurements weigh beside the network (``xcyto fuse``)."""
    from xcyto.fusion import RECORD
    from xcyto.training._fuse import fuse_bundle

    try:
        _, record = fuse_bundle(bundle, data.dataset)
    except XcytoError as error:  # too few cells or classes to fit: the network alone
        warnings.warn(f"not fused with the measurements: {error}", stacklevel=2)
        return
    bundle.config[RECORD] = record
    record_in_config(run_dir / "bundle", {RECORD: record})
    tested = record.get("test")
    print(f"with the measurements: weight {record['weight']:.2f}"
          + (f", test accuracy {tested['network']['accuracy']:.3f} -> {tested['fused']['accuracy']:.3f}" if tested else ""))


def _gather_checksums(model: nn.Module) -> list[float]:
    import torch.distributed as dist

    checksum = torch.tensor([sum(float(p.detach().double().sum()) for p in model.parameters())])
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return [float(value) for value in gathered]


def _save_weights_atomic(model: nn.Module, path: Path) -> None:
    with atomic_path(path) as temporary:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, temporary)


def _class_weights(config: TrainConfig, data: RunData, device) -> torch.Tensor | None:
    if data.balance != "loss":
        return None
    counts = np.bincount(data.train_labels, minlength=len(data.classes)).astype(np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _train_loader(config: TrainConfig, data: RunData, device, context: DistContext,
                  positions: bool = False) -> DataLoader:
    """The training cells, shuffled or sampled; with ``positions`` each yields its position in
    place of its label (for :class:`DistillationLoss`)."""
    cells = Positions(data.train_torch) if positions else data.train_torch
    generator = torch.Generator().manual_seed(config.seed)
    sampler = None
    if context.enabled:
        if data.balance == "sampler":
            raise TrainingError("balance='sampler' is not supported with several processes; use balance='loss'")
        sampler = torch.utils.data.DistributedSampler(cells, num_replicas=context.world_size,
                                                      rank=context.rank, shuffle=True, seed=config.seed)
    elif data.balance == "sampler":
        counts = np.bincount(data.train_labels, minlength=len(data.classes))
        sample_weights = 1.0 / counts[data.train_labels]
        sampler = torch.utils.data.WeightedRandomSampler(sample_weights, len(sample_weights), generator=generator)
    workers = config.num_workers if config.num_workers is not None else default_workers(device)
    return DataLoader(
        cells, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
        generator=generator, num_workers=workers, pin_memory=device.type == "cuda",
        drop_last=len(cells) > config.batch_size * context.world_size,
        persistent_workers=workers > 0,
    )


def _mixer(config: TrainConfig, num_classes: int):
    """MixUp and/or CutMix of a batch (torchvision), or ``None``; with both, each batch picks one."""
    from torchvision.transforms import v2

    chosen = [kind(alpha=alpha, num_classes=num_classes)
              for kind, alpha in ((v2.MixUp, config.mixup), (v2.CutMix, config.cutmix)) if alpha > 0]
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)


def _train_epoch(model, loader, optimizer, scheduler, scaler, criterion, device, autocast_dtype, steps, desc, show,
                 mixer=None, averaged=None):
    model.train()
    total_loss, seen, elapsed = 0.0, 0, 0.0
    channels_last = device.type == "cuda"
    progress = tqdm(total=steps, desc=desc, disable=not show, leave=False, unit="batch")
    batches = iter(loader)
    for _ in range(steps):
        started = time.perf_counter()  # data loading counts: it is part of the loop's cost
        images, labels = next(batches)
        count = len(labels)
        if mixer is not None:  # soft targets: the mixed images' label shares
            images, labels = mixer(images, labels)
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with _autocast(device, autocast_dtype):
            loss = criterion(model(images), labels)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} ({desc}); lower the learning rate (--lr)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if averaged is not None:
            averaged.update_parameters(model.module if hasattr(model, "module") else model)
        loss_value = loss.item()  # synchronises, so the timing below is honest on a GPU
        elapsed += time.perf_counter() - started
        total_loss += loss_value * count
        seen += count
        progress.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{seen / max(elapsed, 1e-9):.1f}")
        progress.update()
    progress.close()
    return total_loss / max(seen, 1), seen / max(elapsed, 1e-9)


def _autocast(device, dtype):
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.no_grad()
def predict_logits(model, loader, device, autocast_dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of every batch in ``loader`` (float32 NumPy arrays)."""
    model.eval()
    all_logits, all_labels = [], []
    for images, labels in loader:
        with _autocast(device, autocast_dtype):
            logits = model(images.to(device, non_blocking=True))
        all_logits.append(logits.float().cpu())
        all_labels.append(labels)
    return torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy()
