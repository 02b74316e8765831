"""Embedding space: gallery round trip, exact neighbours, maps, atypicality, the CLI.

One small CNN is trained on synthetic cells for the module (the training loop builds
its gallery); everything else is checked against plain NumPy.
"""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import xcyto
from xcyto.cli import main as cli_main
from xcyto.cli._embedding import load_cells
from xcyto.embedding import build_gallery, embed, embed_cells, false_flag_rate, load_gallery
from xcyto.embedding._gallery import _open
from xcyto.embedding import NeighbourIndex
from xcyto.errors import BundleError, EmbeddingError


@pytest.fixture(scope="module")
def tiny(tiny_bundle):
    """The session's tiny bundle (conftest); its gallery was built by the training loop."""
    return tiny_bundle


@pytest.fixture(scope="module")
def held_out(tiny):
    """The bundle's own test cells."""
    dataset, _ = load_cells(tiny, "synthetic", "test")
    return dataset


@pytest.fixture(scope="module")
def gallery(tiny):
    return load_gallery(tiny)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


# -- gallery -----------------------------------------------------------------------------
def test_training_stores_a_memory_mapped_float16_gallery_of_the_train_cells(tiny, gallery):
    train_cells, _ = load_cells(tiny, "synthetic", "train")
    assert gallery is not None and load_gallery(tiny) is gallery  # cached per bundle
    assert gallery.cell_ids == train_cells.cell_ids
    assert gallery.groups == [str(group) for group in train_cells.groups]
    assert np.array_equal(gallery.labels, train_cells.labels)
    assert isinstance(gallery.embeddings, np.memmap) and gallery.embeddings.dtype == np.float16
    assert isinstance(gallery.thumbnails, np.memmap) and gallery.thumbnails.dtype == np.uint8
    assert gallery.thumbnails.shape == (len(train_cells), 96, 96, 3)
    assert gallery.embeddings.shape == (len(train_cells), tiny.model.embedding_dim)
    meta = json.loads((tiny.gallery_dir / "gallery.json").read_text())
    assert meta["weights_sha256"] == tiny.sha256 and meta["classes"] == tiny.classes
    # the stored vectors are the model's unit-norm embeddings of those cells
    fresh = embed(tiny, tiny.preprocess([sample.image for sample in train_cells.samples[:8]])).numpy()
    assert np.abs(fresh - gallery.embeddings[:8].astype(np.float32)).max() < 2e-3
    assert np.allclose(np.linalg.norm(gallery.embeddings.astype(np.float32), axis=1), 1, atol=2e-3)
    # nothing half-written left beside the bundle's files
    assert not [path.name for path in tiny.path.iterdir() if path.name.startswith(".")]


def test_rebuilding_replaces_the_gallery_and_the_cache(tiny, gallery, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny.path, copy)
    bundle = xcyto.load(copy)
    train_cells, _ = load_cells(bundle, "synthetic", "train")
    before = load_gallery(bundle)
    rebuilt = build_gallery(bundle, train_cells.subset(range(20)), thumbnail_size=32)
    assert load_gallery(bundle) is rebuilt and rebuilt is not before
    assert len(rebuilt) == 20 and rebuilt.thumbnails.shape[1:] == (32, 32, 3)
    assert sorted(path.name for path in copy.iterdir() if path.name.startswith(".")) == []


def test_a_gallery_built_with_other_weights_is_refused(tiny, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny.path, copy)
    bundle = xcyto.load(copy)
    with torch.no_grad():
        bundle.model.classifier.weight.add_(0.01)
    bundle.save(copy)  # new weights; Bundle.save keeps the old gallery folder
    with pytest.raises(BundleError, match="other weights"):
        load_gallery(xcyto.load(copy))


