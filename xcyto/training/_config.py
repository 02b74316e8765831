"""Training settings: one dataclass, saved next to every run so it can be repeated."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from xcyto.errors import TrainingError

SCHEDULES = ("cosine", "onecycle")
ROTATIONS = ("any_angle", "dihedral", "none")
TTA_MODES = ("auto", "on", "off")
BALANCE = ("auto", "none", "loss", "sampler")
AMP_MODES = ("auto", "bf16", "fp16", "off")
VIEWS = ("cell", "nucleus")  # xcyto.data's views of a crop


@dataclass
class TrainConfig:
    """Everything that decides a training run. Defaults suit fine-tuning on a CPU."""

    data: str = "synthetic"
    out: str = "runs/xcyto"
    model: str = "efficientnet_lite0"
    weights: str | None = "default"
    head: str = "linear"
    scheme: str | None = None
    image_size: int | None = None  # None: from the training cells' median size (see training.data)
    pad_to_square: bool = True
    preprocessing: str = "none"
    # What of each crop the network reads: the whole crop, or the square around its segmented
    # nucleus (three nucleus diameters a side), at the same input size (see xcyto.data._views).
    view: str = "cell"
    epochs: int = 12  # the recipe search's length; 24 did worse on validation, 15 no better under CV
    batch_size: int = 16  # the recipe search (docs/recipe_search.md) ran at 16
    lr: float = 1e-3
    backbone_lr_mult: float = 1.0  # stained cells are far from ImageNet: the backbone learns at full rate
    freeze_epochs: int = 0
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.1
    # Weight of the expected grade distance added to the loss (grade-aware training: a far miss
    # costs more than a near one; see training.GradeAwareLoss); 0: plain cross-entropy.
    grade_loss: float = 0.0
    # Distillation (see training._distill): bundles or run folders whose mean probability of each
    # training cell the network also learns from (several joined by os.pathsep, ':' on POSIX);
    # the share of the loss that follows them, and the temperature that softens them.
    teacher: str | None = None
    distill: float = 0.5
    distill_temperature: float = 2.0
    balance: str = "auto"  # chosen on the validation cells (see training.balance)
    rotation: str = "any_angle"  # training augmentation: any angle, the 8 dihedral views, or none
    stain_jitter: float = 0.05  # sigma of the HED stain rescaling
    mixup: float = 0.0  # Beta(alpha, alpha) of MixUp; 0: off
    cutmix: float = 0.0  # Beta(alpha, alpha) of CutMix; 0: off (with both, each batch picks one)
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0: off
    tta: str = "auto"  # test-time augmentation: on when it does not hurt validation macro-F1 (auto)
    # Early stopping after this many epochs without a better validation macro-F1; 0: the whole
    # schedule runs and the best validation epoch is kept (on ~100 validation cells the score
    # moves by +-0.05 between epochs, so a patience stops a cosine schedule before it decays).
    patience: int = 0
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # Share of the training cells held out for the conformal sets and the screen alone; 0: they
    # are fitted on the validation cells, which also chose the epoch and the calibration, so
    # the stated coverage can be a little optimistic on new cells.
    calibration_fraction: float = 0.0
    split_manifest: str | None = None  # reuse an existing split instead of drawing one
    synthetic_n: int = 1000
    synthetic_size: int = 128
    device: str = "auto"
    amp: str = "auto"
    num_workers: int | None = None  # None: 0 on small CPUs, more on GPUs
    max_steps_per_epoch: int | None = None  # for smoke runs
    gallery: bool = True
    # Read the network with the cells' measured morphology (xcyto.fusion): the weight of the
    # measured model chosen on the validation cells, 0 where it does not help. Needs the gallery.
    fuse: bool = True
    # Data health (xcyto.data.health): "auto" checks every crop before training (a saved check
    # in the run folder is reused), "off" skips it, or a folder written by `xcyto data check`.
    data_check: str = "auto"
    # Crops left out of training, validation and test: checks (comma-separated), "none", or a
    # CSV with a `path` column. No nucleus by default: such a crop says nothing of its label.
    exclude: str = "no_nucleus"

    def validate(self) -> "TrainConfig":
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.lr <= 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {SCHEDULES} (got {self.schedule!r})")
        if self.balance not in BALANCE:
            problems.append(f"balance must be one of {BALANCE} (got {self.balance!r})")
        if self.rotation not in ROTATIONS:
            problems.append(f"rotation must be one of {ROTATIONS} (got {self.rotation!r})")
        if self.view not in VIEWS:
            problems.append(f"view must be one of {VIEWS} (got {self.view!r})")
        if self.tta not in TTA_MODES:
            problems.append(f"tta must be one of {TTA_MODES} (got {self.tta!r})")
        if min(self.mixup, self.cutmix, self.stain_jitter, self.grade_loss) < 0:
            problems.append("mixup, cutmix, stain_jitter and grade_loss must be >= 0")
        if not 0 <= self.distill <= 1 or self.distill_temperature <= 0:
            problems.append(f"distill must be in [0, 1] and distill_temperature > 0 "
                            f"(got {self.distill}, {self.distill_temperature})")
        if self.teacher and (self.mixup > 0 or self.cutmix > 0):
            problems.append("distillation (teacher) does not combine with MixUp or CutMix: the teacher reads "
                            "whole cells, not mixed ones")
        if not 0 <= self.ema < 1:
            problems.append(f"ema must be in [0, 1) (got {self.ema})")
        if self.amp not in AMP_MODES:
            problems.append(f"amp must be one of {AMP_MODES} (got {self.amp!r})")
        if not 0 < self.val_fraction < 1 or not 0 <= self.test_fraction < 1:
            problems.append("val_fraction must be in (0, 1) and test_fraction in [0, 1)")
        if not 0 <= self.calibration_fraction < 1:
            problems.append(f"calibration_fraction must be in [0, 1) (got {self.calibration_fraction})")
        if self.val_fraction + self.test_fraction >= 1:
            problems.append("val_fraction + test_fraction must leave cells to train on")
        if self.exclude not in ("none", "") and not str(self.exclude).lower().endswith(".csv"):
            from xcyto.data.health import CHECKS

            unknown = [name for name in str(self.exclude).split(",") if name.strip() and name.strip() not in CHECKS]
            if unknown:
                problems.append(f"exclude: unknown checks {', '.join(unknown)} (choose from {', '.join(CHECKS)}, "
                                "'none', or a CSV of paths)")
            if self.data_check == "off":
                problems.append("exclude needs the data checks: set data_check to 'auto' or a saved check, "
                                "or exclude 'none'")
        from xcyto.errors import XcytoError
        from xcyto.models import get_spec

        try:  # before any data is read: an unknown architecture should not wait for the data checks
            get_spec(self.model)
        except XcytoError as error:
            problems.append(str(error))
        if self.freeze_epochs < 0 or self.patience < 0:
            problems.append("freeze_epochs and patience must be >= 0")
        if problems:
            raise TrainingError("; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainingError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**values)
