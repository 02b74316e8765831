"""The Gradio demo: one cell in; its prediction beside heatmaps, nearest training cells and the map.

    python demo/app.py                      # the shipped bundles (Herlev first), http://127.0.0.1:7860
    python demo/app.py --bundle runs/herlev/bundle --port 8000

Every answer goes through :func:`xcyto.explain` (one cell, or the batch tab's list): the
page adds formatting only. :class:`Demo` holds the logic (plain Python, testable
without a browser); :func:`build` wires it to Gradio components; :func:`launch` serves
it (the command line is ``xcyto/demo/_cli.py``). Named API endpoints for ``gradio_client``:
``/explain``, ``/figure``, ``/opacity``, ``/batch``.
"""
import atexit
import hashlib
import html
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections import deque
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls
import gradio as gr  # noqa: E402

from xcyto.data import check_cell_size, read_image  # noqa: E402
from xcyto.demo import _views as views  # noqa: E402
from xcyto.demo._cell_info import DISCLAIMER  # noqa: E402
from xcyto.demo._shipped import DEFAULT_HOST, DEFAULT_PORT, MAX_FILE_SIZE, NEIGHBOURS, example_files  # noqa: E402,F401
from xcyto.demo._embedding_map import JPEG_QUALITY, MapViews  # noqa: E402
from xcyto.embedding import check_method  # noqa: E402
from xcyto.errors import ImageError, XcytoError  # noqa: E402
from xcyto.explain import DEFAULT_METHODS, explain, get_method, list_methods, resolve_bundle  # noqa: E402
from xcyto.explain import gallery_for  # noqa: E402
from xcyto.explain import OVERLAY_OPACITY, figure_png  # noqa: E402
from xcyto.plotting import class_colors  # noqa: E402

#: Requests that run the model at once (single cells and batches share one queue); more wait
#: in line. Each already uses every CPU core. Figures and re-blending have queues of their own.
CONCURRENCY = 1
MODEL_QUEUE = "model"
#: How long, and for how many responses at most, their files (overlays, map, JSON, figure) are kept.
KEEP_SECONDS = 3600
KEEP_RESPONSES = 2000
QUEUE_SIZE = 32
MAX_BATCH = 48
PREDICTED = "predicted class"

CSS = """
.xc-banner {background:#fff8c5; border:1px solid #d4a72c; border-radius:6px; padding:8px 12px; color:#3b2300;}
.xc-verdict {font-size:15px; line-height:1.5;}
.xc-predicted {font-size:24px; font-weight:700;}
.xc-confidence {color:#57606a; margin-left:6px;}
.xc-note {color:#57606a; margin-top:4px;}
.xc-set {margin-top:4px;}
.xc-fused {margin:2px 0 0 0; padding-left:20px;}
.xc-warning {background:#ffebe9; border:1px solid #cf222e; border-radius:6px; padding:8px 12px; margin-top:8px;
             color:#82071e;}
.xc-risk {color:#fff; border-radius:10px; padding:1px 9px; font-size:13px; font-weight:600;}
.xc-batch {border-collapse:collapse; width:100%; border:none !important;}
.xc-batch td, .xc-batch th {padding:4px 8px !important; border:none !important; border-bottom:1px solid #d0d7de !important;
                            text-align:left; vertical-align:middle;}
.xc-batch img {width:64px; height:64px; image-rendering:auto;}
.xc-dot {display:inline-block; width:10px; height:10px; border-radius:5px; margin-right:6px;}
.xc-flag, .xc-error {color:#cf222e;}
.xc-footer {color:#57606a; font-size:13px;}
/* galleries as tall as their thumbnails (Gradio reserves 450 px otherwise) */
.xc-gallery .fixed-height {min-height:0 !important; max-height:none !important;}
.xc-gallery .caption-label {max-width:calc(100% - 8px) !important; white-space:normal !important; line-height:1.25;
                            opacity:0.85 !important;}
#embedding-map img {object-fit:contain;}
"""


