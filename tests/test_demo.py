"""The Gradio demo: its views, its API through ``gradio_client``, bad uploads, the page in Chromium.

One server per module (the session's tiny bundle, PCA map, a free loopback port, in a
thread); every request goes through it as a user's would.
"""
from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require_chromium
from xcyto.data._schemes import ABNORMAL, NORMAL
from xcyto.demo._cell_info import CELL_INFO, DISCLAIMER, RISK_LEVELS, cell_info

REPO = Path(__file__).resolve().parents[1]
FAST = ["gradcam"]


# -- what the page says about cell types (no model needed) ------------------------------------------
def test_every_known_class_is_described_with_a_risk_consistent_with_the_label_scheme():
    from xcyto.data._herlev import BINARY_CLASSES
    from xcyto.data._sipakmed import SIPAKMED_CLASSES

    herlev = ["normal_superficiel", "normal_intermediate", "normal_columnar", "light_dysplastic",
              "moderate_dysplastic", "severe_dysplastic", "carcinoma_in_situ"]
    for name in [*SIPAKMED_CLASSES, *herlev, *BINARY_CLASSES]:
        info = cell_info(name)
        assert info is not None, name
        assert info.risk in RISK_LEVELS and info.description and info.significance
        if name in ABNORMAL:
            assert info.risk in ("low-grade", "high-grade"), name
        if name in NORMAL:
            assert info.risk in ("normal", "benign"), name
    bethesda = ["NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"]  # other collections' scheme
    for name in bethesda:
        assert cell_info(name.lower().replace("-", "_")) is CELL_INFO[name], name
    assert [cell_info(name).risk for name in bethesda] == ["normal", "low-grade", "low-grade", "high-grade",
                                                           "high-grade", "high-grade"]
    from xcyto.data import abnormal_flags

    for name in ABNORMAL | NORMAL:  # every name the 2-class metrics know is described, consistently
        assert cell_info(name) is not None, name
        assert (cell_info(name).risk in ("low-grade", "high-grade")) == (name in ABNORMAL), name
    assert abnormal_flags(["nilm", "asc_us", "Lsil", "asc-h", "HSIL", "scc"]).tolist() == [False] + [True] * 5
    assert abnormal_flags(["NILM", "macrophage"]) is None  # an unknown class: no 2-class metrics, not a guess
    assert cell_info("superficial intermediate") is CELL_INFO["Superficial-Intermediate"]
    assert cell_info("Carcinoma-in-situ") is CELL_INFO["carcinoma_in_situ"]
    assert cell_info("macrophage") is None
    assert "not" in DISCLAIMER and "diagnosis" in DISCLAIMER


