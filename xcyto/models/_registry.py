"""One registry of architectures and one factory, ``create``, in the manner of timm."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from xcyto.errors import ModelError
from xcyto.models._classifier import HEADS, CellClassifier

#: CAM maps coarser than this (side, in cells of the feature map) barely change when the
#: model's weights are randomised: they show where the cell is, not what the model learnt
#: (Grad-CAM on a 4 x 4 map failed the randomisation check; on 7 x 7 and finer it passed).
MIN_CAM_SIDE = 7
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A builder takes the weights name (or None) and returns (backbone, feature channels).
Builder = Callable[[str | None], tuple[nn.Module, int]]


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of xcyto needs to know about an architecture.

    ``cam_layers``: the layers CAM methods may weight, deepest first, each with its stride
    (input pixels per feature-map cell); :meth:`cam_layer` picks one for an input size.
    ``embedding_layer``: the pooled vector. Both are dotted module names inside the
    :class:`CellClassifier`, so explanation and embedding code never guesses.
    """

    name: str
    builder: Builder
    weights: tuple[str, ...] = ()
    default_weights: str | None = None
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    cam_layers: tuple[tuple[str, int], ...] = (("backbone", 32),)
    embedding_layer: str = "pool"
    description: str = ""
    extra: dict = field(default_factory=dict)

    def cam_layer(self, input_size: int | None = None) -> str:
        """The deepest CAM layer whose map is at least ``MIN_CAM_SIDE`` cells wide at
        ``input_size`` (default: the architecture's), else the finest one offered."""
        size = input_size or self.input_size
        for name, stride in self.cam_layers:
            if -(-size // stride) >= MIN_CAM_SIDE:
                return name
        return self.cam_layers[-1][0]


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, **spec_fields) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` under ``name`` with the given :class:`ModelSpec` fields."""

    def decorate(builder: Builder) -> Builder:
        _REGISTRY[name] = ModelSpec(name=name, builder=builder, **spec_fields)
        return builder

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(
            f"unknown architecture {name!r}; choose one of: {', '.join(list_models())}"
        ) from None


def create(name: str, num_classes: int, weights: str | None = "default", head: str = "linear") -> CellClassifier:
    """Build architecture ``name`` with a fresh ``num_classes`` head.

    ``weights``: ``"default"`` (the architecture's default: ImageNet for
    ``efficientnet_lite0``, which ships offline; none for the rest), ``None`` (random
    initialisation) or a name from ``get_spec(name).weights`` such as ``"imagenet"``.
    """
    spec = get_spec(name)
    if weights == "default":
        weights = spec.default_weights
    if weights is not None and weights not in spec.weights:
        offered = ", ".join(spec.weights) or "none"
        raise ModelError(f"{name} has no weights {weights!r} (offered: {offered}; or weights=None)")
    if head not in HEADS:
        raise ModelError(f"unknown head {head!r}; choose one of: {', '.join(HEADS)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    backbone, num_features = spec.builder(weights)
    return CellClassifier(backbone, num_features, num_classes, head=head)


def get_layer(model: nn.Module, dotted_name: str) -> nn.Module:
    """The sub-module at ``dotted_name`` (e.g. ``"backbone.layer4"``), with a clear error."""
    try:
        return model.get_submodule(dotted_name)
    except AttributeError:
        raise ModelError(f"model has no layer {dotted_name!r}") from None