class Demo:
    """The demo's logic over one bundle: ``explain_cell``, ``reblend``, ``figure``, ``batch``.

    ``bundle``: a Bundle or a folder (default: ``$XCYTO_BUNDLE``, else the shipped demo
    bundle). ``examples``: image files offered as examples. ``map_method``: the
    training map shown (``umap``; ``pca`` while a UMAP map is being fitted).
    """

    def __init__(self, bundle=None, examples: list[Path] | None = None, map_method: str = "umap",
                 neighbours: int = NEIGHBOURS, fit_map_in_background: bool = True):
        self.bundle = resolve_bundle(bundle)
        self.neighbours = int(neighbours)
        self.examples = [Path(p) for p in (examples or [])]
        self.methods = list_methods()
        self.slow_methods = {name for name in self.methods if get_method(name).slow}
        self.default_methods = [m for m in DEFAULT_METHODS if m in self.methods]
        try:
            self.gallery = gallery_for(self.bundle)
        except XcytoError as error:
            warnings.warn(f"the bundle's gallery is unusable, so no neighbours or map: {error}", stacklevel=2)
            self.gallery = None
        self.maps = None
        if self.gallery is not None:
            self.maps = MapViews(self.gallery, check_method(map_method), fit_in_background=fit_map_in_background)
        self.output_dir = Path(tempfile.mkdtemp(prefix="xcyto-demo-"))
        atexit.register(shutil.rmtree, self.output_dir, True)  # also when close() is never called
        # Served from here as they are: Gradio's per-file checks and copies into its cache
        # cost more than writing the files. Only this app writes here; names are random.
        gr.set_static_paths([self.output_dir])
        self._thumbnails: dict[str, str] = {}  # gallery cell id -> its PNG, written once
        self._recent: deque[tuple[float, Path]] = deque()
        self._files_lock = threading.Lock()  # events run in worker threads, several queues at once

    def close(self) -> None:
        shutil.rmtree(self.output_dir, ignore_errors=True)

    # -- one cell ---------------------------------------------------------------------------
    def explain_cell(self, image, methods=None, target: str | None = PREDICTED, opacity: float | None = None):
        """Explain one uploaded image. Returns the values of :data:`CELL_OUTPUTS`, in order.

        ``image``: Gradio's file payload (a dict with ``path``/``orig_name``) or a path.
        ``methods``: registry names (default: Grad-CAM and IG). ``target``: a class name,
        or ``"predicted class"``. ``opacity``: of the heatmaps over the cell (0-1).
        """
        if image is None:
            return self.empty_outputs()
        path, name = _payload_path(image)
        array = self._read(path, name)
        methods = list(methods) if methods else []
        if not methods:
            raise _error("Choose at least one explanation method (Grad-CAM is the fastest).")
        target = None if target in (None, "", PREDICTED) else target
        opacity = OVERLAY_OPACITY if opacity is None else float(opacity)
        explanation = self._explain(array, methods=methods, target=target, neighbours=self.neighbours)
        explanation.source = name
        state = views.heatmap_state(explanation)
        default = abs(opacity - OVERLAY_OPACITY) < 1e-6
        overlays = [h.overlay for h in explanation.heatmaps.values()] if default else None
        folder = self._request_folder()
        map_image = None
        if self.maps is not None and explanation.embedding is not None:
            view = self.maps.current()
            if view is not None:
                map_image = folder / "map.jpg"
                Image.fromarray(view.place(explanation.embedding)).save(map_image, quality=JPEG_QUALITY)
                map_image = str(map_image)
        details = explanation.to_dict()
        json_path = folder / f"{_stem(name)}-explanation.json"
        json_path.write_text(json.dumps(details, indent=2))
        return (views.verdict_html(explanation), views.probabilities(explanation),
                self._files(views.heatmap_items(state, opacity, overlays), folder),
                self._neighbour_files(explanation.neighbours, views.neighbour_items(explanation)),
                self._neighbour_files(views.nearest_others(explanation), views.nearest_other_items(explanation)),
                map_image,
                views.cell_info_markdown(explanation.predicted, explanation.morphology,
                                         explanation.target if explanation.target != explanation.predicted else None),
                str(json_path), details, state,
                explanation)

    def empty_outputs(self):
        return ("", None, [], [], [], None, "", None, None, None, None)

    def pick_example(self, selected: gr.SelectData):
        """The example image clicked in the examples gallery (it then goes through ``explain_cell``)."""
        return str(self.examples[selected.index])

    def reblend(self, state: dict | None, opacity: float):
        """The heatmap gallery at another opacity, from the display maps kept in the session."""
        return [] if not state else self._files(views.heatmap_items(state, float(opacity)), self._request_folder())

    def figure(self, explanation):
        """The explanation figure (``Explanation.plot()``) as a PNG file, for download."""
        if explanation is None:
            return None
        path = self._request_folder() / f"{_stem(explanation.source or 'cell')}-explanation.png"
        path.write_bytes(figure_png(explanation.plot(), dpi=110))
        return str(path)

    # -- many cells -------------------------------------------------------------------------
    def batch(self, files, methods=("gradcam",)):
        """Classify several images in one ``explain`` call. Returns ``(html table, rows)``;
        unreadable files get a row with their error instead of stopping the batch."""
        files = [f for f in (files or []) if f is not None]
        if not files:
            raise _error("Upload one or more cell images first.")
        if len(files) > MAX_BATCH:
            gr.Warning(f"{len(files)} files given; only the first {MAX_BATCH} are classified.")
            files = files[:MAX_BATCH]
        names, arrays, errors = [], [], {}
        for item in files:
            path, name = _payload_path(item)
            while name in names:
                name = f"{name} (again)"
            names.append(name)
            try:
                arrays.append(self._read(path, name, notify=False))
            except gr.Error as error:
                errors[name] = html.unescape(error.message)
        explanations = []
        if arrays:
            explanations = self._explain(arrays, methods=list(methods), neighbours=self.neighbours)
        classes = self.bundle.classes
        table = views.batch_html(names, explanations, errors, class_colors(classes))
        frame = {"headers": views.batch_columns(classes), "data": views.batch_rows(names, explanations, errors, classes)}
        return table, frame

    # -- helpers ----------------------------------------------------------------------------
    def _read(self, path: str, name: str, notify: bool = True) -> np.ndarray:
        """Decode an upload with xcyto's reader; its errors become a message naming the file."""
        try:
            array = read_image(path)
        except ImageError as error:
            raise _error(str(error).replace(str(path), name), "Cannot use this file") from None
        try:  # explain() refuses it too, but could not name the upload
            check_cell_size(array, name)
        except ImageError as error:
            raise _error(str(error), "Cannot use this file") from None
        if notify:
            try:
                with Image.open(path) as header:
                    mode = header.mode
            except Exception:  # read_image succeeded; the mode is only for the note
                mode = "RGB"
            note = _mode_note(mode)
            if note:
                gr.Warning(f"{name}: {note}")
        return array

    def _explain(self, images, **options):
        try:
            return explain(images, bundle=self.bundle, **options)
        except XcytoError as error:
            raise _error(str(error), "Cannot explain this image") from None

    # Images leave as PNG files written here (fast compression; training-cell thumbnails once
    # per cell), not as arrays: Gradio would encode each array itself at PNG's default level,
    # about 10 ms per thumbnail, the largest part of what the app added to a request.
    def _request_folder(self) -> Path:
        """A fresh folder for one response's files. Folders older than ``KEEP_SECONDS`` go
        (and the oldest beyond ``KEEP_RESPONSES``), so downloads stay valid for an hour."""
        folder = self.output_dir / uuid.uuid4().hex
        folder.mkdir(parents=True)
        now = time.monotonic()
        expired = []
        with self._files_lock:
            self._recent.append((now, folder))
            while len(self._recent) > KEEP_RESPONSES or now - self._recent[0][0] > KEEP_SECONDS:
                expired.append(self._recent.popleft()[1])
        for old in expired:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def _files(self, items: list[tuple], folder: Path) -> list[tuple[str, str]]:
        return [(_png(image, folder / f"{index}.png"), caption) for index, (image, caption) in enumerate(items)]

    def _neighbour_files(self, neighbours: list, items: list[tuple]) -> list[tuple[str, str]]:
        out = []
        for neighbour, (thumbnail, caption) in zip(neighbours, items):
            key = str(neighbour.cell_id)
            path = self._thumbnails.get(key)
            if path is None:
                name = hashlib.sha1(key.encode()).hexdigest()[:16]
                path = _png(thumbnail, self.output_dir / "thumbnails" / f"{name}.png")
                self._thumbnails[key] = path
            out.append((path, caption))
        return out


