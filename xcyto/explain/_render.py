"""Overlays (batched, on the device), the explanation figure, HTML for Jupyter, saving."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import torch

from xcyto.atomic import atomic_path, write_bytes_atomic, write_json_atomic
from xcyto.plotting import HEATMAP_CMAP, class_colors, save_figure

#: Largest opacity of the heatmap over the cell; opacity grows linearly with the display value,
#: so the cell stays visible where the map is zero.
OVERLAY_OPACITY = 0.75


def colormap_table(device=None, name: str = HEATMAP_CMAP) -> torch.Tensor:
    """The colormap as a ``(256, 3)`` float table in ``[0, 255]``."""
    import matplotlib

    table = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0
    return torch.tensor(table, dtype=torch.float32, device=device)


def overlay_batch(images: torch.Tensor, display: torch.Tensor, opacity: float = OVERLAY_OPACITY) -> torch.Tensor:
    """Heatmaps over cells: ``images`` ``(B, H, W, 3)`` uint8, ``display`` ``(B, H, W)`` in
    ``[0, 1]`` -> ``(B, H, W, 3)`` uint8, one tensor operation for the batch."""
    table = colormap_table(display.device)
    values = display.float().clamp(0, 1)
    colours = table[(values * 255).round().long()]
    weight = (opacity * values).unsqueeze(-1)
    blended = images.float() * (1 - weight) + colours * weight
    return blended.round().clamp(0, 255).to(torch.uint8)


def model_view(batch: torch.Tensor, mean, std) -> torch.Tensor:
    """A normalised batch ``(B, 3, H, W)`` back to ``(B, H, W, 3)`` uint8: the cells as the model saw them."""
    mean = torch.tensor(mean, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    pixels = (batch * std + mean).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1)


# -- the figure -------------------------------------------------------------------------------
def plot_explanation(explanation, methods=None, max_neighbours: int = 8):
    """Cell, overlay per method (with the shared colour bar), probability bars, and a row of
    nearest gallery cells when there are neighbours. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    methods = list(explanation.heatmaps) if methods is None else [explanation.heatmap(m).method for m in methods]
    neighbours = list(explanation.neighbours)[:max_neighbours]
    columns = 1 + len(methods)
    rows = 2 if neighbours else 1
    figure = plt.figure(figsize=(2.5 * columns + 3.6, 3.2 + (2.1 if neighbours else 0)))
    # cell | overlays ... | colour bar | gap | probability bars
    grid = figure.add_gridspec(rows, columns + 3, width_ratios=[1] * columns + [0.06, 0.25, 1.5],
                               height_ratios=[1.4, 1] if neighbours else [1], hspace=0.55, wspace=0.08,
                               top=0.82 if neighbours else 0.72)
    colours = class_colors(explanation.classes)

    axis = figure.add_subplot(grid[0, 0])
    morphology = explanation.morphology
    if explanation.original is None:
        axis.imshow(explanation.image)
    elif morphology is None:
        axis.imshow(explanation.original)
    else:  # outlined as the demo and `xcyto segment` draw it
        from xcyto.morphology import outlined

        axis.imshow(outlined(explanation.original, morphology.masks))
    axis.set_title("cell", fontsize=9)
    axis.axis("off")
    if morphology is not None and explanation.original is not None:
        axis.text(0.0, -0.04, morphology_lines(morphology, explanation.predicted, 4), transform=axis.transAxes,
                  fontsize=6.5, va="top", ha="left", family="monospace")
    for column, name in enumerate(methods, start=1):
        heatmap = explanation.heatmaps[name]
        axis = figure.add_subplot(grid[0, column])
        axis.imshow(explanation.overlay_on_image(name))
        passed, label = heatmap.check_label
        mark = "" if passed is None else ("\n✓ " if passed else "\n⚠ ") + label.replace("; ", "\n")
        axis.set_title(f"{name}\nscale {heatmap.scale:.3g} ({heatmap.normalise}){mark}", fontsize=7,
                       color="#b03a2e" if passed is False else "black")
        axis.axis("off")
    if methods:
        bar = figure.colorbar(ScalarMappable(Normalize(0, 1), HEATMAP_CMAP), cax=figure.add_subplot(grid[0, columns]))
        bar.set_label("max(raw, 0) / scale", fontsize=7)
        bar.ax.tick_params(labelsize=7)

    axis = figure.add_subplot(grid[0, columns + 2])
    names = list(explanation.probabilities)
    values = [explanation.probabilities[n] for n in names]
    positions = np.arange(len(names))[::-1]
    axis.barh(positions, values, color=[colours[n] for n in names])
    axis.set_yticks(positions, [f"{n} *" if n == explanation.target else n for n in names], fontsize=8)
    for label, name in zip(axis.get_yticklabels(), names):
        if name == explanation.predicted:
            label.set_fontweight("bold")
    axis.set_xlim(0, 1)
    axis.set_xlabel("calibrated probability", fontsize=8)
    axis.tick_params(axis="x", labelsize=7)
    axis.yaxis.tick_right()
    axis.set_title("* explained class", fontsize=8)

    title = f"{Path(str(explanation.source)).name}: " if explanation.source and not str(explanation.source).startswith("image ") else ""
    if explanation.no_nucleus:
        title += "NO CELL NUCLEUS FOUND in this image; the model still answers "
    title += f"predicted {explanation.predicted} ({explanation.confidence:.2f}"
    title += ", mean of 8 rotated/flipped views)" if explanation.settings.get("tta") else ")"
    if explanation.target != explanation.predicted:
        title += f"; maps explain {explanation.target}"
    if explanation.atypical:
        title += f"; ATYPICAL (score {explanation.atypicality:.2f}): unlike the training cells"
    figure.suptitle(title, fontsize=10, y=1.0)

    if neighbours:
        sub = grid[1, :].subgridspec(1, max_neighbours, wspace=0.05)
        for index, neighbour in enumerate(neighbours):
            axis = figure.add_subplot(sub[0, index])
            thumbnail = getattr(neighbour, "thumbnail", None)
            if thumbnail is not None:
                axis.imshow(thumbnail)
            axis.set_xticks([])
            axis.set_yticks([])
            colour = colours.get(neighbour.class_name, (0.5, 0.5, 0.5))
            for spine in axis.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
            axis.set_title(f"{neighbour.class_name}\nsim {float(neighbour.similarity):.2f}", fontsize=7, color=colour)
            if index == 0:
                axis.set_ylabel("nearest\ntraining cells", fontsize=8)
    return figure