# -- neighbours ----------------------------------------------------------------------------
def test_neighbours_match_a_brute_force_numpy_search(tiny, gallery, held_out):
    queries = embed(tiny, tiny.preprocess([sample.image for sample in held_out.samples[:10]]))
    matrix = unit_rows(gallery.embeddings.astype(np.float32))  # cosine similarity
    similarities = queries.numpy() @ matrix.T
    found = gallery.neighbours(queries, k=7)
    per_class = gallery.nearest_per_class(queries)
    for row, (neighbours, best) in enumerate(zip(found, per_class)):
        expected = np.argsort(-similarities[row], kind="stable")[:7]
        assert [n.cell_id for n in neighbours] == [gallery.cell_ids[i] for i in expected]
        assert np.allclose([n.similarity for n in neighbours], similarities[row, expected], atol=1e-5)
        assert neighbours[0].thumbnail.shape == (96, 96, 3) and neighbours[0].thumbnail.dtype == np.uint8
        assert neighbours[0].label == gallery.labels[expected[0]]
        assert set(best) == set(tiny.classes)
        for label, name in enumerate(tiny.classes):
            members = np.flatnonzero(gallery.labels == label)
            closest = members[np.argmax(similarities[row, members])]
            assert best[name].cell_id == gallery.cell_ids[closest] and best[name].class_name == name
        assert best[neighbours[0].class_name].cell_id == neighbours[0].cell_id
    combined = gallery.lookup(queries, k=7)  # the same answers from one search pass
    scores, flags = gallery.atypicality(queries)
    assert [[n.cell_id for n in row] for row in combined.neighbours] == [[n.cell_id for n in row] for row in found]
    assert [{c: n.cell_id for c, n in row.items()} for row in combined.nearest_per_class] == \
        [{c: n.cell_id for c, n in row.items()} for row in per_class]
    assert np.allclose(combined.atypicality_scores, scores) and np.array_equal(combined.atypical, flags)


def test_the_index_chunks_and_leaves_one_out_exactly():
    rng = np.random.default_rng(0)
    vectors = unit_rows(rng.standard_normal((3000, 24))).astype(np.float32)
    labels = rng.integers(0, 4, 3000)
    labels[labels == 2] = 3  # a class with no cells
    groups = np.arange(3000) // 3  # source groups of three cells
    index = NeighbourIndex(vectors, labels, n_classes=4, groups=groups, chunk_elements=5000)  # many chunks
    queries = torch.from_numpy(vectors[:40])
    result = index.search(queries, k=6, per_class=True, exclude_groups=torch.from_numpy(groups[:40]))
    similarities = vectors[:40] @ vectors.T
    similarities[groups[:40, None] == groups[None, :]] = -np.inf  # the query's own group left out
    assert np.array_equal(result.indices.numpy(), np.argsort(-similarities, axis=1)[:, :6])
    for label in (0, 1, 3):
        members = np.flatnonzero(labels == label)
        assert np.array_equal(result.class_indices[:, label].numpy(), members[similarities[:, members].argmax(1)])
    assert (result.class_indices[:, 2] == -1).all()


# -- maps ----------------------------------------------------------------------------------
def test_pca_map_is_stored_as_arrays_and_its_transform_is_exact(tiny, gallery):
    projection = gallery.projection("pca")  # fitted at build time
    folder = tiny.gallery_dir / "projections"
    assert {"pca.json", "pca_coords.npy", "pca_components.npy", "pca_mean.npy"} <= {p.name for p in folder.iterdir()}
    assert np.abs(projection.transform(gallery.embeddings.astype(np.float32)) - projection.coords).max() < 1e-4
    reloaded = _open(gallery.path).projection("pca", fit=False)
    assert np.array_equal(reloaded.coords, projection.coords)
    assert np.array_equal(reloaded.components, projection.components)