def test_help_answers_without_loading_torch_or_gradio():
    result = subprocess.run([sys.executable, str(REPO / "demo" / "app.py"), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for option in ("--bundle", "--host", "--port", "--share", "XCYTO_BUNDLE"):
        assert option in result.stdout
    probe = ("import runpy, sys\nsys.argv = ['demo/app.py', '--help']\ntry:\n"
             f"    runpy.run_path({str(REPO / 'demo' / 'app.py')!r}, run_name='__main__')\n"
             "except SystemExit:\n    pass\nprint('loaded:', sorted({'torch', 'gradio'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().endswith("loaded: []"), result.stdout + result.stderr


def test_a_missing_bundle_is_a_clear_exit_not_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "demo" / "app.py"), "--bundle", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "no bundle folder" in result.stderr and "Traceback" not in result.stderr


def test_the_verdict_warns_when_the_cell_is_unlike_the_training_cells():
    from types import SimpleNamespace

    from xcyto.demo._views import verdict_html

    cell = dict(predicted="Parabasal", target="Parabasal", probabilities={"Parabasal": 0.8, "Metaplastic": 0.2},
                confidence=0.8, settings={"tta": None}, data_issues=[], no_nucleus=False, prediction_set=[],
                plausible="", screening=None, fused=None)
    usual = verdict_html(SimpleNamespace(**cell, atypicality=40.0, atypical=False))
    assert "Parabasal" in usual and "0.80" in usual and "xc-warning" not in usual and "40/100" in usual
    odd = verdict_html(SimpleNamespace(**cell, atypicality=100.0, atypical=True))
    assert "xc-warning" in odd and "Unlike the training cells" in odd and "any of them" in odd
    other = verdict_html(SimpleNamespace(**{**cell, "target": "Metaplastic"}, atypicality=None, atypical=None))
    assert "<b>Metaplastic</b>" in other and "no gallery" in other
    assert "8 rotations" not in usual
    averaged = verdict_html(SimpleNamespace(**{**cell, "settings": {"tta": "8 views"}}, atypicality=40.0, atypical=False))
    assert "mean over the cell's 8 rotations and mirror images" in averaged
    assert "lausible" not in usual and "Screening" not in usual  # a bundle without sets or a screen
    doubtful = verdict_html(SimpleNamespace(**{**cell, "prediction_set": ["Parabasal", "Metaplastic"],
                                               "plausible": "plausible at 90%: Parabasal or Metaplastic",
                                               "screening": "clear", "settings": {"screen": "clear when ..."}},
                                            atypicality=40.0, atypical=False))
    assert "Plausible at 90%: Parabasal or Metaplastic" in doubtful and "cannot rule out 1 other class" in doubtful
    assert "clear: below the screening threshold" in doubtful
    from xcyto.fusion import FusedReading

    reading = FusedReading(probabilities={"Parabasal": 0.3, "Metaplastic": 0.7}, predicted="Metaplastic", weight=0.25,
                           contributions=[("nc_ratio", 0.62, 0.37, 1.3)], completeness=0.9, target="Metaplastic")
    fused = verdict_html(SimpleNamespace(**{**cell, "fused": reading}, atypicality=40.0, atypical=False))
    assert "With its measurements: <b>Metaplastic</b> 0.70" in fused and "+1.30 toward Metaplastic" in fused
    assert "With its measurements" not in usual


# -- the server ------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def temporary_folder(tmp_path_factory) -> Path:
    """The system's temporary folder, for this module: a folder of the session's pytest folder.

    Gradio keeps every upload in ``<tmp>/gradio`` and its client leaves an empty
    ``<tmp>/<40 hex digits>`` folder behind each download: without this, each run of these
    tests left a few dozen of them in /tmp."""
    import tempfile

    tmp_path_factory.getbasetemp()  # made first, where it belongs (it holds the session's fixtures)
    folder = tmp_path_factory.mktemp("demo-tmp")
    saved = tempfile.tempdir
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
        tempfile.tempdir = str(folder)
        try:
            yield folder
        finally:
            tempfile.tempdir = saved


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> list[Path]:
    """Two held-out synthetic cells, named like the shipped examples (``<Class>-<i>.png``)."""
    from xcyto.data import generate_cell

    folder = tmp_path_factory.mktemp("examples")
    paths = []
    for index, name in enumerate(["Koilocytotic", "Parabasal"]):
        path = folder / f"{name}-1.png"
        Image.fromarray(generate_cell(name, 1000 + index, size=64).image).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def demo(tiny_bundle, examples):
    from xcyto.demo import Demo

    app = Demo(tiny_bundle, examples=examples, map_method="pca", fit_map_in_background=False)
    yield app
    app.close()


@pytest.fixture(scope="module")
def server(demo):
    """The app on a free loopback port, in a thread; small upload limit to test it."""
    from xcyto.demo import launch
    from tools.demo_browser import free_port

    port = free_port()
    blocks = launch(demo, port=port, quiet=True, max_file_size="300kb")
    yield f"http://127.0.0.1:{port}/"
    blocks.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False, download_files=False)


@pytest.fixture(scope="module")
def explained(server, examples, temporary_folder):
    """One full ``/explain`` call (Grad-CAM and IG) through a downloading client, then ``/figure``."""
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False, download_files=temporary_folder / "downloads")
    result = client.predict(handle_file(str(examples[0])), ["gradcam", "integrated_gradients"], "predicted class",
                            0.75, api_name="/explain")
    figure = client.predict(api_name="/figure")
    reblended = client.predict(0.0, api_name="/opacity")
    return result, figure, reblended


def _image(payload) -> str:
    """A file path or URL from a gallery item or image output (downloaded or not)."""
    image = payload["image"] if isinstance(payload, dict) and "image" in payload else payload
    if isinstance(image, dict):
        return image.get("path") or image.get("url")
    return getattr(image, "path", None) or str(image)


