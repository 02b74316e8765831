"""Bundles: save/load round trip and refusal of corrupt or inconsistent ones."""
import json

import numpy as np
import pytest
import torch

import xcyto
from xcyto import models
from xcyto.bundle import Bundle
from xcyto.errors import BundleError

CLASSES = ["a", "b", "c"]


def make_bundle(num_classes=3):
    torch.manual_seed(0)
    model = models.create("small_cnn", num_classes, weights=None).eval()
    spec = models.get_spec("small_cnn")
    config = {"architecture": "small_cnn", "classes": CLASSES[:num_classes], "input_size": 32,
              "mean": list(spec.mean), "std": list(spec.std), "temperature": 1.5}
    return Bundle(model=model, config=config)


def test_round_trip_keeps_weights_config_and_predictions(tmp_path):
    bundle = make_bundle()
    bundle.save(tmp_path / "b")
    loaded = xcyto.load(tmp_path / "b")
    image = (np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)
    batch = bundle.preprocess(image)
    assert batch.shape == (1, 3, 32, 32)
    assert torch.allclose(bundle.predict_logits(batch), loaded.predict_logits(loaded.preprocess(image)))
    assert loaded.classes == CLASSES and loaded.temperature == 1.5
    assert loaded.config["format"] == "xcyto-bundle" and loaded.config["xcyto_version"] == xcyto.__version__
    assert loaded.sha256 == loaded.config["weights_sha256"]
    probabilities = loaded.probabilities(loaded.predict_logits(batch))
    assert torch.allclose(probabilities.sum(-1), torch.ones(1))


def test_saving_again_replaces_the_bundle_and_keeps_its_gallery(tmp_path):
    bundle = make_bundle()
    bundle.save(tmp_path / "b")
    (tmp_path / "b" / "gallery").mkdir()
    (tmp_path / "b" / "gallery" / "marker.txt").write_text("kept")
    bundle.config["temperature"] = 2.0
    bundle.save(tmp_path / "b")
    assert xcyto.load(tmp_path / "b").temperature == 2.0
    assert (tmp_path / "b" / "gallery" / "marker.txt").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temporary folders left behind


def test_refuses_missing_and_non_bundles(tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        xcyto.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="not a bundle"):
        xcyto.load(tmp_path / "empty")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "bundle.json").write_text("{not json"), "corrupt JSON"),
        (lambda p: _edit(p, architecture="resnet9000"), "unknown architecture"),
        (lambda p: _edit(p, classes=["a", "b", "c", "d"]), "classifier has 3 outputs but bundle.json lists 4"),
        (lambda p: _edit(p, format="something-else"), "not an xcyto bundle"),
        (lambda p: _edit(p, input_size=None, drop="input_size"), "missing input_size"),
        (lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 64), "checksum does not match"),
    ],
)
def test_refuses_corrupt_or_inconsistent_bundles(tmp_path, damage, message):
    make_bundle().save(tmp_path / "b")
    damage(tmp_path / "b")
    with pytest.raises(BundleError, match=message):
        xcyto.load(tmp_path / "b")


def test_refuses_unreadable_weights_even_without_a_checksum(tmp_path):
    make_bundle().save(tmp_path / "b")
    _edit(tmp_path / "b", weights_sha256=None, drop="weights_sha256")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(BundleError, match="unreadable weights"):
        xcyto.load(tmp_path / "b")


def _edit(path, drop=None, **changes):
    config = json.loads((path / "bundle.json").read_text())
    config.update(changes)
    if drop:
        config.pop(drop)
    (path / "bundle.json").write_text(json.dumps(config))


def test_a_save_killed_midway_leaves_the_old_bundle_whole(tmp_path):
    """A second process saves new weights over the bundle and is killed (SIGKILL, no cleanup)
    halfway through writing them: the bundle on disk is still the old one, complete."""
    import subprocess
    import sys
    from pathlib import Path

    bundle = make_bundle()
    bundle.save(tmp_path / "b")
    before = xcyto.load(tmp_path / "b")
    script = f"""
import os, signal, torch, xcyto
import xcyto.bundle as bundle_module
bundle = xcyto.load({str(tmp_path / "b")!r})
with torch.no_grad():
    for parameter in bundle.model.parameters():
        parameter.add_(1.0)

def half_then_die(tensors, path, *args, **kwargs):
    with open(path, "wb") as handle:
        handle.write(b"half a file")
        handle.flush()
        os.fsync(handle.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

bundle_module.save_file = half_then_die
bundle.save({str(tmp_path / "b")!r})
"""
    completed = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == -9, completed.stderr  # killed, as planned
    after = xcyto.load(tmp_path / "b")
    assert after.sha256 == before.sha256
    for name, tensor in before.model.state_dict().items():
        assert torch.equal(tensor, after.model.state_dict()[name]), name