def test_umap_map_places_cells_among_their_neighbours_and_tsne_refuses_new_cells(tiny, gallery):
    projection = gallery.projection("umap")  # fitted now, stored without pickle
    stored = {path.name for path in (tiny.gallery_dir / "projections").iterdir()}
    assert {"umap.json", "umap_coords.npy"} <= stored and not [n for n in stored if n.endswith((".pkl", ".pickle"))]
    embeddings = gallery.embeddings.astype(np.float32)
    assert np.abs(projection.transform(embeddings) - projection.coords).max() < 1e-5  # exactly on itself
    # a slightly changed cell lands near its own position, relative to the size of the map
    rng = np.random.default_rng(0)
    moved = unit_rows(embeddings + 0.02 * rng.standard_normal(embeddings.shape).astype(np.float32))
    assert (moved * embeddings).sum(1).min() < 0.999  # not identical to the stored vectors
    extent = np.linalg.norm(projection.coords.max(0) - projection.coords.min(0))
    displacement = np.linalg.norm(projection.transform(moved) - projection.coords, axis=1)
    assert np.median(displacement) < 0.05 * extent
    reloaded = _open(gallery.path).projection("umap", fit=False)
    assert np.array_equal(reloaded.coords, projection.coords)

    tsne = gallery.projection("tsne")
    assert tsne.coords.shape == (len(gallery), 2) and np.isfinite(tsne.coords).all()
    with pytest.raises(EmbeddingError, match="no transform"):
        tsne.transform(embeddings[:1])