def test_explain_returns_prediction_heatmaps_neighbours_map_and_downloads(explained, tiny_bundle):
    result, figure, _ = explained
    verdict, label, heatmaps, neighbours, nearest, embedding_map, info, json_path, details = result
    saved = json.loads(Path(json_path).read_text())
    assert saved["predicted"] == details["predicted"] == label["label"]
    assert saved["source"] == "Koilocytotic-1.png"  # the upload's name, not a server path
    assert saved["settings"]["bundle_sha256"] == tiny_bundle.sha256
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(confidences) == set(tiny_bundle.classes)
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-3)
    assert max(confidences, key=confidences.get) == label["label"]
    assert label["label"] in verdict and "calibrated probability" in verdict

    assert heatmaps[0]["caption"] == "cell (model input)"
    assert heatmaps[1]["caption"] == "segmented: nucleus red, cell green"
    # every map shows its check: Grad-CAM the bundle's randomisation result, IG its completeness
    rho = tiny_bundle.config["explanation_checks"]["randomisation"]["gradcam"]["rho"]
    assert heatmaps[2]["caption"].startswith("Grad-CAM") and f"(rho {rho:.2f})" in heatmaps[2]["caption"]
    assert heatmaps[3]["caption"].startswith("Integrated Gradients")
    assert re.search(r"(✓ adds up|⚠ off by) .*\d+ steps", heatmaps[3]["caption"])
    pixels = [np.asarray(Image.open(_image(item))) for item in heatmaps]
    size = tiny_bundle.input_size
    assert all(p.shape == (size, size, 3) for index, p in enumerate(pixels) if index != 1)
    assert pixels[1].shape == (64, 64, 3)  # the outline is drawn on the image as uploaded
    assert not np.array_equal(pixels[0], pixels[2])  # the overlay is drawn over the cell

    assert len(neighbours) == 8 and len(details["neighbours"]) == 8
    first = details["neighbours"][0]
    assert neighbours[0]["caption"] == f"{first['class_name']} {first['similarity']:.2f}"
    similarities = [n["similarity"] for n in details["neighbours"]]
    assert similarities == sorted(similarities, reverse=True)
    assert {item["caption"].rsplit(" ", 1)[0] for item in nearest} == set(tiny_bundle.classes) - {label["label"]}
    assert np.asarray(Image.open(_image(embedding_map))).ndim == 3
    assert info.startswith("### The cell, measured") and "Research use only" in info
    assert "| N/C ratio |" in info and f"percentile among {label['label']} training cells" in info
    row = next(line for line in info.splitlines() if line.startswith("| N/C ratio |"))
    assert float(row.split("|")[3]) == pytest.approx(details["morphology"]["percentiles"]["nc_ratio"][label["label"]],
                                                     abs=0.5)
    with Image.open(figure) as picture:
        assert picture.format == "PNG"


def test_opacity_reblends_the_kept_maps_without_recomputing(explained):
    result, _, reblended = explained
    heatmaps = result[2]
    cell = np.asarray(Image.open(_image(heatmaps[0])))
    transparent = [np.asarray(Image.open(_image(item))) for item in reblended]
    assert len(transparent) == len(heatmaps)
    for overlay in transparent[2:]:  # opacity 0: the cell alone (after the cell and its outline)
        np.testing.assert_array_equal(overlay, cell)


def test_explaining_another_class_says_so(client, examples, tiny_bundle):
    from gradio_client import handle_file

    target = tiny_bundle.classes[0]
    verdict, label, *_, details = client.predict(handle_file(str(examples[1])), FAST, target, 0.75,
                                                 api_name="/explain")
    assert details["target"] == target
    # the verdict names the explained class exactly when it is not the prediction
    assert (f"explain the class <b>{target}</b>" in verdict) == (details["predicted"] != target)
    other = next(name for name in tiny_bundle.classes if name != details["predicted"])
    verdict, *_, details = client.predict(handle_file(str(examples[1])), FAST, other, 0.75, api_name="/explain")
    assert details["target"] == other and f"explain the class <b>{other}</b>" in verdict