# A child process replaces bundle A by bundle B and is killed (SIGKILL) right after one step of
# the swap: 1 staging -> .b.swap-new, 2 b -> .b.swap-old, 3 .b.swap-new -> b, 4 while removing
# the old. Loading then finds A or B whole, finishing the swap where it must (with a warning)
# and clearing what the killed process left beside it.
SWAP_KILL = """
import os, shutil, signal, sys
from pathlib import Path
from xcyto.atomic import replace_dir

step, source, target = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
staging = target.with_name(".b.staging")
shutil.copytree(source, staging)
real_replace, real_rmtree = os.replace, shutil.rmtree

def replace(src, dst):
    real_replace(src, dst)
    done = {1: str(dst).endswith(".swap-new"), 2: str(dst).endswith(".swap-old"),
            3: str(src).endswith(".swap-new")}
    if done.get(step):
        os.kill(os.getpid(), signal.SIGKILL)

def rmtree(path, *args, **kwargs):
    if step == 4 and str(path).endswith(".swap-old"):
        next(Path(path).iterdir()).unlink()  # part of the old bundle removed, then killed
        os.kill(os.getpid(), signal.SIGKILL)
    real_rmtree(path, *args, **kwargs)

os.replace, shutil.rmtree = replace, rmtree
replace_dir(staging, target)
"""


@pytest.mark.parametrize("step, expect", [(1, "old"), (2, "new"), (3, "new"), (4, "new")])
def test_a_kill_at_any_step_of_the_swap_leaves_a_loadable_bundle(tmp_path, step, expect):
    import subprocess
    import sys
    import warnings
    from pathlib import Path

    from xcyto.atomic import RecoveredWarning

    old = make_bundle()
    old.save(tmp_path / "b")
    new = make_bundle()
    with torch.no_grad():
        next(new.model.parameters()).add_(1.0)
    new.save(tmp_path / "new")
    shas = {"old": xcyto.load(tmp_path / "b").sha256, "new": xcyto.load(tmp_path / "new").sha256}
    assert shas["old"] != shas["new"]
    completed = subprocess.run([sys.executable, "-c", SWAP_KILL, str(step), str(tmp_path / "new"), str(tmp_path / "b")],
                               cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60)
    assert completed.returncode == -9, completed.stderr  # killed where planned
    assert (tmp_path / "b").is_dir() == (step != 2)  # only step 2 leaves no folder at the path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = xcyto.load(tmp_path / "b")
    assert loaded.sha256 == shas[expect]
    recovered = [w for w in caught if issubclass(w.category, RecoveredWarning)]
    assert len(recovered) == (step == 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "new"]  # nothing left beside it


def test_tta_gives_one_answer_for_the_8_views_and_survives_saving(tmp_path):
    from xcyto.bundle import dihedral_views

    bundle = make_bundle()
    bundle.config["tta"] = {"enabled": True, "views": "dihedral-8"}
    batch = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    averaged = bundle.predict_probabilities(batch)
    assert torch.allclose(averaged.sum(1), torch.ones(3))
    for view in dihedral_views(batch):  # every rotation/mirror of the cell: the same prediction
        torch.testing.assert_close(bundle.predict_probabilities(view), averaged, atol=1e-6, rtol=1e-5)
    single = bundle.predict_probabilities(batch, tta=False)
    torch.testing.assert_close(single, bundle.probabilities(bundle.predict_logits(batch)))
    assert not torch.allclose(single, averaged)  # an untrained CNN is not rotation-invariant by itself
    bundle.save(tmp_path / "b")
    loaded = xcyto.load(tmp_path / "b")
    assert loaded.tta
    torch.testing.assert_close(loaded.predict_probabilities(batch), averaged)
    assert {tuple(view.shape) for view in dihedral_views(batch)} == {(3, 3, 32, 32)}
    assert len({view.flatten().tolist().__str__() for view in dihedral_views(batch[:1])}) == 8