def figure_png(figure, dpi: int = 100) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def morphology_lines(morphology, class_name: str, count: int = 4) -> str:
    """The first ``count`` key measurements, each placed among ``class_name``'s training cells."""
    from xcyto.morphology import KEY_FEATURES

    if not getattr(morphology, "nucleus_found", True):
        return "no nucleus found: nothing to measure"
    names = [name for name in KEY_FEATURES if np.isfinite(morphology.features.get(name, np.nan))][:count]
    return "\n".join(morphology.describe(name, class_name) for name in names)


def explanation_html(explanation) -> str:
    """The figure as an embedded PNG and a small table (Jupyter's ``_repr_html_``)."""
    encoded = base64.b64encode(figure_png(explanation.plot())).decode("ascii")
    rows = [("data issues", explanation.data_warning)] if explanation.data_issues else []
    rows += [("predicted", f"{explanation.predicted} ({explanation.confidence:.3f})"),
             ("explained class", explanation.target)]
    rows += [(f"p({name})", f"{value:.3f}") for name, value in explanation.probabilities.items()]
    if explanation.atypicality is not None:
        rows.append(("atypicality", f"{explanation.atypicality:.3f}" + (" (atypical)" if explanation.atypical else "")))
    for name, heatmap in explanation.heatmaps.items():
        details = ", ".join(f"{k}={v}" for k, v in heatmap.settings.items())
        rows.append((name, f"scale {heatmap.scale:.3g}" + (f"; {details}" if details else "")))
        passed, sentence = heatmap.check
        if passed is not None:
            rows.append((f"{name} check", ("✓ " if passed else "⚠ ") + sentence))
    if explanation.morphology is not None:
        from xcyto.morphology import KEY_FEATURES

        for feature in KEY_FEATURES:
            if np.isfinite(explanation.morphology.features.get(feature, np.nan)):
                rows.append((feature, explanation.morphology.describe(feature, explanation.predicted)))
    rows.append(("bundle", f"{explanation.settings.get('bundle_name')} "
                           f"(sha256 {str(explanation.settings.get('bundle_sha256'))[:12]})"))
    table = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                    f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return (f"<div class='xcyto-explanation'><img src='data:image/png;base64,{encoded}' "
            f"alt='explanation of {html.escape(str(explanation.source))}' style='max-width:100%'/>"
            f"<table>{table}</table></div>")


# -- saving -----------------------------------------------------------------------------------
def save_explanation(explanation, directory, name: str = "explanation", arrays: bool = False) -> dict[str, Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"figure": save_figure(explanation.plot(), directory / f"{name}.png")}
    paths["cell"] = _save_png(explanation.image if explanation.original is None else explanation.original,
                              directory / f"{name}_cell.png")
    for method, heatmap in explanation.heatmaps.items():  # overlays on the image as given; .npy at model size
        paths[method] = _save_png(explanation.overlay_on_image(method), directory / f"{name}_{method}.png")
        if arrays:
            paths[f"{method}_raw"] = _save_npy(heatmap.raw, directory / f"{name}_{method}.npy")
    paths["json"] = directory / f"{name}.json"
    write_json_atomic(paths["json"], explanation.to_dict())
    return paths


def png_bytes(image: np.ndarray) -> bytes:
    """An ``H x W x 3`` uint8 image as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def _save_png(array: np.ndarray, path: Path) -> Path:
    return write_bytes_atomic(path, png_bytes(array))


def _save_npy(array: np.ndarray, path: Path) -> Path:
    with atomic_path(path) as temporary:
        np.save(temporary, array)
    return path