def _huge_png_header(path: Path, width: int = 9_000, height: int = 6_000) -> Path:
    """A PNG whose header claims 54 megapixels (and that holds no pixels at all)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_bad_uploads_get_a_clear_error_and_the_server_keeps_serving(server, client, examples, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (4, 4), "white").save(tiny)
    huge = _huge_png_header(tmp_path / "huge.png")
    expected = {text: "notes.png: not a readable image", tiny: "tiny.png: 4 x 4 pixels is too small",
                huge: "huge.png: 9000 x 6000 pixels is above the limit"}
    for path, message in expected.items():
        with pytest.raises(AppError, match=message) as caught:
            client.predict(handle_file(str(path)), FAST, "predicted class", 0.75, api_name="/explain")
        assert str(tmp_path) not in str(caught.value)  # the user's file name, not the server's path
    with pytest.raises(AppError, match="Choose at least one explanation method"):
        client.predict(handle_file(str(examples[0])), [], "predicted class", 0.75, api_name="/explain")
    with pytest.raises(AppError, match="unknown class"):
        client.predict(handle_file(str(examples[0])), FAST, "Macrophage", 0.75, api_name="/explain")
    noise = tmp_path / "noise.png"  # over the test server's 300 kB upload limit
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(noise)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client checks first
        client.predict(handle_file(str(noise)), FAST, "predicted class", 0.75, api_name="/explain")
    upload = httpx.post(f"{server}gradio_api/upload", files={"files": noise.open("rb")}, timeout=30)
    assert upload.status_code == 413  # and the server refuses it by itself

    # and the next good request is answered
    verdict, label, *_ = client.predict(handle_file(str(examples[0])), FAST, "predicted class", 0.75,
                                        api_name="/explain")
    assert label["label"] in verdict


def test_rgba_and_grayscale_uploads_are_converted_and_explained(client, examples, tmp_path):
    from gradio_client import handle_file

    rgb = Image.open(examples[0]).convert("RGB")
    rgba = rgb.copy()
    rgba.putalpha(200)
    rgba.save(tmp_path / "cell-rgba.png")
    rgb.convert("L").save(tmp_path / "cell-gray.png")
    for name in ("cell-rgba.png", "cell-gray.png"):
        *_, details = client.predict(handle_file(str(tmp_path / name)), FAST, "predicted class", 0.75,
                                     api_name="/explain")
        assert details["source"] == name and details["predicted"]


def test_batch_classifies_good_files_and_lists_the_bad_one(client, examples, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (4, 4), "white").save(tiny)
    table, frame = client.predict([handle_file(str(p)) for p in (*examples, bad, tiny)], api_name="/batch")
    rows = frame["data"]
    assert [row[0] for row in rows] == [p.name for p in examples] + ["broken.png", "tiny.png"]
    headers = frame["headers"]
    assert headers[:3] == ["file", "predicted", "confidence"] and headers[-1] == "error"
    for row in rows[:2]:
        assert row[1] and 0 < row[2] <= 1 and row[-1] == ""
    assert rows[2][1] == "" and "broken.png" in rows[2][-1]
    assert rows[3][1] == "" and "too small" in rows[3][-1]
    assert table.count("<tr>") == 5 and "data:image/png;base64," in table


def test_the_map_is_rendered_once_and_a_cell_is_placed_on_it(demo, examples):
    from xcyto.explain import explain

    view = demo.maps.current()
    assert view.method == "pca"
    explanation = explain(str(examples[0]), bundle=demo.bundle, methods=FAST)
    placed = view.place(explanation.embedding)
    assert placed.shape == view.background.shape
    changed = np.argwhere((placed != view.background).any(-1))
    assert 0 < len(changed) < 2000  # one star, nothing else redrawn
    position = view.projection.transform(explanation.embedding[None])
    x, y = view.pixels(position)[0]
    assert np.abs(changed.mean(0) - [y, x]).max() < 4  # the star sits where the map puts the cell


def test_default_bundle_resolves_and_loads():
    """The repository ships the demo bundle and its example cells: the demo explains one."""
    from xcyto.demo import Demo
    from xcyto.demo import default_examples, example_files
    from xcyto.demo._views import is_synthetic
    from xcyto.explain import default_bundle_path

    path = default_bundle_path()
    assert (path / "bundle.json").is_file(), f"no shipped demo bundle at {path} (build it with 'make artifacts')"
    examples = example_files(default_examples())
    assert examples, f"no example cells shipped with the demo bundle ({default_examples()})"
    demo = Demo(path, map_method="pca", fit_map_in_background=False)
    try:
        assert demo.bundle.path.resolve() == path.resolve() and demo.bundle.classes
        assert is_synthetic(demo.bundle) and demo.gallery is not None
        *_, details = demo.explain_cell(str(examples[0]), FAST)[:9]
        assert details["predicted"] in demo.bundle.classes
    finally:
        demo.close()


# -- the page in a browser ---------------------------------------------------------------------------
def test_page_in_chromium_explains_an_example_without_console_errors(server, tmp_path):
    import playwright.sync_api  # noqa: F401  (the dev extra: a missing one is an error, not a skip)

    from tools.demo_browser import explain_example

    require_chromium()
    report = explain_example(server, screenshot=tmp_path / "demo.png", example=0)
    assert report.console_errors == [] and report.page_errors == []
    assert report.external_requests == []  # works offline: no fonts or scripts from the internet
    assert report.predicted and report.heatmaps == 4 and report.neighbours == 8  # cell, outline, 2 maps
    assert "N/C ratio" in report.measured and f"percentile among {report.predicted} training cells" in report.measured
    assert (tmp_path / "demo.png").stat().st_size > 10_000


# -- several models ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_models(demo, tmp_path_factory):
    """The tiny synthetic model and a second one with other classes (an untrained normal/abnormal
    CNN), each with its own examples, served on one page with a Model menu."""
    from xcyto import models
    from xcyto.bundle import Bundle
    from xcyto.data import generate_cell
    from xcyto.demo import Demo, launch
    from tools.demo_browser import free_port

    folder = tmp_path_factory.mktemp("two-models")
    torch.manual_seed(0)
    spec = models.get_spec("small_cnn")
    Bundle(model=models.create("small_cnn", 2, weights=None).eval(),
           config={"architecture": "small_cnn", "classes": ["normal", "abnormal"], "input_size": 40,
                   "mean": list(spec.mean), "std": list(spec.std), "name": "second-model"}).save(folder / "bundle")
    (folder / "examples").mkdir()
    Image.fromarray(generate_cell("Parabasal", 7, size=64).image).save(folder / "examples" / "abnormal-1.png")
    second = Demo(folder / "bundle", examples=[folder / "examples" / "abnormal-1.png"], map_method="pca",
                  fit_map_in_background=False)
    page = {"Synthetic (tiny)": demo, "Second model": second}
    port = free_port()
    blocks = launch(page, port=port, quiet=True)
    yield f"http://127.0.0.1:{port}/", page
    blocks.close()
    second.close()


def test_the_model_menu_routes_every_request_to_its_model(two_models, examples):
    from gradio_client import Client, handle_file

    url, page = two_models
    client = Client(url, verbose=False, download_files=False)
    *_, first = client.predict(handle_file(str(examples[0])), FAST, "predicted class", 0.75, api_name="/explain")
    *_, second = client.predict(handle_file(str(examples[0])), ["gradcam"], "predicted class", 0.75, "Second model",
                                api_name="/explain")
    assert first["predicted"] in page["Synthetic (tiny)"].bundle.classes
    assert second["predicted"] in ("normal", "abnormal") and second["settings"]["bundle_name"] == "second-model"
    table, _ = client.predict([handle_file(str(examples[1]))], "Second model", api_name="/batch")
    assert "normal" in table


def test_page_in_chromium_switches_models_and_their_examples(two_models, tmp_path):
    from tools.demo_browser import explain_example

    require_chromium()
    url, page = two_models
    first = explain_example(url, example=0, methods=2)
    assert first.predicted in page["Synthetic (tiny)"].bundle.classes and not first.console_errors
    second = explain_example(url, screenshot=tmp_path / "second.png", example=0, methods=2, model="Second model",
                             gallery=False)
    assert second.predicted in ("normal", "abnormal"), second
    assert second.console_errors == [] and second.page_errors == [] and second.external_requests == []


def test_shipped_bundles_stay_small():
    from xcyto.demo import shipped_bundles
    from xcyto.shipped import SHIPPED

    shipped = shipped_bundles()
    assert len(shipped) == len(SHIPPED), f"shipped bundles missing (make artifacts): {sorted(shipped)}"
    for label, (bundle, _) in shipped.items():
        size = sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file())
        assert size <= 25_000_000, f"{label}: {size / 1e6:.2f} MB"


def test_the_demo_starts_on_real_herlev_cells(tmp_path):
    """`make demo` serves the shipped bundles, the Herlev one first, with held-out real cells
    as examples; in Chromium an example gets a Herlev class, its heatmaps and its measurements."""
    from xcyto.demo import Demo, launch
    from tools.demo_browser import explain_example, free_port
    from xcyto.demo import example_files, shipped_bundles

    shipped = shipped_bundles()
    labels = list(shipped)
    assert labels, "no shipped bundles (make artifacts)"
    assert labels[0].startswith("Herlev"), f"the Herlev bundle is not first (or not shipped: make artifacts): {labels}"
    assert labels[-1].startswith("Synthetic")
    bundle_path, examples = shipped[labels[0]]
    files = example_files(examples)
    assert files and all(path.suffix == ".jpg" for path in files) and (examples / "SOURCE.txt").is_file()
    require_chromium()
    demos = {label: Demo(path, examples=example_files(folder), map_method="pca", fit_map_in_background=False)
             for label, (path, folder) in shipped.items()}
    port = free_port()
    blocks = launch(demos, port=port, quiet=True)
    try:
        report = explain_example(f"http://127.0.0.1:{port}/", screenshot=tmp_path / "herlev.png", example=0)
    finally:
        blocks.close()
        for demo in demos.values():
            demo.close()
    herlev = demos[labels[0]].bundle
    assert report.predicted in herlev.classes and report.heatmaps == 4 and report.neighbours == 8
    assert "N/C ratio" in report.measured
    assert report.console_errors == [] and report.page_errors == [] and report.external_requests == []
