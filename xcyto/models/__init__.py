"""Model registry: one factory, one wrapper, every architecture answering the same questions.

>>> from xcyto import models
>>> model = models.create("resnet18", num_classes=5)
>>> models.get_spec("resnet18").cam_layer(224)
'backbone'
"""
from xcyto.models._classifier import CellClassifier, ConcatPool, evaluating
from xcyto.models._fold import pass_model
from xcyto.models._registry import (
    ModelSpec,
    create,
    get_layer,
    get_spec,
    list_models,
    register_model,
)
from xcyto.models import _architectures as _architectures  # noqa: F401  (fills the registry)

DEFAULT_MODEL = "efficientnet_lite0"

__all__ = [
    "CellClassifier",
    "ConcatPool",
    "DEFAULT_MODEL",
    "ModelSpec",
    "create",
    "evaluating",
    "get_layer",
    "get_spec",
    "list_models",
    "pass_model",
    "register_model",
]