def _png(image: np.ndarray, path: Path) -> str:
    """Write a PNG (fast compression) under a temporary name, then rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{uuid.uuid4().hex}.png")
    Image.fromarray(np.ascontiguousarray(image)).save(temporary, format="PNG", compress_level=1)
    os.replace(temporary, path)
    return str(path)


def _stem(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(source)).stem)[:60] or "cell"


def _example_caption(path: Path) -> str:
    """``Koilocytotic-2.png`` -> ``Koilocytotic`` (the example's true class, by the file naming)."""
    return re.sub(r"[-_ ]?\d+$", "", path.stem) or path.stem


def _payload_path(item) -> tuple[str, str]:
    """``(path on the server, name to show)`` of a Gradio file payload or a plain path."""
    if isinstance(item, dict):
        path = item.get("path")
        name = item.get("orig_name") or Path(str(path)).name
    else:
        path = getattr(item, "path", None) or str(item)
        name = getattr(item, "orig_name", None) or Path(str(path)).name
    if not path:
        raise _error("The upload has no file.")
    return str(path), str(name)


def _error(message: str, title: str = "Error"):
    """A message for the page (Gradio renders it as HTML) and for API clients; no traceback in the log."""
    return gr.Error(html.escape(message, quote=False), title=title, print_exception=False)


def _mode_note(mode: str) -> str | None:
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return "transparent pixels were composited over white (brightfield background)."
    if mode in ("L", "1", "I", "I;16", "I;16B", "I;16L", "F"):
        return ("a grayscale image: its channel was copied to red, green and blue. The model was trained on colour "
                "(Papanicolaou-stained) cells, so its answer may be unreliable.")
    return None


# -- the page ------------------------------------------------------------------------------------
#: Output names of ``/explain``, in order (the last two are session state, not returned to API clients).
CELL_OUTPUTS = ("verdict", "probabilities", "heatmaps", "neighbours", "nearest_other_classes", "map",
                "cell_info", "json_file", "details", "heatmap_state", "explanation")


def theme():
    # System fonts only: the page must not wait for (or fail on) web fonts when offline.
    return gr.themes.Default(primary_hue="blue", neutral_hue="slate",
                             font=["system-ui", "-apple-system", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                             font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])


def build(demos):
    """The Gradio Blocks (not launched) of one :class:`Demo`, or of several (``{label: Demo}``,
    the first shown first) between which a "Model" menu switches. Every event names the model
    it is for, so two visitors on two models never meet."""
    demos = demos if isinstance(demos, dict) else {demos.bundle.name: demos}
    labels = list(demos)
    first = demos[labels[0]]
    widest = max(len(demo.bundle.classes) for demo in demos.values())
    # delete_cache: Gradio's copies of uploads older than an hour go, checked hourly.
    with gr.Blocks(title="xcyto demo", analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        gr.Markdown("# xcyto: why the classifier says what it says about a Pap smear cell")
        model = gr.Dropdown(labels, value=labels[0], label="Model", visible=len(labels) > 1, elem_id="model",
                            interactive=True)
        banner = gr.HTML(views.synthetic_banner(first.bundle), elem_id="banner")
        info = gr.Markdown(views.bundle_markdown(first.bundle, None if first.gallery is None else len(first.gallery)),
                           elem_id="bundle-info")
        with gr.Tab("One cell"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=300):
                    image = gr.Image(label="Cell image (a single-cell crop)", type="filepath",
                                     sources=["upload", "clipboard"], height=240, elem_id="cell-image")
                    examples = gr.Gallery(_example_items(first), label="Example cells (not used in training): click one",
                                          columns=5, fit_columns=False, allow_preview=False, object_fit="contain",
                                          elem_id="examples", elem_classes=["xc-gallery"],
                                          visible=any(demo.examples for demo in demos.values()))
                with gr.Column(scale=1, min_width=300):
                    verdict = gr.HTML(label="Prediction", elem_id="verdict")
                    probabilities = gr.Label(label="Probabilities", num_top_classes=widest,
                                             show_heading=False, elem_id="probabilities")
            heatmaps = gr.Gallery(label="Heatmaps (bright = evidence for the explained class)",
                                  columns=6, fit_columns=False, object_fit="contain", format="png",
                                  allow_preview=True, elem_id="heatmaps", elem_classes=["xc-gallery"])
            with gr.Row(equal_height=True):
                methods = gr.CheckboxGroup(views.method_choices(first.methods, first.slow_methods),
                                           value=first.default_methods, label="Methods", scale=4)
                with gr.Column(scale=1, min_width=200):
                    target = gr.Dropdown([PREDICTED] + first.bundle.classes, value=PREDICTED, label="Explain the class")
                    opacity = gr.Slider(0.0, 1.0, value=OVERLAY_OPACITY, step=0.05, label="Heatmap opacity")
            neighbours = gr.Gallery(label="Nearest training cells (class and cosine similarity in the model's embedding)", columns=8, fit_columns=False, object_fit="contain",
                                    format="png", elem_id="neighbours", elem_classes=["xc-gallery"])
            with gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    nearest = gr.Gallery(label="Closest training cell of each other class", columns=4,
                                         fit_columns=False, object_fit="contain", format="png", elem_id="nearest",
                                         elem_classes=["xc-gallery"])
                    cell_info = gr.Markdown(label="About the predicted class", elem_id="cell-info")
                    with gr.Row():
                        json_file = gr.File(label="Explanation JSON", interactive=False, min_width=160)
                        figure_file = gr.File(label="Explanation figure", interactive=False, min_width=160)
                with gr.Column(scale=1):
                    embedding_map = gr.Image(label="Training map", format="png",
                                             show_label=False, interactive=False, elem_id="embedding-map",
                                             buttons=["download", "fullscreen"])
            with gr.Accordion("Explanation as JSON", open=False):
                details = gr.JSON(label="Explanation details", show_label=False)
            heatmap_state = gr.State()
            explanation_state = gr.State()

            cell_outputs = [verdict, probabilities, heatmaps, neighbours, nearest, embedding_map, cell_info,
                            json_file, details, heatmap_state, explanation_state]

            def explain_cell(image, methods, target, opacity, label=labels[0]):
                return demos[label].explain_cell(image, methods, target, opacity)

            def figure(explanation, label=labels[0]):
                return demos[label].figure(explanation)

            def reblend(state, opacity, label=labels[0]):
                return demos[label].reblend(state, opacity)

            def pick_example(label, selected: gr.SelectData):
                return demos[label].pick_example(selected)

            event = gr.on([image.change, methods.change, target.change], explain_cell,
                          inputs=[image, methods, target, opacity, model], outputs=cell_outputs, api_name="explain",
                          preprocess=False, trigger_mode="always_last", concurrency_id=MODEL_QUEUE)
            event.success(figure, inputs=[explanation_state, model], outputs=[figure_file], api_name="figure",
                          show_progress="hidden")
            examples.select(pick_example, inputs=[model], outputs=[image], api_visibility="private",
                            show_progress="hidden")
            opacity.release(reblend, inputs=[heatmap_state, opacity, model], outputs=[heatmaps], api_name="opacity",
                            show_progress="hidden", trigger_mode="always_last")

        with gr.Tab("Several cells"):
            gr.Markdown("Classify several single-cell images at once (one batched `xcyto.explain` call with "
                        f"Grad-CAM, up to {MAX_BATCH} images). Files that cannot be read are listed with the reason.")
            files = gr.File(label="Cell images", file_count="multiple", file_types=["image"], elem_id="batch-files")
            run_batch = gr.Button("Classify", variant="primary")
            table = gr.HTML(label="Batch table", elem_id="batch-table")
            with gr.Accordion("Every probability, as a table to copy", open=False):
                frame = gr.Dataframe(label="Predictions", interactive=False, wrap=False)

            def batch(files, label=labels[0]):
                return demos[label].batch(files)

            run_batch.click(batch, inputs=[files, model], outputs=[table, frame], api_name="batch", preprocess=False,
                            concurrency_id=MODEL_QUEUE)

        with gr.Tab("About"):
            about = gr.Markdown(_about(first), elem_id="about")
        gr.Markdown(f"<div class='xc-footer'>{DISCLAIMER}</div>")

        def switch(label):
            """Another model: its description, examples and classes; the last answer is cleared."""
            demo = demos[label]
            size = None if demo.gallery is None else len(demo.gallery)
            return (views.synthetic_banner(demo.bundle), views.bundle_markdown(demo.bundle, size),
                    gr.Gallery(value=_example_items(demo)),
                    gr.Dropdown(choices=[PREDICTED] + demo.bundle.classes, value=PREDICTED), _about(demo),
                    None, *first.empty_outputs())

        model.change(switch, inputs=[model], outputs=[banner, info, examples, target, about, image, *cell_outputs],
                     api_visibility="private", show_progress="hidden")
    return blocks


def _example_items(demo: Demo) -> list[tuple[str, str]]:
    return [(str(path), _example_caption(path)) for path in demo.examples]


def _about(demo: Demo) -> str:
    bundle = demo.bundle
    methods = ", ".join(f"`{m}` ({views.method_title(m)})" for m in demo.methods)
    return f"""
### What the page shows
- **Prediction**: the class with the highest probability. Calibration: {bundle.calibration.describe()}.
- **Heatmaps**: each method's map of the evidence for the explained class, scaled per map to its 99th percentile
  (`max(raw, 0) / p99(|raw|)`), over the cell as the model saw it (padded to a square, {bundle.input_size} px).
  Bright = more evidence. Methods in the registry: {methods}.
- **Nearest training cells**: the training cells closest to this one in the model's embedding, with their true
  class. If they disagree with the prediction, be wary of it.
- **Atypicality**: how far the cell lies from the training cells (percentile among the training cells' own
  distances); above the 99th percentile the cell is flagged as unlike anything the model was trained on.
- **Map**: the cell placed on a 2-D map (UMAP, or PCA while the UMAP map is fitted) of the training cells.

{_concepts_section(bundle)}
### The API
Every panel comes from a named endpoint: `/explain` (one image), `/figure`, `/opacity`, `/batch`.
See "Use via API" at the bottom of the page, or the README, for a `gradio_client` example.
"""


def _concepts_section(bundle) -> str:
    """The model's concept table (``xcyto concepts``), when the bundle keeps one."""
    from xcyto.morphology import load_report

    report = None if bundle.path is None else load_report(bundle.path / "concepts.json")
    if report is None:
        return ("### Which cell features drive the model\nNot measured for this bundle yet: run "
                "`xcyto concepts --bundle BUNDLE --data DATA --out DIR`.\n")
    return (f"### Which cell features drive the model\nTCAV on {report.settings.get('cells', '?')} "
            f"{report.settings.get('data', 'training cells')} (layer `{report.settings.get('layer')}`).\n\n"
            + report.to_markdown())


# -- launching -----------------------------------------------------------------------------------
def launch(demo, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT, share: bool = False,
           max_file_size: str = MAX_FILE_SIZE, block: bool = False, quiet: bool = False):
    """Build and launch ``demo`` (a :class:`Demo`, or ``{label: Demo}`` for a choice of models);
    returns the Blocks (``block=False``: the server runs in a thread)."""
    blocks = build(demo)
    demos = list(demo.values()) if isinstance(demo, dict) else [demo]
    blocks.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    allowed = sorted({str(p.parent.resolve()) for each in demos for p in each.examples})
    blocks.launch(server_name=host, server_port=port, share=bool(share), max_file_size=max_file_size,
                  allowed_paths=allowed, prevent_thread_lock=True, quiet=True, show_error=True,
                  ssr_mode=False, theme=theme(), css=CSS, footer_links=["api", "settings"])
    if not quiet:
        served = ", ".join(f"{each.bundle.name} ({each.bundle.architecture}, sha256 {(each.bundle.sha256 or '?')[:12]})"
                           for each in demos)
        print(f"xcyto demo of {served} on {blocks.local_url}" + (f" and {blocks.share_url}" if blocks.share_url else "")
              + ("; Ctrl+C stops it" if block else ""), flush=True)
    if block:
        blocks.block_thread()
    return blocks


__all__ = ["CELL_OUTPUTS", "Demo", "build", "example_files", "launch"]