# -- atypicality ---------------------------------------------------------------------------
def non_cell_images(size: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    squares = (np.indices((size, size)) // 8).sum(0) % 2
    text = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(text)
    for line in range(4):
        draw.text((2, 2 + 15 * line), "Pap 123", fill="black")
    return {
        "noise": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "blank": np.full((size, size, 3), 255, dtype=np.uint8),
        "black": np.zeros((size, size, 3), dtype=np.uint8),
        "checkerboard": np.repeat((squares * 255).astype(np.uint8)[..., None], 3, axis=2),
        "text": np.asarray(text),
    }


def test_non_cells_are_flagged_and_held_out_cells_mostly_not(tiny, gallery, held_out):
    images = non_cell_images()
    scores, flags = gallery.atypicality(embed(tiny, tiny.preprocess(list(images.values()))))
    assert flags.all(), dict(zip(images, scores.round(1)))
    assert (scores > 99).all()
    result = false_flag_rate(tiny, held_out)
    assert result["n"] == len(held_out) and result["k"] == 5 and result["percentile"] == 99
    assert result["rate"] <= 0.1, result
    # new cells from the same generator (another seed) are not unlike the training cells either
    new_cells, _ = load_cells(tiny, "synthetic", "all", synthetic_seed=123)
    _, new_flags = gallery.atypicality(embed_cells(tiny, new_cells.samples[:120]))
    assert new_flags.mean() <= 0.1


def test_calibration_uses_leave_one_out_neighbours_and_a_shrinkage_gaussian(gallery):
    from sklearn.covariance import LedoitWolf

    from xcyto.embedding._atypicality import calibrate

    index = gallery.index
    calibration = calibrate(index)  # on the training cells themselves
    rows = torch.arange(len(gallery))
    vectors = index.matrix[index.position[rows]]
    # the neighbour reference: each training cell's 5th neighbour, its own source group excluded
    similarities = vectors.double().numpy() @ vectors.double().numpy().T
    groups = np.asarray(gallery.groups)
    similarities[groups[:, None] == groups[None, :]] = -np.inf
    expected = np.sort(1 - np.sort(similarities, axis=1)[:, -5])
    assert np.allclose(calibration.knn_reference, expected, atol=1e-5)
    # the spread model is scikit-learn's Ledoit-Wolf Mahalanobis distance
    reference = LedoitWolf().fit(vectors.double().numpy())
    probes = vectors.numpy()[:10] * 0.9 + 0.1 * vectors.numpy()[10:20]
    assert np.allclose(calibration.spread_distance(probes) ** 2, reference.mahalanobis(probes), rtol=1e-3)
    # ... whose D x D whitening is stored in float16 with a scale (half the bytes, same distances)
    stored = np.load(gallery.path / "atypicality_whitening.npy")
    assert stored.dtype == np.float16 and np.abs(stored).max() == 1.0
    scale = gallery.meta["atypicality"]["whitening_scale"]
    np.testing.assert_array_equal(calibration.whitening, stored.astype(np.float32) * np.float32(scale))
    # about 1% of the training cells are above the threshold, by construction
    assert np.all(np.diff(calibration.combined_reference) >= 0)
    assert 0.0 < (calibration.combined_reference > calibration.threshold).mean() <= 0.02


def test_training_calibrates_the_flag_on_the_validation_cells(tiny, gallery):
    validation, _ = load_cells(tiny, "synthetic", "val")
    assert gallery.meta["atypicality"]["calibrated_on"].startswith(f"{len(validation)} held-out cells")
    calibration = gallery.calibration
    assert len(calibration.knn_reference) == len(validation)
    # brute force: each validation cell's 5th nearest training cell, nothing left out
    queries = unit_rows(embed_cells(tiny, validation.samples).astype(np.float64))
    training = unit_rows(np.asarray(gallery.embeddings, dtype=np.float64))
    fifth = np.sort(queries @ training.T, axis=1)[:, -calibration.k]
    np.testing.assert_allclose(calibration.knn_reference, np.sort(1 - fifth), atol=2e-3)
    np.testing.assert_allclose(calibration.spread_reference, np.sort(calibration.spread_distance(queries)), rtol=1e-4)


# -- command line --------------------------------------------------------------------------
def test_cli_project_places_test_cells_and_marks_the_misclassified(tiny, held_out, tmp_path, capsys):
    figure, table = tmp_path / "umap.png", tmp_path / "cells.csv"
    code = cli_main(["project", "--bundle", str(tiny.path), "--data", "synthetic", "--split", "test",
                     "--method", "umap", "--out", str(figure), "--csv", str(table)])
    assert code == 0, capsys.readouterr().err
    with Image.open(figure) as image:
        assert image.size[0] > 300 and image.size[1] > 300
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert [row["cell_id"] for row in rows] == held_out.cell_ids
    batch = tiny.preprocess([sample.image for sample in held_out.samples])
    predicted = tiny.predict_batch(batch).probabilities.argmax(1).numpy()  # as `predict` says (its TTA, if any)
    assert [row["predicted"] for row in rows] == [tiny.classes[p] for p in predicted]
    assert [int(row["misclassified"]) for row in rows] == list((predicted != held_out.labels).astype(int))
    assert f"{int((predicted != held_out.labels).sum())} misclassified" in capsys.readouterr().out


def test_cli_gallery_build_and_flag_rate(tiny, tmp_path, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny.path, copy)
    shutil.rmtree(copy / "gallery")
    assert load_gallery(xcyto.load(copy)) is None
    assert cli_main(["gallery", "build", "--bundle", str(copy), "--data", "synthetic"]) == 0
    rebuilt = load_gallery(xcyto.load(copy))
    assert rebuilt.cell_ids == load_gallery(tiny).cell_ids  # the train split of the bundle's split.csv
    report = tmp_path / "flags.json"
    assert cli_main(["gallery", "flag-rate", "--bundle", str(copy), "--data", "synthetic", "--out", str(report)]) == 0
    assert "flagged as unlike the training cells" in capsys.readouterr().out
    assert json.loads(report.read_text())["split"] == "test"
    assert cli_main(["project", "--bundle", str(copy), "--data", "synthetic", "--method", "tsne",
                     "--out", str(tmp_path / "tsne.png")]) == 2  # t-SNE cannot place new cells


def test_map_figure_with_a_query_and_errors(tiny, gallery, held_out, tmp_path):
    from xcyto.embedding import plot_gallery_map
    from xcyto.plotting import save_figure

    query = embed(tiny, tiny.preprocess([held_out[0].image]))[0]
    errors = np.zeros(len(gallery), dtype=bool)
    errors[:3] = True
    figure = plot_gallery_map(gallery, "pca", errors=errors, query_embedding=query)
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "query cell" in labels and "misclassified (3)" in labels
    with Image.open(save_figure(figure, tmp_path / "map.png")) as image:
        assert image.size[0] > 300
