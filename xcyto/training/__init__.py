"""Training: ``xcyto.train`` and its pieces (config, loop, metrics, calibration)."""
from xcyto.training.config import TrainConfig

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str):
    # The loop pulls in torch; the CLI's argument parser only needs the config.
    if name in ("train", "TrainResult"):
        from xcyto.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'xcyto.training' has no attribute {name!r}")
